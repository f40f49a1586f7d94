"""Hostile input: a corpus of malformed bodies and v2 messages, each answered with a clear 4xx
OperationOutcome (v2: an AE/AR ACK with ERR), never a 500; body size, JSON nesting and duplicate
keys refused in one place (`api.body_limit`, `fhir.strict_json`); per-client rate limiting; and a real
uvicorn server whose memory stays bounded through the whole corpus."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_gateway.api.rate_limit import MAX_BUCKETS, TokenBuckets
from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.fhir.strict_json import JsonLimits, count_keys, loads
from fhir_gateway.loading import load_files
from fhir_gateway.security.clients import get_client, save_client
from fhir_gateway.security.tokens import GatewayKeys, TokenService, generate_gateway_key
from fhir_gateway.settings import Settings
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.message import unescape
from fhir_gateway.v2.mllp import MLLPClient, MLLPServer, ServerThread
from fhir_gateway.v2.service import V2Service
from tests.conftest import authorize, make_client
from tests.e2e.conftest import bearer, free_port
from tests.wor import FHIR_JSON, patient, referral_bundle

ROOT = Path(__file__).resolve().parents[2]
GOOD_V2 = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_text().replace("\n", "\r")
ER7 = {"content-type": "x-application/hl7-v2+er7"}
MB = 1024 * 1024
RNG = random.Random(9)  # reproducible junk


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_patient(levels: int) -> bytes:
    """A Patient whose extension nests `levels` objects (a shape a parser recurses on)."""
    inner = b'{"url":"x"' + b',"extension":[{"url":"x"' * levels + b"}]" * levels + b"}"
    return b'{"resourceType":"Patient","extension":[' + inner + b"]}"


def huge_bundle(entries: int) -> bytes:
    entry = b'{"request":{"method":"GET","url":"Patient/x"}}'
    return b'{"resourceType":"Bundle","type":"batch","entry":[' + b",".join([entry] * entries) + b"]}"


def issue(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    assert first["severity"] == "error"
    return first


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from fhir_gateway.store.database import Database

    db_file = tmp_path_factory.mktemp("hostile") / "g.db"
    Database(f"sqlite:///{db_file}").upgrade()
    with make_client(f"sqlite:///{db_file}") as c:
        assert all(r.ok for r in load_files(c.app.state.router, [ROOT / "examples" / "directory"]))  # type: ignore[attr-defined]
        yield c


# -- the JSON corpus (TestClient) ------------------------------------------------------------------
# (name, method, path, body, content type, expected status, expected issue code, text in diagnostics)
JSON_CORPUS: list[tuple[str, str, str, bytes, str, int, str, str]] = [
    (
        "10 000 levels of arrays",
        "POST",
        "/fhir/Patient",
        deep(10_000),
        "application/fhir+json",
        400,
        "too-costly",
        "64",
    ),
    (
        "65 levels of arrays",
        "POST",
        "/fhir/Patient",
        deep(65),
        "application/fhir+json",
        400,
        "too-costly",
        "64",
    ),
    (
        "10 000 nested extensions",
        "POST",
        "/fhir",
        deep_patient(10_000),
        "application/fhir+json",
        400,
        "too-costly",
        "64",
    ),
    (
        "deep JSON Patch",
        "PATCH",
        "/fhir/Patient/x",
        deep(500),
        "application/json-patch+json",
        400,
        "too-costly",
        "64",
    ),
    (
        "10 MB+ body",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","x":"' + b"a" * (10 * MB) + b'"}',
        "application/fhir+json",
        413,
        "too-costly",
        "10485760",
    ),
    (
        "100 000 Bundle entries",
        "POST",
        "/fhir",
        huge_bundle(100_000),
        "application/fhir+json",
        413,
        "too-costly",
        "100000 entries",
    ),
    (
        "duplicate resourceType",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","resourceType":"Patient"}',
        "application/fhir+json",
        400,
        "structure",
        "'resourceType'",
    ),
    (
        "duplicate key in a Bundle entry",
        "POST",
        "/fhir",
        b'{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","gender":"male","gender" : "female"}}]}',
        "application/fhir+json",
        400,
        "structure",
        "'gender'",
    ),
    (
        "lone surrogate escape",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
        "application/fhir+json",
        400,
        "structure",
        "surrogate",
    ),
    (
        "encoded surrogate bytes",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\xed\xa0\x80"}]}',
        "application/fhir+json",
        400,
        "structure",
        "UTF-8",
    ),
    (
        "overlong UTF-8",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\xc0\xaf"}]}',
        "application/fhir+json",
        400,
        "structure",
        "UTF-8",
    ),
    (
        "invalid UTF-8 byte",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}',
        "application/fhir+json",
        400,
        "structure",
        "not valid JSON",
    ),
    (
        "NUL in a string",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"Jan\\u0000sen"}]}',
        "application/fhir+json",
        400,
        "value",
        "control character",
    ),
    (
        "raw NUL byte",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient"}\x00',
        "application/fhir+json",
        400,
        "structure",
        "not valid JSON",
    ),
    (
        "XML as JSON",
        "POST",
        "/fhir/Patient",
        b'<Patient xmlns="http://hl7.org/fhir"/>',
        "application/fhir+json",
        400,
        "structure",
        "not valid JSON",
    ),
    (
        "CSV content type",  # FHIR XML: tests/api/test_xml.py
        "POST",
        "/fhir/Patient",
        b"resourceType\nPatient\n",
        "text/csv",
        415,
        "not-supported",
        "application/fhir+json",
    ),
    (
        "form body",
        "POST",
        "/fhir/Patient",
        b"resourceType=Patient",
        "application/x-www-form-urlencoded",
        415,
        "not-supported",
        "Content-Type",
    ),
    (
        "truncated JSON",
        "POST",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"fam',
        "application/fhir+json",
        400,
        "structure",
        "not valid JSON",
    ),
    (
        "binary junk",
        "POST",
        "/fhir",
        bytes(RNG.randrange(256) for _ in range(4096)),
        "application/fhir+json",
        400,
        "structure",
        "not valid JSON",
    ),
]
WRONG_TYPES: list[tuple[str, bytes]] = [
    ("array body", b"[]"),
    ("string body", b'"Patient"'),
    ("null body", b"null"),
    ("number resourceType", b'{"resourceType":5}'),
    ("name as a string", b'{"resourceType":"Patient","name":"Anna"}'),
    ("birthDate as a number", b'{"resourceType":"Patient","birthDate":19610412}'),
    ("identifier as an object", b'{"resourceType":"Patient","identifier":{"value":"1"}}'),
    ("huge number", b'{"resourceType":"Patient","multipleBirthInteger":1' + b"0" * 400 + b"}"),
    ("unknown resource type", b'{"resourceType":"Bogus"}'),
    (
        "Bundle entry of an unknown type",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Bogus"},"request":{"method":"POST","url":"Bogus"}}]}',
    ),
    ("Bundle entry as a string", b'{"resourceType":"Bundle","type":"batch","entry":["x"]}'),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code", "text"),
    [pytest.param(*case[1:], id=case[0]) for case in JSON_CORPUS],
)
def test_malformed_json_gets_a_clear_operation_outcome(
    client: TestClient,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    text: str,
) -> None:
    resp = client.request(method, path, content=body, headers={"content-type": content_type})
    assert resp.status_code == status, resp.text[:500]
    found = issue(resp)  # type: ignore[arg-type]
    assert found["code"] == code
    assert text in found["diagnostics"]


@pytest.mark.parametrize("body", [pytest.param(b, id=name) for name, b in WRONG_TYPES])
@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir"])
def test_wrong_types_are_4xx_never_5xx(client: TestClient, path: str, body: bytes) -> None:
    resp = client.post(path, content=body, headers=FHIR_JSON)
    assert 400 <= resp.status_code < 500, resp.text[:500]
    assert issue(resp)["code"]  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_an_empty_body_is_a_4xx_operation_outcome(client: TestClient, method: str) -> None:
    path = "/fhir/Patient" if method == "POST" else "/fhir/Patient/x"
    resp = client.request(method, path, content=b"", headers=FHIR_JSON)
    assert 400 <= resp.status_code < 500, resp.text
    assert issue(resp)["code"]  # type: ignore[arg-type]


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(sqlite_url: str) -> None:
    """No Content-Length: the middleware counts chunks and stops after the first one too many."""
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b" " * 1000

    with make_client(sqlite_url, max_body_bytes=5000) as c:
        resp = c.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
    assert resp.status_code == 413
    assert "5000" in issue(resp)["diagnostics"]  # type: ignore[arg-type]


def test_duplicate_key_and_control_character_name_the_element(client: TestClient) -> None:
    bundle = referral_bundle()
    raw = orjson.dumps(bundle).replace(b'"family":"Jansen"', b'"family":"Jansen","family":"Janssen"')
    resp = client.post("/fhir", content=raw, headers=FHIR_JSON)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["Bundle.entry[0].resource.name[0].family"]  # type: ignore[arg-type]
    raw = orjson.dumps(bundle).replace(b'"family":"Jansen"', b'"family":"Jan\\u0001sen"')
    resp = client.post("/fhir", content=raw, headers=FHIR_JSON)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["Bundle.entry[0].resource.name[0].family"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "family",
    [
        "\u200f\u05db\u05d4\u05df\u200e",  # RTL and LTR marks around Hebrew
        "Jansen 👩‍⚕️🇳🇱",  # emoji with ZWJ and a flag
        "Ångström-Ça\u0301rdenas",  # precomposed and combining accents
        "\ufeffBOM",  # a zero-width no-break space inside
        "tab\there",  # tab is allowed in a FHIR string
    ],
)
def test_valid_unicode_in_names_is_kept_exactly(client: TestClient, family: str) -> None:
    """Legitimate unicode is not hostile: stored and read back byte for byte."""
    body = patient()
    body["name"] = [{"family": family, "given": ["Anna"]}]
    resp = client.post("/fhir/Patient", content=orjson.dumps(body), headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    read = client.get(f"/fhir/Patient/{resp.json()['id']}")
    assert read.json()["name"][0]["family"] == family


def test_nesting_at_the_limit_passes_the_depth_check(sqlite_url: str) -> None:
    with make_client(sqlite_url, max_json_depth=8) as c:
        at_limit = c.post("/fhir/Patient", content=deep(8), headers=FHIR_JSON)
        over = c.post("/fhir/Patient", content=deep(9), headers=FHIR_JSON)
    assert issue(at_limit)["code"] != "too-costly"  # type: ignore[arg-type]
    assert "8 levels" in issue(over)["diagnostics"]  # type: ignore[arg-type]


# -- fhir.strict_json on its own ------------------------------------------------------------------------
def test_the_duplicate_check_has_no_false_alarm_and_misses_no_spaced_key() -> None:
    limits = JsonLimits()
    assert loads(b'{"text":"a \\":\\" b","x":{"y":1}}', limits) == {"text": 'a ":" b', "x": {"y": 1}}
    with pytest.raises(FhirError) as raised:
        loads(b'{"a" :1,"a":2}', limits)
    assert raised.value.issues[0].expression == "$this.a"
    with pytest.raises(FhirError):
        loads(b'{"a"\n\t:1,\n"a"\r:2}', limits)


def test_count_keys_walks_every_object() -> None:
    assert count_keys({"a": [{"b": 1, "c": {"d": None}}], "e": []}, 64) == 5
    with pytest.raises(FhirError):
        count_keys([[[[]]]], 3)


# -- HL7 v2 over HTTP ---------------------------------------------------------------------------------
V2_CORPUS: list[tuple[str, bytes]] = [
    ("no MSH", b"PID|1||999911120^^^NLMINBIZA^NNBSN||Jansen^Anna\rRF1|P^Pending\r"),
    (
        "wrong separators",
        (GOOD_V2.split("\r", 1)[0] + "\r" + GOOD_V2.split("\r", 1)[1].replace("|", "#")).encode(),
    ),
    ("MSH with a letter as field separator", b"MSHa^~\\&aGPaPRACTICE\r"),
    ("binary junk", bytes(RNG.randrange(256) for _ in range(8192))),
    ("empty", b""),
    ("only MSH", b"MSH|^~\\&|HIS|01234567|WOR|GW|20261102||REF^I12|X1|P|2.5\r"),
    ("NUL bytes", GOOD_V2.replace("Jansen", "Jan\x00sen").encode()),
    ("control character", GOOD_V2.replace("Dorpsstraat", "Dorps\x07straat").encode()),
]


def _ack(body: bytes) -> tuple[str, list[str]]:
    message = parse(body)
    msa = message.segment("MSA")
    assert msa is not None
    errs = [s.value(8) or s.value(3) for s in message.segments if s.name == "ERR"]
    return msa.value(1), errs


def _batau(client: TestClient) -> dict[str, str]:
    """The sender of GOOD_V2 (MSH-4 01053417): hostile content from a legitimate client."""
    app: Any = client.app
    registration = get_client(app.state.ctx.database, "praktijk-batau-his")
    assert registration is not None
    return {
        "authorization": f"Bearer {app.state.tokens.issue(registration, registration.scopes).access_token}"
    }


@pytest.mark.parametrize("body", [pytest.param(b, id=name) for name, b in V2_CORPUS])
def test_malformed_v2_over_http_gets_an_error_ack(client: TestClient, body: bytes) -> None:
    resp = client.post("/v2", content=body, headers={**ER7, **_batau(client)})
    assert resp.status_code == 200
    code, errs = _ack(resp.content)
    assert code in ("AE", "AR")
    assert errs and all(errs)
    if body.startswith(GOOD_V2[:40].encode()):  # refused for its content, not for who sent it
        assert not any("not registered for client" in e for e in errs), errs


def test_a_v2_message_over_the_limit_gets_413_with_an_ar_ack(client: TestClient) -> None:
    body = GOOD_V2.replace("NTE|1|P|", "NTE|1|P|" + "x" * (MB + 10), 1).encode()
    assert len(body) > MB
    for content in (body, iter([body[i : i + 65536] for i in range(0, len(body), 65536)])):
        resp = client.post("/v2", content=content, headers=ER7)
        assert resp.status_code == 413
        code, errs = _ack(resp.content)
        assert code == "AR"
        assert "1048576" in errs[0]


def test_a_hex_escape_cannot_smuggle_a_control_character_into_fhir() -> None:
    assert unescape(r"Jan\X00\sen") == r"Jan\X00\sen"  # kept as text, not decoded to NUL
    assert unescape("caf\\XC3A9\\") == "café"


def test_nul_in_a_string_is_400_on_every_backend(any_client: TestClient) -> None:
    """PostgreSQL jsonb cannot hold U+0000: refused at the door, not a 5xx from the store."""
    body = patient()
    body["name"] = [{"family": "Jan\u0000sen"}]
    resp = any_client.post("/fhir/Patient", content=orjson.dumps(body), headers=FHIR_JSON)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["Patient.name[0].family"]  # type: ignore[arg-type]


# -- MLLP ------------------------------------------------------------------------------------------
@pytest.fixture
def mllp(client: TestClient) -> Iterator[MLLPServer]:
    app: Any = client.app
    registration = get_client(app.state.ctx.database, "praktijk-batau-his")
    assert registration is not None  # the loopback address is Batau-Noord's (mllp_addresses)
    save_client(app.state.ctx.database, replace(registration, mllp_addresses=("127.0.0.1/32",)))
    service = V2Service(app.state.router)
    server = MLLPServer(
        host="127.0.0.1", port=0, for_peer=service.for_peer, max_message_bytes=256 * 1024, idle_timeout=5
    )
    thread = ServerThread(server).start()
    yield server
    thread.stop()


def _mllp_send(port: int, payload: bytes) -> bytes:
    async def go() -> bytes:
        async with MLLPClient("127.0.0.1", port, timeout=20) as c:
            return await c.send(payload)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "payload",
    [pytest.param(b, id=name) for name, b in V2_CORPUS if name != "empty"]
    + [
        pytest.param(GOOD_V2.replace("NTE|1|P|", "NTE|1|P|" + "x" * 300_000, 1).encode(), id="over the limit")
    ],
)
def test_malformed_v2_over_mllp_gets_an_error_ack_and_the_listener_stays_up(
    mllp: MLLPServer, payload: bytes
) -> None:
    code, errs = _ack(_mllp_send(mllp.port, payload.replace(b"\x0b", b" ").replace(b"\x1c", b" ")))
    assert code in ("AE", "AR")
    assert errs and all(errs)
    code, _ = _ack(_mllp_send(mllp.port, b"MSH|^~\\&|X|Y|WOR|GW|20261102||ACK|PING1|P|2.5\r"))
    assert code in ("AE", "AR")  # the next connection is still answered


# -- rate limiting --------------------------------------------------------------------------------------
def test_token_buckets_refill_at_the_rate_and_say_when() -> None:
    now = [100.0]
    buckets = TokenBuckets(rate=2, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # another key has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0
    now[0] += 100
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]  # refilled to the burst, no more
    assert buckets.take("a") > 0


def test_token_buckets_forget_the_least_recently_used_past_the_cap() -> None:
    buckets = TokenBuckets(rate=1, burst=1, clock=lambda: 0.0)
    buckets.take("first")
    for i in range(MAX_BUCKETS):
        buckets.take(f"k{i}")
    assert len(buckets._buckets) == MAX_BUCKETS
    assert "first" not in buckets._buckets


@pytest.fixture
def limited(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url, rate_limit_per_second=0.2, rate_limit_burst=3) as c:
        yield c


def test_a_flooding_client_gets_429_while_another_client_is_served(limited: TestClient) -> None:
    app = limited.app
    other = TestClient(app, base_url="http://gateway.test")
    authorize(other, "welzijn-de-brug-cms")
    flood = [limited.get("/fhir/Organization") for _ in range(20)]
    assert [r.status_code for r in flood[:3]] == [200, 200, 200]
    throttled = [r for r in flood if r.status_code == 429]
    assert len(throttled) >= 15
    first = throttled[0]
    assert int(first.headers["retry-after"]) >= 1
    assert issue(first)["code"] == "throttled"  # type: ignore[arg-type]
    assert [other.get("/fhir/Organization").status_code for _ in range(3)] == [200, 200, 200]
    assert limited.get("/fhir/Organization").status_code == 429  # still throttled
    metrics = limited.get("/metrics").text
    assert 'gateway_http_throttled_total{kind="client"}' in metrics
    assert all(limited.get(p).status_code == 200 for p in ["/healthz", "/readyz"] * 10)


def test_unauthenticated_requests_are_limited_by_source_address(limited: TestClient) -> None:
    anonymous = TestClient(limited.app, base_url="http://gateway.test")
    statuses = [anonymous.get("/fhir/metadata").status_code for _ in range(6)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429, 429]
    assert 'gateway_http_throttled_total{kind="address"}' in limited.get("/metrics").text
    assert limited.get("/fhir/Organization").status_code == 200  # the authenticated client is apart


def _assertion_form(app: Any, client_id: str) -> dict[str, str]:
    """A valid SMART token request for an example client (its dev-only key)."""
    from fhir_gateway.security.authn import JWT_BEARER, make_client_assertion

    jwk = orjson.loads((ROOT / "examples" / "clients" / f"{client_id}.dev-only.private.jwk").read_bytes())
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": make_client_assertion(client_id, jwk, "http://gateway.test/auth/token"),
        "scope": "system/*.rs",
    }


def test_the_token_endpoint_limits_each_proven_client_not_the_address(limited: TestClient) -> None:
    """Token requests count against the client the assertion proves (burst 3 here), so one
    client asking too often behind a shared address does not starve another one."""
    shared = TestClient(limited.app, base_url="http://gateway.test", client=("192.0.2.50", 1))
    app = limited.app
    statuses = [
        shared.post("/auth/token", data=_assertion_form(app, "welzijn-de-brug-cms")).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    resp = shared.post("/auth/token", data=_assertion_form(app, "welzijn-de-brug-cms"))
    assert resp.status_code == 429 and resp.json()["error"] == "temporarily_unavailable"
    assert "this client" in resp.json()["error_description"] and int(resp.headers["retry-after"]) >= 1
    other = shared.post("/auth/token", data=_assertion_form(app, "praktijk-de-geinoord-his"))
    assert other.status_code == 200, other.text
    assert 'gateway_http_throttled_total{kind="client"}' in limited.get("/metrics").text


def test_failed_authentication_has_its_own_budget_per_address(limited: TestClient) -> None:
    """The default failure budget (5/s, bucket 10) is shared by the token endpoint and bearer
    tokens, and is not the address's request budget: 10 failures in all, then 429."""
    anonymous = TestClient(limited.app, base_url="http://gateway.test", client=("192.0.2.1", 1))
    spent = [anonymous.post("/auth/token", data={"grant_type": "x"}).status_code for _ in range(4)]
    assert spent == [400, 400, 400, 400]
    bad = {"Authorization": "Bearer not-a-token"}
    assert [anonymous.get("/fhir/Organization", headers=bad).status_code for _ in range(6)] == [401] * 6
    statuses = [anonymous.get("/fhir/Organization", headers=bad).status_code for _ in range(30)]
    assert 429 in statuses and set(statuses) <= {401, 429}
    resp = anonymous.post("/auth/token", data={"grant_type": "x"})
    assert resp.status_code == 429 and resp.json()["error"] == "temporarily_unavailable"
    assert "failed authentications" in resp.json()["error_description"]


