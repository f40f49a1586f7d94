"""The operator console through TestClient: sign-in, pages over a played loop, filters, requeue.

The console is wired here the way the lead wires it in app.py / auth.py (a no-op once it is)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fhir_gateway.api.console import SESSION_COOKIE
from fhir_gateway.store.tables import OutboxRow, ResourceRow
from tests.conftest import authorize, make_client
from tests.wor import FHIR_JSON, load_directory, referral_bundle, task_for

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
PATCH = {"content-type": "application/json-patch+json"}
PASSWORD = "correct horse battery staple"


def scenario(name: str, **placeholders: str) -> Any:
    text = (SCENARIOS / name).read_text(encoding="utf-8")
    for key, value in placeholders.items():
        text = text.replace(f"<{key}>", value)
    return orjson.loads(text)


def patch(client: TestClient, task: dict[str, Any], name: str, **placeholders: str) -> dict[str, Any]:
    resp = client.patch(
        f"/fhir/Task/{task['id']}",
        json=scenario(name, **placeholders),
        headers={**PATCH, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def refer(client: TestClient, days_ago: int, **patient: str) -> tuple[dict[str, Any], dict[str, Any]]:
    authorize(client, "praktijk-de-geinoord-his")
    bundle = referral_bundle(**patient)
    authored = datetime.now(UTC) - timedelta(days=days_ago)
    bundle["entry"][2]["resource"]["authoredOn"] = authored.isoformat(timespec="seconds")
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]
    authorize(client, "gateway-admin")
    return sr, task_for(client, sr["id"])


@pytest.fixture
def played(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """On each backend: three referrals — a closed loop (30 days old), an open one (2 days), one in
    IJsselstein — plus a refused (unroutable) FHIR referral and a refused v2 one."""
    with make_client(database_url, console_password=PASSWORD) as client:
        load_directory(client)
        authorize(client, "praktijk-de-geinoord-his")  # first: its Patient must not exist yet
        assert (
            client.post("/fhir", json=scenario("07-unroutable-address.json"), headers=FHIR_JSON).status_code
            == 422
        )
        v2 = (ROOT / "examples" / "v2" / "ref-i12-postcode-not-covered.hl7").read_bytes()
        authorize(client, "praktijk-batau-his")  # MSH-4 01053417: the v2 sender is the token's client
        ack = client.post("/v2", content=v2, headers={"content-type": "x-application/hl7-v2+er7"})
        assert "MSA|AE" in ack.text
        authorize(client, "praktijk-de-geinoord-his")
        sr, task = refer(client, 30)
        authorize(client, "welzijn-de-brug-cms")
        task = patch(client, task, "02-accept.patch.json")
        task = patch(client, task, "03-intake-held.patch.json")
        patient_id = sr["subject"]["reference"].split("/")[1]
        ids = {}
        for key, name in (
            ("intake-id", "04a-positive-health-intake.json"),
            ("closure-id", "04b-positive-health-closure.json"),
        ):
            resp = client.post(
                "/fhir/QuestionnaireResponse",
                json=scenario(name, **{"patient-id": patient_id}),
                headers=FHIR_JSON,
            )
            assert resp.status_code == 201, resp.text
            ids[key] = resp.json()["id"]
        task = patch(client, task, "04c-complete.patch.json", **ids)
        _, open_task = refer(client, 2, bsn="999999151")
        _, ijs_task = refer(client, 5, bsn="999990019", postcode="3401 AB")
        client.headers.pop("Authorization")
        yield client, {"closed": task, "open": open_task, "ijsselstein": ijs_task, "patient": patient_id}


def login(client: TestClient) -> None:
    token = admin_token(client)
    resp = client.post(
        "/console/login",
        content=f"token={token}&next=/console/referrals",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/console/referrals"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie


def admin_token(client: TestClient, client_id: str = "gateway-admin") -> str:
    app: Any = client.app
    from fhir_gateway.security.clients import get_client

    registration = get_client(app.state.ctx.database, client_id)
    return app.state.tokens.issue(registration, registration.scopes).access_token


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def bsns(client: TestClient) -> set[str]:
    app: Any = client.app
    with app.state.ctx.database.connection(write=False) as conn:
        patients = conn.execute(
            sa.select(ResourceRow.content).where(ResourceRow.resource_type == "Patient")
        ).scalars()
        return {i["value"] for p in patients for i in p.get("identifier", []) if "bsn" in i.get("system", "")}


def test_console_needs_a_session(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_client(sqlite_url, client_id=None) as client:
        resp = client.get("/console/referrals?state=closed", follow_redirects=False)
        assert resp.status_code == 303
        assert resp.headers["location"] == "/console/login?next=%2Fconsole%2Freferrals%3Fstate%3Dclosed"
        for path in ("/console/stuck", "/console/reports", "/console"):
            assert client.get(path, follow_redirects=False).status_code == 303
        assert client.post("/console/outbox/x/requeue", content="csrf=x").status_code == 401
        page = client.get("/console/login")
        assert page.status_code == 200 and 'name="token"' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        # the rest of the gateway still wants a bearer token
        assert client.get("/fhir/Task").status_code == 401


def test_sign_in_refusals_and_session_is_not_a_bearer_token(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(sqlite_url, client_id=None, console_password=PASSWORD) as client:
        form = {"content-type": "application/x-www-form-urlencoded"}
        gp = admin_token(client, "praktijk-de-geinoord-his")
        assert client.post("/console/login", content=f"token={gp}", headers=form).status_code == 401
        assert client.post("/console/login", content="token=not.a.jwt", headers=form).status_code == 401
        assert client.post("/console/login", content="password=wrong", headers=form).status_code == 401
        evil = {**form, "origin": "https://evil.example"}
        assert client.post("/console/login", content=f"password={PASSWORD}", headers=evil).status_code == 403
        resp = client.post(
            "/console/login",
            content=f"password={PASSWORD.replace(' ', '+')}&next=https://evil.example/",
            headers=form,
            follow_redirects=False,
        )
        assert resp.status_code == 303 and resp.headers["location"] == "/console/referrals"
        session = client.cookies.get(SESSION_COOKIE)
        assert session and client.get("/console/referrals").status_code == 200
        # a console session is no access token, and an access token is no console session
        assert client.get("/fhir/Task", headers={"Authorization": f"Bearer {session}"}).status_code == 401
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, admin_token(client), path="/console")
        assert client.get("/console/referrals", follow_redirects=False).status_code == 303


def test_pages_show_the_loop_without_bsn(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    login(client)
    page = client.get("/console/referrals")
    assert page.status_code == 200
    html = page.text
    assert "3 verwijzing(en)" in html
    closed = ids["closed"]["id"]
    row = html[html.index(f'data-task="{closed}"') :].split("</tr>")[0]
    assert 'data-stage="closed"' in row
    for stage in (
        "ontvangen",
        "gerouteerd",
        "geaccepteerd",
        "intake",
        "activiteit",
        "afgesloten (afgerond)",
    ):
        assert stage in row
    assert row.count('class="done"') == 6
    assert re.search(r'class="done" title="\d{1,2} [a-z]{3} 20\d\d \d\d:\d\d"', row)  # people's time
    # feedback kinds in Dutch
    assert "geaccepteerd" in row and "intake gehouden" in row and "afgerond" in row
    assert "wacht op bezorging" in row  # De Geinoord wants a push; no worker in this test
    assert "Anna Jansen" in html  # names for admins …
    pages = [
        html,
        client.get("/console/stuck").text,
        client.get(
            "/console/reports", params={"municipality": "Nieuwegein", "period": str(datetime.now(UTC).year)}
        ).text,
    ]
    for text in pages:  # … but never a BSN
        for bsn in bsns(client):
            assert bsn not in text
    assert "<svg" in pages[2] and "Verwijzingen" in pages[2]


def test_patient_data_is_escaped_on_every_page(played: tuple[TestClient, dict[str, Any]]) -> None:
    """Stored XSS: a name sent by a practice is text in the console, never markup."""
    client, _ = played
    authorize(client, "praktijk-de-geinoord-his")
    bundle = referral_bundle(bsn="999990020")
    bundle["entry"][0]["resource"]["name"] = [{"family": "<script>alert(1)</script>", "given": ['"><b>x']}]
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    client.headers.pop("Authorization")
    login(client)
    html = client.get("/console/referrals").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&gt;&lt;b&gt;x" in html
    assert "<script" not in html and '"><b>' not in html


def test_filters(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    login(client)

    def tasks(**params: object) -> set[str]:
        html = client.get("/console/referrals", params=params).text
        return {part.split('"')[0] for part in html.split('data-task="')[1:]}

    everything = {ids["closed"]["id"], ids["open"]["id"], ids["ijsselstein"]["id"]}
    assert tasks() == everything
    assert tasks(state="closed") == {ids["closed"]["id"]}
    assert tasks(state="routed") == {ids["open"]["id"], ids["ijsselstein"]["id"]}
    assert tasks(welfare="welzijn-ijsselstein-samen") == {ids["ijsselstein"]["id"]}
    assert tasks(municipality="Nieuwegein") == {ids["closed"]["id"], ids["open"]["id"]}
    assert tasks(municipality="Houten") == set()
    assert tasks(practice="praktijk-de-geinoord") == everything
    assert tasks(practice="praktijk-batau") == set()
    assert tasks(min_age=10) == {ids["closed"]["id"]}
    assert tasks(max_age=10) == {ids["open"]["id"], ids["ijsselstein"]["id"]}
    assert tasks(min_age=3, max_age=10) == {ids["ijsselstein"]["id"]}
    first = client.get("/console/referrals", params={"per_page": 2}).text
    assert "pagina 1 van 2" in first and 'rel="next"' in first
    second = tasks(per_page=2, page=2)
    assert len(second) == 1 and second < everything


def test_stuck_items_and_requeue(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    login(client)
    app: Any = client.app
    with app.state.ctx.database.connection(write=True) as conn:
        event_id = conn.execute(sa.select(OutboxRow.event_id).order_by(OutboxRow.pk).limit(1)).scalar_one()
        conn.execute(
            sa.update(OutboxRow)
            .where(OutboxRow.event_id == event_id)
            .values(status="dead", last_error="boom")
        )
    real = app.state.ctx.clock
    app.state.ctx.clock = lambda: real() + timedelta(days=40)  # past both open Tasks' intake window
    try:
        html = client.get("/console/stuck").text
    finally:
        app.state.ctx.clock = real
    assert "Intake over tijd (2)" in html
    assert ids["open"]["id"] in html and ids["ijsselstein"]["id"] in html
    assert "Geweigerde verwijzingen (2)" in html and "HL7 v2" in html and "praktijk-de-geinoord-his" in html
    assert f'data-event="{event_id}"' in html
    # no CSRF value: refused, row stays dead
    assert client.post(f"/console/outbox/{event_id}/requeue", data={}).status_code == 403
    resp = client.post(
        f"/console/outbox/{event_id}/requeue",
        content=f"csrf={csrf_of(html)}",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/console/stuck?done=requeued"
    with app.state.ctx.database.connection(write=False) as conn:
        row = conn.execute(
            sa.select(OutboxRow.status, OutboxRow.attempts).where(OutboxRow.event_id == event_id)
        ).one()
    assert tuple(row) == ("pending", 0)
    again = client.get("/console/stuck?done=requeued").text
    assert "weer in de wachtrij" in again and f'data-event="{event_id}"' not in again


def test_referral_page_view_is_audited(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    login(client)
    client.get("/console/referrals")
    authorize(client, "gateway-admin")
    events = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{ids['patient']}"}).json()["entry"]
    assert any(e["resource"]["agent"][0]["name"] == "console:gateway-admin" for e in events)


def test_report_charts_draw_bars_and_suppressed_stubs() -> None:
    from fhir_gateway.api.console.charts import report_charts
    from fhir_gateway.vocabulary import DATA_ABSENT_REASON as DATA_ABSENT

    masked = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}
    report = {
        "resourceType": "MeasureReport",
        "group": [
            {
                "code": {"text": "Verwijzingen <b>"},
                "population": [{"code": {"coding": [{"code": "initial-population"}]}, "count": 12}],
                "stratifier": [
                    {
                        "code": [{"text": "dimension"}],
                        "stratum": [
                            {"value": {"text": "Zingeving"}, "measureScore": {"value": 2.0}},
                            {"value": {"text": "Meedoen"}, "measureScore": {"value": -1.5}},
                            {"value": {"text": "Mentaal"}, "measureScore": masked},
                        ],
                    }
                ],
            }
        ],
    }
    svg = report_charts(report)
    assert svg.count('fill="#2f6f8f"') == 2  # the overview count and the positive score
    assert svg.count('fill="#b5523b"') == 1  # the negative score, left of the zero line
    assert "stroke-dasharray" in svg and "onderdrukt (&lt;5)" in svg
    assert "<b>" not in svg and "Verwijzingen &lt;b&gt;" in svg  # labels are escaped


# -- sign-in throttling (pen test: 1,000 guesses at 320/s went through) -----------------------------------
FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    """The gateway's injectable clock (`ctx.clock`), moved by hand instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sign_in_events(client: TestClient) -> list[dict[str, Any]]:
    app: Any = client.app
    with app.state.ctx.database.connection(write=False) as conn:
        events = conn.execute(
            sa.select(ResourceRow.content)
            .where(ResourceRow.resource_type == "AuditEvent")
            .order_by(ResourceRow.pk)
        ).scalars()
        return [e for e in events if e.get("subtype", [{}])[0].get("code") == "110122"]


