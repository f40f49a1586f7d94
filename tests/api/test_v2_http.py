"""POST /v2 (ER7 over HTTP) mounted on the real app: ACK in the body, 415 for other types, the
sender decided by the access token (the authorisation cells: test_v2_authorisation.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.loading import load_files
from fhir_gateway.security.clients import get_client, set_client_active
from fhir_gateway.v2.inbound import parse
from tests.conftest import authorize, make_client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
ER7 = "x-application/hl7-v2+er7"
SENDER = {  # MSH-4 of each example → the example client registered for that facility
    "01053417": "praktijk-batau-his",
    "01051234": "praktijk-de-geinoord-his",
    "01058821": "praktijk-hollandse-ijssel-his",
}


def as_sender(http: TestClient, body: bytes) -> bytes:
    """Send the next requests as the practice the message says it comes from (MSH-4)."""
    authorize(http, SENDER[parse(body).msh.value(4)])
    return body


@pytest.fixture
def http(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url) as client:
        app = client.app
        assert all(r.ok for r in load_files(app.state.router, [ROOT / "examples" / "directory"]))  # type: ignore[attr-defined]
        yield client


def _msa(body: bytes) -> tuple[str, str]:
    msa = parse(body).segment("MSA")
    assert msa is not None
    return msa.value(1), msa.value(2)


@pytest.mark.parametrize("content_type", [ER7, "application/hl7-v2", "application/hl7-v2; charset=utf-8"])
def test_post_v2_answers_the_ack_with_the_same_content_type(http: TestClient, content_type: str) -> None:
    body = as_sender(http, (EXAMPLES / "ref-i12-v24.hl7").read_bytes())
    resp = http.post("/v2", content=body, headers={"content-type": content_type})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(content_type.split(";")[0])
    assert _msa(resp.content) == ("AA", "HHIJ-20261105-0042")


def test_duplicate_over_http_returns_the_original_ack(http: TestClient) -> None:
    body = as_sender(http, (EXAMPLES / "ref-i12-escapes.hl7").read_bytes())
    first = http.post("/v2", content=body, headers={"content-type": ER7})
    second = http.post("/v2", content=body, headers={"content-type": ER7})
    assert first.content == second.content and _msa(first.content)[0] == "AA"
    found = http.get("/fhir/ServiceRequest", params={"identifier": "GEIN-VW-7781", "_summary": "count"})
    assert found.json()["total"] == 1


def test_errors_are_http_200_with_ae_or_ar_inside(http: TestClient) -> None:
    bad = http.post(
        "/v2",
        content=as_sender(http, (EXAMPLES / "ref-i12-postcode-not-covered.hl7").read_bytes()),
        headers={"content-type": ER7},
    )
    assert bad.status_code == 200 and _msa(bad.content)[0] == "AE"
    assert b"ERR||PID^1^11^1^5|103^" in bad.content
    garbage = http.post("/v2", content=b"hello", headers={"content-type": ER7})
    assert garbage.status_code == 200 and _msa(garbage.content)[0] == "AR"


def test_other_content_types_get_415(http: TestClient) -> None:
    resp = http.post("/v2", content=b"{}", headers={"content-type": "application/fhir+json"})
    assert resp.status_code == 415


GOOD = (EXAMPLES / "ref-i12-v25.hl7").read_bytes()  # Batau-Noord, MSH-4 01053417


def _count(http: TestClient, identifier: str) -> int:
    authorize(http, "gateway-admin")
    return int(
        http.get("/fhir/ServiceRequest", params={"identifier": identifier, "_summary": "count"}).json()[
            "total"
        ]
    )


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [(None, 'Bearer realm="fhir-gateway"'), ("Bearer not-a-token", 'error="invalid_token"')],
)
def test_v2_without_a_valid_token_is_401_like_the_fhir_routes(
    http: TestClient, authorization: str | None, challenge: str
) -> None:
    http.headers.pop("Authorization", None)
    headers = {"content-type": ER7, **({"Authorization": authorization} if authorization else {})}
    resp = http.post("/v2", content=GOOD, headers=headers)
    fhir = http.post(
        "/fhir/ServiceRequest", json={}, headers={**headers, "content-type": "application/fhir+json"}
    )
    assert (resp.status_code, fhir.status_code) == (401, 401)
    assert challenge in resp.headers["www-authenticate"]
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert _count(http, "REF-2026-0001") == 0


def test_a_token_without_the_v2_scopes_is_refused_naming_them(http: TestClient) -> None:
    app = http.app
    reg = get_client(app.state.ctx.database, "praktijk-batau-his")  # type: ignore[attr-defined]
    assert reg is not None
    token = app.state.tokens.issue(reg, ["system/ServiceRequest.cr", "system/Patient.cr"])  # type: ignore[attr-defined]
    resp = http.post(
        "/v2", content=GOOD, headers={"content-type": ER7, "Authorization": f"Bearer {token.access_token}"}
    )
    assert _msa(resp.content) == ("AR", "BATAU-000123")
    err = parse(resp.content).segment("ERR")
    assert err is not None and err.value(3) == "204" and err.value(5) == "forbidden"
    assert "system/Consent.cr system/Practitioner.r" in err.value(8)
    assert _count(http, "REF-2026-0001") == 0


def test_a_client_disabled_after_its_token_was_issued_sends_nothing(http: TestClient) -> None:
    authorize(http, "praktijk-batau-his")
    assert set_client_active(http.app.state.ctx.database, "praktijk-batau-his", False)  # type: ignore[attr-defined]
    resp = http.post("/v2", content=GOOD, headers={"content-type": ER7})
    assert _msa(resp.content)[0] == "AR"
    assert "praktijk-batau-his (bearer token) is not registered or not active" in parse(resp.content).segment(
        "ERR"
    ).value(8)  # type: ignore[union-attr]
    assert _count(http, "REF-2026-0001") == 0


def test_a_refused_message_writes_an_audit_event(http: TestClient) -> None:
    authorize(http, "welzijn-de-brug-cms")
    resp = http.post("/v2", content=GOOD, headers={"content-type": ER7, "X-Request-Id": "v2-refusal-1"})
    assert _msa(resp.content)[0] == "AR"
    authorize(http, "gateway-admin")
    events = [
        e["resource"]
        for e in http.get("/fhir/AuditEvent", params={"outcome": "4", "_count": "100"})
        .json()
        .get("entry", [])
    ]
    [event] = [e for e in events if e["agent"][0]["who"]["identifier"]["value"] == "welzijn-de-brug-cms"]
    assert event["outcome"] == "4" and event["action"] == "C"
    assert "not registered for client welzijn-de-brug-cms (bearer token)" in event["outcomeDesc"]
    assert event["agent"][1]["who"]["reference"] == "Organization/welzijn-de-brug"
    assert event["agent"][0]["network"]["address"] == "testclient"
    descriptions = [e.get("description", "") for e in event["entity"]]
    assert (
        "HL7 v2 REF^I12 control id BATAU-000123 via bearer token, sending facility (MSH-4) '01053417'"
        in descriptions
    )
    assert {"type": "X-Request-Id", "valueString": "v2-refusal-1"} in [
        d for e in event["entity"] for d in e.get("detail", [])
    ]
    assert "999911120" not in str(event)  # the refused content (a BSN) is not copied into the log


def test_100k_repetitions_get_ar_in_milliseconds_over_http(http: TestClient) -> None:
    pid3 = b"999911120^^^NLMINBIZA^NNNLD~P-4711^^^01053417^PI"
    body = GOOD.replace(pid3, pid3 + b"~" + b"~".join(b"%d" % i for i in range(100_000)))
    assert len(body) < 1024 * 1024  # under GATEWAY_MAX_V2_MESSAGE_BYTES: the caps decide, not the 413
    authorize(http, "praktijk-batau-his")
    started = time.perf_counter()
    resp = http.post("/v2", content=body, headers={"content-type": ER7})
    elapsed = time.perf_counter() - started
    assert resp.status_code == 200 and _msa(resp.content) == ("AR", "BATAU-000123")
    assert b"ERR||PID^1^3|102^Data type error^HL70357|E|too-costly^" in resp.content
    assert elapsed < 1.0, elapsed  # was 9 s and AA before the caps
    assert _count(http, "REF-2026-0001") == 0


def test_insecure_dev_without_a_token_lets_msh4_decide(sqlite_url: str) -> None:
    with make_client(sqlite_url, None, insecure_dev=True) as dev:
        assert all(r.ok for r in load_files(dev.app.state.router, [ROOT / "examples" / "directory"]))  # type: ignore[attr-defined]
        resp = dev.post("/v2", content=GOOD, headers={"content-type": ER7})
        assert _msa(resp.content)[0] == "AA"
        unknown = dev.post(
            "/v2", content=GOOD.replace(b"|01053417|", b"|99999999|", 1), headers={"content-type": ER7}
        )
        assert (
            _msa(unknown.content)[0] == "AR"
            and b"|204^Unknown key identifier^HL70357|E|forbidden" in unknown.content
        )
        # a token that IS sent is still the sender, dev mode or not
        authorize(dev, "welzijn-de-brug-cms")
        other = GOOD.replace(b"BATAU-000123", b"BATAU-DEV-2")
        assert _msa(dev.post("/v2", content=other, headers={"content-type": ER7}).content)[0] == "AR"