def test_token_buckets_peek_says_what_take_would_without_taking() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1, burst=2, clock=lambda: now[0])
    assert buckets.peek("a") == 0  # no bucket yet: full
    buckets.take("a")
    buckets.take("a")
    assert buckets.peek("a") == pytest.approx(1.0)
    assert buckets.peek("a") == pytest.approx(1.0)  # peeking took nothing
    now[0] += 1
    assert buckets.peek("a") == 0
    assert buckets.take("a") == 0


def _forged_token(app: Any, client_id: str) -> str:
    """Well formed and claiming a registered client, but signed with a key the gateway does not
    know: only the signature check can refuse it (the work a flood would make us do)."""
    registration = get_client(app.state.ctx.database, client_id)
    assert registration is not None
    keys = GatewayKeys.from_document(orjson.dumps(generate_gateway_key().as_dict(private=True)).decode(), "x")
    return TokenService(keys, app.state.tokens.issuer).issue(registration, registration.scopes).access_token


@pytest.fixture
def strict(sqlite_url: str) -> Iterator[TestClient]:
    """Failed authentications: 0.2 per second, a bucket of 1."""
    settings = {
        "rate_limit_per_second": 0.2,
        "rate_limit_burst": 3,
        "rate_limit_auth_failures_per_second": 0.2,
    }
    with make_client(sqlite_url, **settings) as c:
        yield c


