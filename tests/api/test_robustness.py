"""Robustness findings of the penetration test: never a 500 for what a client sends, and never a
plain-text answer — a 4xx OperationOutcome naming the parameter, and for a real bug a 500
OperationOutcome from the outermost guard (`api/guard.py`) that says nothing of the internals.

Each test here failed on the code before the fix. Where the database is involved they run on
SQLite and PostgreSQL (`database_url`)."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fhir_gateway.fhir.searchparams import parse_date_range
from fhir_gateway.settings import Settings
from tests.conftest import make_client
from tests.e2e.conftest import free_port
from tests.wor import FHIR_JSON, patient

BSN = "999911120"  # a patient's BSN: must never reach the log
JSON_PATCH = {"content-type": "application/json-patch+json"}
FORM = "application/x-www-form-urlencoded"


def outcome_issue(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with an OperationOutcome whose first issue has `code`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/fhir+json"), resp.headers
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    assert first["severity"] == "error" and first["code"] == code, body
    return first


# -- the outermost guard ---------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _raise(*_args: object, **_kwargs: object) -> Any:
    raise Boom(f"patient {BSN} broke it")  # a message with patient data, as a driver error has


def _break_fhir_router(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.state.router, "handle", _raise)


def _break_bearer_middleware(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fhir_gateway.api.auth.authenticate_bearer", _raise)


async def _boom_route() -> None:
    _raise()


def _break_a_plain_route(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    app.add_api_route("/fhir-test-boom", _boom_route, methods=["GET"])


BREAKS: dict[str, tuple[Callable[[FastAPI, pytest.MonkeyPatch], None], str]] = {
    "fhir-handler": (_break_fhir_router, f"/fhir/Patient?identifier={BSN}"),
    "middleware": (_break_bearer_middleware, f"/fhir/Patient?identifier={BSN}"),
    "fastapi-route": (_break_a_plain_route, "/fhir-test-boom"),
}


def assert_guarded_500(resp: httpx.Response) -> None:
    from fhir_gateway.api.guard import INTERNAL_ERROR

    issue = outcome_issue(resp, 500, "exception")
    assert issue["diagnostics"] == INTERNAL_ERROR
    assert "Boom" not in resp.text and BSN not in resp.text and "Traceback" not in resp.text
    assert resp.headers.get("x-request-id")


def assert_logged_without_patient_data(records: list[logging.LogRecord]) -> None:
    guarded = [r for r in records if getattr(r, "event", None) == "unhandled-exception"]
    assert guarded, [r.getMessage() for r in records]
    for record in records:
        if not record.name.startswith(("fhir_gateway", "uvicorn")):
            continue  # the test's own HTTP client logs the URL it calls
        text = record.getMessage() + repr(getattr(record, "frames", "")) + repr(record.exc_info or "")
        assert BSN not in text, text
    assert "Boom" in guarded[0].getMessage() and getattr(guarded[0], "frames", None)


@pytest.mark.parametrize("where", list(BREAKS))
def test_an_unhandled_exception_is_a_500_operation_outcome_in_process(
    sqlite_url: str, where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sqlite_url) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        crash = TestClient(app, base_url="http://gateway.test", raise_server_exceptions=False)
        crash.headers.update(client.headers)
        breaker, path = BREAKS[where]
        breaker(app, monkeypatch)
        with caplog.at_level(logging.INFO):
            resp = crash.get(path)
        assert_guarded_500(resp)
        assert_logged_without_patient_data(caplog.records)


class ServerThread:
    """The app on a real uvicorn server in this process (so a test can break parts of it)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.e2e
def test_an_unhandled_exception_is_a_500_operation_outcome_over_real_http(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sqlite_url) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        headers = {"Authorization": client.headers["Authorization"]}
        for breaker, _path in BREAKS.values():
            breaker(app, monkeypatch)
        with ServerThread(app) as base, httpx.Client(base_url=base, headers=headers) as http:
            with caplog.at_level(logging.INFO):
                for _breaker, path in BREAKS.values():
                    assert_guarded_500(http.get(path))
                # the connection is kept: the next request on it is answered normally
                assert http.get("/healthz").status_code == 200
            assert_logged_without_patient_data(caplog.records)


def test_an_unhandled_exception_on_the_token_endpoint_stays_an_oauth_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token endpoint's clients expect RFC 6749 JSON, also from the guard."""
    with make_client(sqlite_url, client_id=None) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        monkeypatch.setattr("fhir_gateway.api.body_limit.BodyLimitMiddleware.limit_for", _raise)
        crash = TestClient(app, base_url="http://gateway.test", raise_server_exceptions=False)
        resp = crash.post("/auth/token", data={"grant_type": "client_credentials"})
        assert resp.status_code == 500, resp.text
        assert resp.json()["error"] == "server_error" and resp.headers["cache-control"] == "no-store"
        assert BSN not in resp.text