def from_address(client: TestClient, address: str) -> TestClient:
    return TestClient(client.app, base_url="http://gateway.test", client=(address, 50000))


def password_attempt(client: TestClient, password: str) -> Any:
    return client.post(
        "/console/login",
        content=f"password={password.replace(' ', '+')}",
        headers=FORM,
        follow_redirects=False,
    )


def test_password_guessing_is_throttled_per_account_and_address(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_gateway.api.console import session as sessions

    checked: list[str] = []
    real_check = sessions.check_password

    def counting_check(given: str, configured: str) -> bool:
        checked.append(given)
        return real_check(given, configured)

    monkeypatch.setattr(sessions, "check_password", counting_check)
    with make_client(sqlite_url, client_id=None, console_password=PASSWORD) as client:
        clock = Clock()
        client.app.state.ctx.clock = clock  # type: ignore[attr-defined]
        attacker = from_address(client, "203.0.113.7")
        statuses = [password_attempt(attacker, f"guess-{i:04d}").status_code for i in range(1000)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429] * 995, "the lock holds while the clock stands still"
        assert len(checked) == 5, "a held-back attempt must not reach the password check"

        held = password_attempt(attacker, PASSWORD)  # even the right password waits its turn there
        assert held.status_code == 429 and len(checked) == 5
        assert held.headers["retry-after"] == "1"
        assert held.headers["content-type"].startswith("text/html")
        assert "Te veel mislukte inlogpogingen" in held.text and "1 seconde" in held.text
        assert SESSION_COOKIE not in held.headers.get("set-cookie", "")

        operator = from_address(client, "198.51.100.20")  # the operator at another address
        ok = password_attempt(operator, PASSWORD)
        assert ok.status_code == 303 and SESSION_COOKIE in ok.headers["set-cookie"]

        clock.advance(1.5)  # the first lock (1 s) is over: the next failure doubles it
        assert password_attempt(attacker, "guess-again").status_code == 401
        again = password_attempt(attacker, PASSWORD)
        assert again.status_code == 429 and again.headers["retry-after"] == "2"
        clock.advance(2.5)
        assert password_attempt(attacker, PASSWORD).status_code == 303  # works again after the lock
        assert password_attempt(attacker, "one-slip").status_code == 401  # the success reset the count

        metrics = client.get("/metrics").text
        assert 'gateway_http_throttled_total{kind="console"} 997.0' in metrics


def test_every_sign_in_attempt_is_an_audit_event_without_the_password(sqlite_url: str) -> None:
    with make_client(sqlite_url, client_id=None, console_password=PASSWORD) as client:
        client.app.state.ctx.clock = Clock()  # type: ignore[attr-defined]
        attacker = from_address(client, "203.0.113.8")
        for i in range(7):
            password_attempt(attacker, f"secret-guess-{i}")
        assert password_attempt(from_address(client, "198.51.100.21"), PASSWORD).status_code == 303
        events = sign_in_events(client)
        assert len(events) == 8
        outcomes = [(e["outcome"], e["agent"][0]["network"]["address"]) for e in events]
        assert outcomes == [("4", "203.0.113.8")] * 7 + [("0", "198.51.100.21")]
        assert [e["outcomeDesc"].split(":")[0] for e in events[4:6]] == ["refused", "refused unchecked"]
        assert all(e["agent"][0]["who"]["identifier"]["value"] == "console-password" for e in events)
        assert events[-1]["type"]["code"] == "110114" and events[-1]["outcomeDesc"] == "signed in"
        text = orjson.dumps(events).decode()
        assert PASSWORD not in text and "secret-guess" not in text
        # an admin can find them through the FHIR API like any other AuditEvent
        authorize(client, "gateway-admin")
        found = client.get("/fhir/AuditEvent", params={"outcome": "4", "_count": 50}).json()
        assert (
            sum(
                1
                for e in found.get("entry", [])
                if e["resource"].get("subtype", [{}])[0].get("code") == "110122"
            )
            == 7
        )


def test_forged_admin_tokens_are_throttled_under_the_claimed_client(sqlite_url: str) -> None:
    from fhir_gateway.security.clients import get_client
    from fhir_gateway.security.tokens import GatewayKeys, TokenService, generate_gateway_key

    with make_client(sqlite_url, client_id=None) as client:  # no password: token sign-in only
        client.app.state.ctx.clock = Clock()  # type: ignore[attr-defined]
        app: Any = client.app
        admin = get_client(app.state.ctx.database, "gateway-admin")
        keys = GatewayKeys.from_document(
            orjson.dumps(generate_gateway_key().as_dict(private=True)).decode(), "x"
        )
        forged = TokenService(keys, app.state.tokens.issuer).issue(admin, admin.scopes).access_token
        attacker = from_address(client, "203.0.113.9")

        def token_attempt(c: TestClient, token: str) -> int:
            resp = c.post("/console/login", content=f"token={token}", headers=FORM, follow_redirects=False)
            return resp.status_code

        assert [token_attempt(attacker, forged) for _ in range(8)] == [401] * 5 + [429] * 3
        assert token_attempt(attacker, admin_token(client)) == 429  # that account, from there: locked
        assert token_attempt(from_address(client, "198.51.100.22"), admin_token(client)) == 303
        claimed = {e["agent"][0]["name"] for e in sign_in_events(client) if e["outcome"] == "4"}
        assert claimed == {"gateway-admin (claimed)"}


def test_an_address_cycling_accounts_is_held_back_too(sqlite_url: str) -> None:
    """Garbage tokens claim a new client each time, so no account+address key fills up; the
    address key (10 failures, all accounts) stops them, password included."""
    with make_client(sqlite_url, client_id=None, console_password=PASSWORD) as client:
        client.app.state.ctx.clock = Clock()  # type: ignore[attr-defined]
        attacker = from_address(client, "203.0.113.10")
        statuses = []
        for i in range(12):
            payload = base64.urlsafe_b64encode(orjson.dumps({"client_id": f"c{i}"})).decode().rstrip("=")
            resp = attacker.post("/console/login", content=f"token=x.{payload}.y", headers=FORM)
            statuses.append(resp.status_code)
        assert statuses == [401] * 10 + [429] * 2
        assert password_attempt(attacker, PASSWORD).status_code == 429


def test_sign_in_failures_are_shared_by_replicas(sqlite_url: str) -> None:
    """Two gateway processes on one database: failures counted by one lock the other."""
    with (
        make_client(sqlite_url, client_id=None, console_password=PASSWORD) as one,
        make_client(sqlite_url, client_id=None, console_password=PASSWORD) as two,
    ):
        clock = Clock()
        one.app.state.ctx.clock = clock  # type: ignore[attr-defined]
        two.app.state.ctx.clock = clock  # type: ignore[attr-defined]
        assert [
            password_attempt(from_address(one, "203.0.113.11"), "nope").status_code for _ in range(5)
        ] == [401] * 5
        assert password_attempt(from_address(two, "203.0.113.11"), PASSWORD).status_code == 429
        clock.advance(1.1)
        assert password_attempt(from_address(two, "203.0.113.11"), PASSWORD).status_code == 303


def test_lock_doubles_from_one_second_to_fifteen_minutes() -> None:
    from fhir_gateway.security.login_throttle import ACCOUNT_FREE, lock_seconds

    assert [lock_seconds(n, ACCOUNT_FREE) for n in range(1, 10)] == [0, 0, 0, 0, 1, 2, 4, 8, 16]
    assert lock_seconds(15, ACCOUNT_FREE) == 900 and lock_seconds(10_000, ACCOUNT_FREE) == 900


def test_password_check_hashes_before_comparing() -> None:
    from fhir_gateway.api.console.session import check_password

    assert check_password(PASSWORD, PASSWORD)
    assert not check_password(PASSWORD + "x", PASSWORD)
    assert not check_password(PASSWORD[:-1], PASSWORD)
    assert not check_password("", PASSWORD)
    assert not check_password("short", "short")  # too short to be a console password


def rows_of(html: str, marker: str) -> list[str]:
    return [part.split("</tr>")[0] for part in html.split(marker)[1:]]


def test_refusals_show_their_reason(played: tuple[TestClient, dict[str, Any]]) -> None:
    """The 422 of an unroutable address and the AE of a v2 referral say why, in the console."""
    client, _ = played
    login(client)
    html = client.get("/console/stuck").text
    section = html[html.index('id="refused"') :]
    rows = {r.split("</td><td>")[1]: r.split('class="reason">')[1] for r in rows_of(section, "<tr><td>")}
    assert set(rows) == {"FHIR", "HL7 v2"}
    assert "business-rule" in rows["FHIR"] and "postcode area 9999" in rows["FHIR"]  # OperationOutcome
    assert "postcode area 1012" in rows["HL7 v2"]  # the ACK's ERR segment
    for bsn in bsns(client):
        assert bsn not in html


def test_referral_page_shows_the_whole_loop(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    login(client)
    closed = ids["closed"]
    sr_id = closed["focus"]["reference"].split("/")[1]
    listing = client.get("/console/referrals").text
    assert f'href="/console/referrals/{sr_id}"' in listing
    html = client.get(f"/console/referrals/{sr_id}").text
    for part in ("service-request", "task-history", "careplan", "communications", "v2-messages", "audit"):
        assert f'id="{part}"' in html, part
    versions = rows_of(html, "<tr data-version=")
    assert len(versions) == int(closed["meta"]["versionId"]) >= 4
    assert "welzijn-de-brug-cms (Organization/welzijn-de-brug)" in html  # who wrote a version
    assert "aangevraagd" in versions[0] and "afgerond" in versions[-1]
    assert html.count("<tr data-communication=") >= 3
    assert "wacht op bezorging" in html
    assert "welzijn-de-brug-cms" in html.split('id="audit"')[1]  # the AuditEvents of this referral
    again = client.get(f"/console/referrals/{sr_id}").text  # the first view is audited, so listed now
    assert "console:gateway-admin" in again.split('id="audit"')[1]
    for bsn in bsns(client):
        assert bsn not in html
    # every console page links inside the console only
    for page in (listing, html, client.get("/console/stuck").text, client.get("/console/search").text):
        assert 'href="/fhir' not in page and "http://gateway.test/fhir" not in page
    assert client.get("/console/referrals/does-not-exist").status_code == 404


def test_times_are_amsterdam_time_for_people() -> None:
    from fhir_gateway.api.console.templating import iso, moment

    assert moment("2026-12-04T09:30:00+01:00") == "4 dec 2026 09:30"
    assert moment("2026-12-04T08:30:00.123456Z") == "4 dec 2026 09:30"  # no microseconds
    assert moment(datetime(2026, 7, 1, 7, 5, 9, 999)) == "1 jul 2026 09:05"  # naive = UTC; summer time
    assert moment("2026-12-08") == "8 dec 2026"
    assert iso("2026-12-04T08:30:00Z") == "2026-12-04T09:30:00+01:00"


def test_an_authored_on_at_0930_cet_shows_0930(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = played
    authorize(client, "praktijk-de-geinoord-his")
    bundle = referral_bundle(bsn="999990032")
    bundle["entry"][2]["resource"]["authoredOn"] = "2026-12-04T09:30:00+01:00"
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sr_id = resp.json()["entry"][2]["resource"]["id"]
    client.headers.pop("Authorization")
    login(client)
    html = client.get(f"/console/referrals/{sr_id}").text
    assert "4 dec 2026 09:30" in html and "08:30" not in html.split('id="task-history"')[0]
    assert "Europe/Amsterdam" in html


def test_every_code_shown_has_a_dutch_label(played: tuple[TestClient, dict[str, Any]]) -> None:
    from fhir_gateway.api.console.labels import LABELS
    from fhir_gateway.vocabulary import MILESTONE_ORDER, FeedbackKind

    task_statuses = ("requested", "received", "accepted", "rejected", "in-progress", "on-hold", "completed")
    for code in (*task_statuses, "cancelled", "failed", *MILESTONE_ORDER, "initial-population", "numerator"):
        assert LABELS.get(code, code) != code, code
    feedback = [v for k, v in vars(FeedbackKind).items() if k.isupper()]
    assert all(code in LABELS for code in feedback)
    client, _ = played
    login(client)
    html = client.get("/console/referrals").text
    assert ">aangevraagd<" in html and ">requested<" not in html


def test_search_by_referral_number_and_audited_bsn(played: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = played
    authorize(client, "gateway-admin")
    open_task = ids["open"]
    sr = client.get(f"/fhir/{open_task['focus']['reference']}").json()
    number = sr["identifier"][0]["value"]
    client.headers.pop("Authorization")
    login(client)
    html = client.get("/console/search", params={"number": number}).text
    hits = rows_of(html, "<tr data-referral=")
    assert len(hits) == 1 and f'href="/console/referrals/{sr["id"]}"' in hits[0]
    assert "Niets gevonden" in client.get("/console/search", params={"number": "REF-nope"}).text

    form = {"content-type": "application/x-www-form-urlencoded"}
    csrf = csrf_of(client.get("/console/search").text)
    assert client.post("/console/search", content="bsn=999999151", headers=form).status_code == 403  # no CSRF
    resp = client.post("/console/search", content=f"bsn=999999151&csrf={csrf}", headers=form)
    assert resp.status_code == 200
    assert f'href="/console/referrals/{sr["id"]}"' in resp.text and "999999151" not in resp.text
    resp = client.post("/console/search", content=f"bsn=123456782&csrf={csrf}", headers=form)
    assert "Niets gevonden" in resp.text
    assert "9 cijfers" in client.post("/console/search", content=f"bsn=12&csrf={csrf}", headers=form).text

    authorize(client, "gateway-admin")
    events = client.get("/fhir/AuditEvent", params={"_count": 500}).json()["entry"]
    searches = [
        e["resource"]
        for e in events
        if any(
            "console/search Patient?identifier" in x.get("description", "")
            for x in e["resource"].get("entity", [])
        )
    ]
    assert len(searches) == 2  # one per BSN search, also the one that found nobody
    assert all(s["agent"][0]["name"] == "console:gateway-admin" for s in searches)
    patient = sr["subject"]["reference"]
    assert any(x.get("what", {}).get("reference") == patient for s in searches for x in s.get("entity", []))