def test_a_bad_token_flood_is_throttled_by_address_and_valid_tokens_still_pass(
    strict: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed-auth throttling never refuses a valid credential: a flood of forged tokens from
    one address gets 401 then 429, and a client behind the same address with a token the
    gateway has never seen (or a valid client assertion) is still served."""
    app = strict.app
    assert strict.get("/fhir/Organization").status_code == 200  # its token is known-valid now
    tokens = app.state.tokens  # type: ignore[attr-defined]
    checks: list[str] = []
    verify = tokens.verify

    def counting_verify(token: str, **kw: Any) -> Any:
        checks.append(token)
        return verify(token, **kw)

    monkeypatch.setattr(tokens, "verify", counting_verify)
    attacker = TestClient(app, base_url="http://gateway.test", client=("203.0.113.9", 40000))
    forged = {"Authorization": f"Bearer {_forged_token(app, 'gateway-admin')}"}
    flood = [attacker.get("/fhir/Organization", headers=forged) for _ in range(20)]
    assert flood[0].status_code == 401  # the bucket of one: checked, refused, charged
    assert issue(flood[0])["code"] == "security"
    assert {r.status_code for r in flood[1:]} == {429}
    assert len(checks) == 20, "every token is verified: the 429 is for failures only"
    assert int(flood[1].headers["retry-after"]) >= 1
    assert issue(flood[1])["code"] == "throttled"
    assert "failed authentications" in issue(flood[1])["diagnostics"]
    assert attacker.get("/fhir/Organization").status_code == 429  # no token at all: also refused
    metrics = strict.get("/metrics").text
    throttled = [
        ln for ln in metrics.splitlines() if ln.startswith('gateway_http_throttled_total{kind="address"}')
    ]
    assert throttled and float(throttled[0].split()[-1]) >= 20

    # a new, valid token from the flooding address (another client behind the same proxy)
    neighbour = TestClient(app, base_url="http://gateway.test", client=("203.0.113.9", 40001))
    authorize(neighbour, "welzijn-de-brug-cms")
    assert not tokens.is_known(neighbour.headers["Authorization"].removeprefix("Bearer "))
    assert neighbour.get("/fhir/Organization").status_code == 200
    # a known-valid token too
    attacker.headers["Authorization"] = strict.headers["Authorization"]
    assert attacker.get("/fhir/Organization").status_code == 200
    # and the failures go on being refused
    assert attacker.get("/fhir/Organization", headers=forged).status_code == 429

    # the token endpoint: a bad assertion from there is throttled, a valid one gets its token
    bad = _assertion_form(app, "praktijk-de-geinoord-his")
    bad["client_assertion"] = bad["client_assertion"][:-8] + "AAAAAAAA"
    refused = attacker.post("/auth/token", data=bad)
    assert refused.status_code == 429 and refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["cache-control"] == "no-store"
    granted = attacker.post("/auth/token", data=_assertion_form(app, "praktijk-de-geinoord-his"))
    assert granted.status_code == 200, granted.text
    fresh = {"Authorization": f"Bearer {granted.json()['access_token']}"}
    assert attacker.get("/fhir/Organization", headers=fresh).status_code == 200


def test_rate_limit_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "GATEWAY_RATE_LIMIT_PER_SECOND": "2.5",
            "GATEWAY_RATE_LIMIT_BURST": "7",
            "GATEWAY_RATE_LIMIT_AUTH_FAILURES_PER_SECOND": "0.5",
            "GATEWAY_MAX_JSON_DEPTH": "9",
        }
    )
    assert (settings.rate_limit_per_second, settings.rate_limit_burst, settings.max_json_depth) == (2.5, 7, 9)
    assert settings.rate_limit_auth_failures_per_second == 0.5


def test_rate_limit_zero_is_off(sqlite_url: str) -> None:
    with make_client(sqlite_url, rate_limit_per_second=0, rate_limit_burst=1) as c:
        assert [c.get("/fhir/metadata").status_code for _ in range(30)] == [200] * 30
        bad = {"Authorization": "Bearer not-a-token"}
        assert [c.get("/fhir/Organization", headers=bad).status_code for _ in range(10)] == [401] * 10


# -- a real uvicorn server through the corpus: still up, memory bounded --------------------------------
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _declared_but_unsent(base: str, headers: dict[str, str], size: int) -> bytes:
    """Headers announcing `size` bytes and no body: answered from Content-Length alone."""
    host, port = base.removeprefix("http://").split(":")
    lines = ["POST /fhir/Patient HTTP/1.1", f"Host: {host}", f"Content-Length: {size}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return s.recv(65536)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    tmp = tmp_path_factory.mktemp("served")
    port = free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gw.db'}", "GATEWAY_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not become ready")
    yield base, proc
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.e2e
def test_a_real_server_survives_the_corpus_with_bounded_memory(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, proc = served
    headers = {**bearer(base, "praktijk-de-geinoord-his"), "content-type": "application/fhir+json"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as warm:
        for _ in range(3):  # load the validator and models before the baseline
            assert warm.post("/fhir", content=orjson.dumps(referral_bundle())).status_code == 200
            assert warm.post("/fhir/Patient", content=deep(10_000)).status_code == 400
    before = _rss_kib(proc.pid)

    over_limit = b'{"resourceType":"Patient","x":"' + b"a" * (12 * MB) + b'"}'

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(over_limit), 256 * 1024):
            yield over_limit[i : i + 256 * 1024]

    cases: list[tuple[str, Callable[[], Any], int]] = [
        ("/fhir/Patient", lambda: over_limit, 413),
        ("/fhir/Patient", chunked, 413),
        ("/fhir", lambda: huge_bundle(100_000), 413),
        ("/fhir/Patient", lambda: deep(10_000), 400),
        ("/fhir/Patient", lambda: b'{"a":1,"a":2}', 400),
        ("/fhir/Patient", lambda: bytes(RNG.randrange(256) for _ in range(4096)), 400),
        ("/v2", lambda: b"MSH|^~\\&|A|B\r" + b"x" * (2 * MB), 413),
    ]

    def one(case: tuple[str, Callable[[], Any], int]) -> tuple[int, int]:
        path, body, expected = case
        extra = ER7 if path == "/v2" else {}
        with httpx.Client(base_url=base, headers={**headers, **extra}, timeout=60) as c:
            return c.post(path, content=body()).status_code, expected

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, cases * 6))  # 42 hostile requests, 8 at a time
    assert all(got == expected for got, expected in results), results
    status = _declared_but_unsent(base, {"Authorization": headers["Authorization"]}, 50 * MB)
    assert status.startswith(b"HTTP/1.1 413"), status[:200]

    after = _rss_kib(proc.pid)
    assert proc.poll() is None
    assert httpx.get(f"{base}/healthz").status_code == 200
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        assert c.post("/fhir", content=orjson.dumps(referral_bundle())).status_code == 200
    print(f"server RSS before {before // 1024} MiB, after {after // 1024} MiB")
    assert after - before < 100 * 1024, (before, after)  # 8 buffered 12 MB bodies: about +125 MiB