@pytest.fixture
def crash_client(database_url: str) -> Iterator[TestClient]:
    """A client on each backend whose server errors come back as responses, not exceptions."""
    with make_client(database_url) as client:
        crash = TestClient(client.app, base_url="http://gateway.test", raise_server_exceptions=False)
        crash.headers.update(client.headers)
        yield crash


@pytest.fixture
def patient_id(crash_client: TestClient) -> str:
    resp = crash_client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


# -- bytes the database refuses: 400 `value` naming the parameter -----------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("name=a%00b", "name"),  # string
        ("_id=a%00b", "_id"),
        ("identifier=sys%7Ca%00b", "identifier"),  # token
        ("general-practitioner=Practitioner/a%00b", "general-practitioner"),  # reference
        ("name:exact=a,b%00", "name:exact"),  # in an OR list, with a modifier
        ("na%00me=x", "na?me"),  # in the name: unknown parameters are warnings, still refused
        ("name=%ED%A0%80", "name"),  # an encoded lone surrogate: not UTF-8
        ("name=%FF%FE", "name"),  # not UTF-8 at all
        ("name=ok&birthdate=%C0%AF", "birthdate"),  # an overlong encoding
    ],
)
def test_a_search_value_the_database_refuses_is_a_400_naming_the_parameter(
    crash_client: TestClient, query: str, name: str
) -> None:
    issue = outcome_issue(crash_client.get(f"/fhir/Patient?{query}"), 400, "value")
    assert issue["expression"] == [name], issue


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/_history"), ("GET", "/_history/1"), ("DELETE", ""), ("PUT", ""), ("PATCH", "")],
)
def test_a_nul_in_a_resource_id_in_the_url_is_a_400(
    crash_client: TestClient, method: str, suffix: str
) -> None:
    body: Any = None
    headers = dict(FHIR_JSON)
    if method == "PUT":
        body = {**patient(), "id": "a"}
    elif method == "PATCH":
        body, headers = [{"op": "replace", "path": "/gender", "value": "male"}], JSON_PATCH
    resp = crash_client.request(method, f"/fhir/Patient/a%00b{suffix}", json=body, headers=headers)
    assert outcome_issue(resp, 400, "value")["expression"] == ["id"]


def test_a_nul_in_the_version_id_is_a_400(crash_client: TestClient, patient_id: str) -> None:
    resp = crash_client.get(f"/fhir/Patient/{patient_id}/_history/1%00")
    assert outcome_issue(resp, 400, "value")["expression"] == ["vid"]


@pytest.mark.parametrize("criteria", ["identifier=sys%7Ca%00b", "name=%ED%A0%80", "name=%FF"])
def test_if_none_exist_criteria_the_database_refuses_are_a_400(
    crash_client: TestClient, criteria: str
) -> None:
    resp = crash_client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": criteria}
    )
    issue = outcome_issue(resp, 400, "value")
    assert "If-None-Exist" in issue["diagnostics"], issue


def test_a_nul_in_if_match_is_a_400(crash_client: TestClient, patient_id: str) -> None:
    """Already a 400 before (the version is parsed, never sent): kept as a guard rail."""
    resp = crash_client.put(
        f"/fhir/Patient/{patient_id}",
        json={**patient(), "id": patient_id},
        headers={**FHIR_JSON, "If-Match": 'W/"1\x00"'},
    )
    assert outcome_issue(resp, 400, "invalid")["expression"] == ["If-Match"]


def test_a_transaction_entry_url_the_database_refuses_is_a_400(crash_client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": "Patient?name=a%00b"}}],
    }
    issue = outcome_issue(crash_client.post("/fhir", json=bundle, headers=FHIR_JSON), 400, "value")
    assert issue["diagnostics"].startswith("Bundle.entry[0]"), issue


def test_a_forms_search_with_a_nul_is_a_400(crash_client: TestClient) -> None:
    resp = crash_client.post("/fhir/Patient/_search", content=b"name=a%00b", headers={"content-type": FORM})
    assert outcome_issue(resp, 400, "value")["expression"] == ["name"]


# -- numbers: ASCII digits only, in range ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/fhir/Patient?_count=%C2%B2", "_count"),  # `²`: str.isdigit() says yes, int() says no
        ("/fhir/Patient?_count=%D9%A3", "_count"),  # Arabic-Indic three: int() reads it as 3
        ("/fhir/Patient/_history?_count=%C2%B2", "_count"),
        ("/fhir/_history?_page_before=%C2%B2", "_page_before"),
        ("/fhir/Patient/{id}/_history/%C2%B2", "vid"),
        ("/fhir/Patient/{id}/_history/%EF%BC%91", "vid"),  # fullwidth one
    ],
)
def test_a_non_ascii_digit_is_a_400(crash_client: TestClient, patient_id: str, path: str, name: str) -> None:
    issue = outcome_issue(crash_client.get(path.replace("{id}", patient_id)), 400, "invalid")
    assert issue["expression"] == [name], issue


def test_numbers_past_the_database_range_are_answered(crash_client: TestClient, patient_id: str) -> None:
    huge = "9" * 30
    assert crash_client.get(f"/fhir/Patient?_count={huge}").status_code == 200  # reduced to the maximum
    assert crash_client.get(f"/fhir/Patient?_count={'9' * 5000}").status_code == 200  # past int()'s limit
    assert crash_client.get(f"/fhir/_history?_page_before={huge}").status_code == 200
    outcome_issue(crash_client.get(f"/fhir/Patient/{patient_id}/_history/{huge}"), 400, "value")
    outcome_issue(crash_client.get(f"/fhir/Patient/{patient_id}/_history/2147483648"), 400, "value")
    resp = crash_client.put(
        f"/fhir/Patient/{patient_id}",
        json={**patient(), "id": patient_id},
        headers={**FHIR_JSON, "If-Match": f'W/"{huge}"'},
    )
    outcome_issue(resp, 400, "value")


def _cursor(sort_value: object, pk: object) -> str:
    raw = b'["a",%d]' % pk if isinstance(pk, int) and pk >= 2**63 else orjson.dumps([sort_value, pk])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("_lastUpdated", _cursor("not a time", 1)),  # datetime.fromisoformat in the store: a 500
        ("_lastUpdated", _cursor("2026-01-01T00:00:00+05:00", 1)),  # aware: not what the store keeps
        ("_id", _cursor("a\x00b", 1)),  # PostgreSQL refuses the NUL
        ("_id", _cursor("a", 2**63)),  # past bigint
        ("_id", _cursor("a", 2**70)),
        ("_id", _cursor(["a"], 1)),
    ],
)
def test_a_forged_paging_cursor_is_a_400(crash_client: TestClient, sort: str, cursor: str) -> None:
    resp = crash_client.get(f"/fhir/Patient?_sort={sort}&_cursor={cursor}")
    assert outcome_issue(resp, 400, "invalid")["expression"] == ["_cursor"]


def test_the_date_pattern_takes_ascii_digits_only() -> None:
    with pytest.raises(ValueError):
        parse_date_range("\uff12\uff10\uff12\uff16-01-01")  # fullwidth 2026


def test_ascii_int() -> None:
    from fhir_gateway.fhir.search import ascii_int

    assert ascii_int("0042") == 42 and ascii_int("0") == 0
    assert ascii_int("9" * 5000) == 2**63 and ascii_int("9" * 19) == 10**19 - 1  # past int()'s limit: 2**63
    assert ascii_int("0" * 30 + "7") == 7
    for bad in ("", "-1", "+1", " 1", "1.0", "\u00b2", "\u0663", "\uff11", "1e3"):
        assert ascii_int(bad) is None, bad


def test_console_numbers_take_ascii_digits_and_stay_in_range() -> None:
    from fhir_gateway.api.console.pages.referrals import number as _int

    assert _int("12") == 12 and _int(None) is None and _int("\u00b2") is None and _int("-3") is None
    assert _int("9" * 5000) == 100_000  # a min_age in days past year 1 was an OverflowError


# -- caps: 400 `too-costly` naming the parameter, before any database work ------------------------


def _ids(n: int) -> str:
    return ",".join(f"id-{i}" for i in range(n))


@pytest.fixture
def no_database(crash_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a request that reaches the store fails the test."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the database was reached")

    monkeypatch.setattr(crash_client.app.state.ctx.database, "connection", refuse)  # type: ignore[attr-defined]


def test_an_or_list_at_the_cap_is_served(crash_client: TestClient, patient_id: str) -> None:
    resp = crash_client.get(f"/fhir/Patient?_id={_ids(99)},{patient_id}")
    assert resp.status_code == 200 and resp.json()["entry"][0]["resource"]["id"] == patient_id


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (f"_id={_ids(101)}", "_id"),
        (f"_id={_ids(500)}", "_id"),
        (f"identifier={_ids(101)}", "identifier"),
        ("name=" + ",".join(["a\\,b"] * 101), "name"),  # escaped commas are no separators...
        ("&".join([f"_id={_ids(100)}"] * 5) + "&name=x", "name"),  # ...and 501 values in all
    ],
)
def test_too_many_or_values_are_too_costly(
    crash_client: TestClient, no_database: None, query: str, name: str
) -> None:
    issue = outcome_issue(crash_client.get(f"/fhir/Patient?{query}"), 400, "too-costly")
    assert issue["expression"] == [name], issue


def test_escaped_commas_do_not_count_as_or_values(crash_client: TestClient) -> None:
    assert crash_client.get("/fhir/Patient?name=" + "a\\," * 150).status_code == 200


@pytest.mark.parametrize("count", [51, 1000, 1100])
def test_too_many_query_parameters_are_too_costly(
    crash_client: TestClient, no_database: None, count: int
) -> None:
    query = "&".join(f"name=n{i}" for i in range(count))
    issue = outcome_issue(crash_client.get(f"/fhir/Patient?{query}"), 400, "too-costly")
    assert issue["expression"] == ["name"] and "50" in issue["diagnostics"], issue
    resp = crash_client.post("/fhir/Patient/_search", content=query.encode(), headers={"content-type": FORM})
    outcome_issue(resp, 400, "too-costly")


def test_fifty_parameters_are_served(crash_client: TestClient) -> None:
    query = "&".join(f"family=n{i}" for i in range(49)) + "&_count=5"
    assert crash_client.get(f"/fhir/Patient?{query}").status_code == 200


def test_if_none_exist_criteria_are_capped(crash_client: TestClient) -> None:
    for criteria, name in ((f"_id={_ids(101)}", "_id"), ("&".join(f"name=n{i}" for i in range(51)), "name")):
        resp = crash_client.post(
            "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": criteria}
        )
        assert outcome_issue(resp, 400, "too-costly")["expression"] == [name]


def test_bundle_entry_searches_are_capped(crash_client: TestClient) -> None:
    too_many = {"request": {"method": "GET", "url": f"Patient?_id={_ids(101)}"}}
    conditional = {
        "resource": patient(),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"_id={_ids(101)}"},
    }
    fine = {"request": {"method": "GET", "url": "Patient?_count=1"}}
    for entry in (too_many, conditional):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        issue = outcome_issue(crash_client.post("/fhir", json=bundle, headers=FHIR_JSON), 400, "too-costly")
        assert issue["diagnostics"].startswith("Bundle.entry[0]"), issue
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [fine, too_many]}
    resp = crash_client.post("/fhir", json=batch, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    first, second = (e["response"] for e in resp.json()["entry"])
    assert first["status"].startswith("200") and second["status"].startswith("400"), resp.text
    assert second["outcome"]["issue"][0]["code"] == "too-costly"


def test_the_caps_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "GATEWAY_MAX_SEARCH_OR_VALUES": "7",
            "GATEWAY_MAX_SEARCH_VALUES": "9",
            "GATEWAY_MAX_QUERY_PARAMETERS": "3",
        }
    )
    assert (settings.max_search_or_values, settings.max_search_values, settings.max_query_parameters) == (
        7,
        9,
        3,
    )
    defaults = Settings()
    assert (defaults.max_search_or_values, defaults.max_search_values, defaults.max_query_parameters) == (
        100,
        500,
        50,
    )


def test_smaller_caps_are_applied(sqlite_url: str) -> None:
    with make_client(sqlite_url, max_search_or_values=2, max_query_parameters=3) as client:
        outcome_issue(client.get("/fhir/Patient?_id=a,b,c"), 400, "too-costly")
        assert client.get("/fhir/Patient?_id=a,b").status_code == 200
        outcome_issue(client.get("/fhir/Patient?name=a&name=b&name=c&name=d"), 400, "too-costly")


# -- invalid UTF-8 in the raw query string, over real HTTP -----------------------------------------


def test_raw_invalid_utf8_in_the_query_string_is_a_400(client_app: FastAPI) -> None:
    """Bytes a client sends unencoded (uvicorn's httptools parser refuses them itself; other
    servers pass them on): Starlette's request.url decodes them strictly, which was a 500."""
    messages = asyncio.run(call_asgi(client_app, "/fhir/Patient", b"_count=1&name=\xff\xfe"))
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    assert start["status"] == 400, (start, body)
    assert dict(start["headers"])[b"content-type"].startswith(b"application/fhir+json")
    issue = orjson.loads(body)["issue"][0]
    assert issue["code"] == "value" and issue["expression"] == ["name"], issue


@pytest.fixture
def client_app(sqlite_url: str) -> Iterator[FastAPI]:
    with make_client(sqlite_url, insecure_dev=True) as client:
        yield client.app  # type: ignore[misc]


async def call_asgi(app: FastAPI, path: str, query: bytes) -> list[dict[str, Any]]:
    """One GET straight into the ASGI app, with a raw query string no HTTP client would send."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway.test", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


# -- JSON Patch edge cases: each a clear 4xx ------------------------------------------------------


PATCH_REFUSED = [  # were a 500, a 200 that changed what it may not, or applied 1,001 operations
    ([{"op": "add", "path": "", "value": 1}], 422, "Patch[0].path"),  # was a 500 (schemathesis)
    ([{"op": "add", "path": "", "value": []}], 422, "Patch[0].path"),
    ([{"op": "add", "path": "", "value": {"resourceType": "Patient"}}], 422, "Patch[0].path"),
    ([{"op": "replace", "path": "", "value": "x"}], 422, "Patch[0].path"),
    ([{"op": "remove", "path": ""}], 422, "Patch[0].path"),
    ([{"op": "move", "from": "", "path": "/extension"}], 422, "Patch[0].from"),
    ([{"op": "replace", "path": "/resourceType", "value": "Practitioner"}], 422, "Patch[0].path"),
    ([{"op": "move", "from": "/id", "path": "/language"}], 422, "Patch[0].from"),
    ([{"op": "replace", "path": "/meta/versionId", "value": "99"}], 422, "Patch[0].path"),
    ([{"op": "add", "path": "/meta/lastUpdated", "value": "2020-01-01T00:00:00Z"}], 422, "Patch[0].path"),
    (
        [{"op": "test", "path": "/gender", "value": "female"}, {"op": "remove", "path": "/id"}],
        422,
        "Patch[1].path",
    ),
    ([1], 422, "Patch[0]"),
    ([{"op": "test", "path": "/gender", "value": "female"}] * 1001, 413, None),
]
PATCH_ALREADY_4XX = [  # refused before as well: kept as guard rails
    ([{"op": "copy", "from": "", "path": "/extension"}], 400, None),  # the copy is read; invalid result
    ({"op": "add"}, 400, None),  # not an array
    ([{"op": "add", "path": "/", "value": 1}], 400, None),  # the key "": not a Patient element
    ([{"op": "add", "path": "-", "value": 1}], 422, None),
    ([{"op": "test", "path": "/gender", "value": "male"}], 422, None),  # a failed test
    ([{"op": "test", "path": "", "value": {}}], 422, None),  # reading the whole document is fine
    ([{"op": "add", "path": "/name/99999999999999999999", "value": {}}], 422, None),
    ([{"op": "add", "path": "/name/\u00b2", "value": {}}], 422, None),
    ([{"op": "bogus", "path": "/gender"}], 422, None),
    ([{"op": ["add"], "path": "/gender"}], 422, None),
    ([{"op": "add", "path": 5, "value": 1}], 422, None),
    ([{"op": "replace", "path": "/gender"}], 422, None),  # no value
]


@pytest.mark.parametrize(("operations", "status", "expression"), PATCH_REFUSED + PATCH_ALREADY_4XX)
def test_json_patch_edge_cases_are_4xx(
    crash_client: TestClient, patient_id: str, operations: Any, status: int, expression: str | None
) -> None:
    resp = crash_client.patch(f"/fhir/Patient/{patient_id}", json=operations, headers=JSON_PATCH)
    assert resp.status_code == status, resp.text
    issue = resp.json()["issue"][0]
    assert resp.json()["resourceType"] == "OperationOutcome" and issue["severity"] == "error", resp.text
    if expression:
        assert issue["expression"] == [expression], issue
    if status == 413:
        assert issue["code"] == "too-costly"
    stored = crash_client.get(f"/fhir/Patient/{patient_id}").json()
    assert stored["meta"]["versionId"] == "1" and stored["gender"] == "female"  # nothing applied


def test_a_json_patch_may_still_change_meta_tags_and_test_the_id(
    crash_client: TestClient, patient_id: str
) -> None:
    tag = {"system": "urn:example", "code": "x"}
    operations = [
        {"op": "test", "path": "/id", "value": patient_id},
        {"op": "add", "path": "/meta/tag", "value": [tag]},
        {"op": "replace", "path": "/gender", "value": "male"},
    ]
    resp = crash_client.patch(f"/fhir/Patient/{patient_id}", json=operations, headers=JSON_PATCH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["meta"]["tag"] == [tag] and resp.json()["meta"]["versionId"] == "2"
