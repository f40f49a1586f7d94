"""CORS (`GATEWAY_CORS_ORIGINS`) and gzip, as a browser app and a FHIR client see the headers.

CORS: a preflight from an allowed origin is answered before authentication (it never carries
a token); an origin not on the list gets no CORS header at all; refusals from the middleware
(401, 429) carry the CORS headers too, so a browser app can read why. gzip: a big Bundle is
compressed when asked for and only then, in JSON and XML, and the FHIR ETag is unchanged.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_gateway.api.transport import GZIP_MINIMUM_BYTES, cors_origins
from fhir_gateway.fhir import xml as fhir_xml
from fhir_gateway.fhir.strict_json import JsonLimits
from fhir_gateway.settings import Settings
from fhir_gateway.vocabulary import AGB
from tests.api import authorisation as matrix
from tests.conftest import authorize, make_client

APP = "https://wijkapp.example.nl"
OTHER = "https://elders.example.com"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "PUT",
    "Access-Control-Request-Headers": "authorization, content-type, if-match, prefer",
}
FHIR_JSON = {"content-type": "application/fhir+json"}


def organization(i: int, name: str, **more: Any) -> dict[str, Any]:
    identifier = [{"system": AGB, "value": f"{87_000_000 + i}"}]
    return {"resourceType": "Organization", "identifier": identifier, "name": name, **more}


def cors_headers(resp: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


@pytest.fixture
def browser_api(sqlite_url: str) -> Iterator[TestClient]:
    """A gateway that lets one browser origin in; requests carry no token unless authorised."""
    with make_client(sqlite_url, client_id=None, cors_origins=f" {APP}/ , https://second.example.nl") as c:
        yield c


def test_the_setting_is_a_comma_separated_list() -> None:
    settings = Settings.from_env({"GATEWAY_CORS_ORIGINS": "https://a.example.nl/, ,https://b.example.nl"})
    assert cors_origins(settings) == ["https://a.example.nl", "https://b.example.nl"]
    assert cors_origins(Settings()) == []  # off by default


def test_cors_is_off_by_default(client: TestClient) -> None:
    client.headers.pop("Authorization")
    resp = client.options("/fhir/Task/1", headers=PREFLIGHT)
    assert resp.status_code == 401  # as before: an OPTIONS without a token
    assert cors_headers(resp) == {}
    assert cors_headers(client.get("/fhir/metadata", headers={"Origin": APP})) == {}


@pytest.mark.parametrize("path", ["/fhir/Task/1", "/fhir", "/fhir/Task/_search", "/admin/outbox"])
def test_a_preflight_from_an_allowed_origin_needs_no_token(browser_api: TestClient, path: str) -> None:
    resp = browser_api.options(path, headers=PREFLIGHT)
    assert resp.status_code == 200, resp.text
    h = cors_headers(resp)
    assert h["access-control-allow-origin"] == APP
    assert "PUT" in h["access-control-allow-methods"].split(", ")
    allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
    assert {
        "authorization",
        "content-type",
        "if-match",
        "if-none-exist",
        "if-none-match",
        "prefer",
    } <= allowed
    assert int(h["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in h  # bearer tokens, never cookies


def test_a_preflight_for_a_header_not_allowed_is_refused(browser_api: TestClient) -> None:
    resp = browser_api.options(
        "/fhir/Task/1", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-evil"}
    )
    assert resp.status_code == 400


@pytest.mark.parametrize("method", ["OPTIONS", "GET"])
def test_an_origin_not_on_the_list_gets_no_cors_header(browser_api: TestClient, method: str) -> None:
    resp = browser_api.request(method, "/fhir/Task/1", headers={**PREFLIGHT, "Origin": OTHER})
    assert resp.status_code == 401  # treated like any request without a token
    assert cors_headers(resp) == {}


def test_answers_to_an_allowed_origin_expose_what_fhir_clients_read(browser_api: TestClient) -> None:
    authorize(browser_api, "gateway-admin")
    body = organization(999, "Buurtteam Zuid")
    created = browser_api.post("/fhir/Organization", json=body, headers={**FHIR_JSON, "Origin": APP})
    assert created.status_code == 201, created.text
    h = cors_headers(created)
    assert h["access-control-allow-origin"] == APP
    exposed = {x.strip().lower() for x in h["access-control-expose-headers"].split(",")}
    assert {"etag", "location", "content-location", "last-modified"} <= exposed
    assert "Origin" in created.headers["vary"]
    assert created.headers["location"] and created.headers["etag"]


def test_a_refusal_by_the_middleware_carries_cors_headers(sqlite_url: str) -> None:
    with make_client(
        sqlite_url,
        client_id=None,
        cors_origins=APP,
        rate_limit_per_second=100,
        rate_limit_auth_failures_per_second=0.01,
    ) as c:
        unauthorised = c.get("/fhir/Task", headers={"Origin": APP})
        throttled = c.get("/fhir/Task", headers={"Origin": APP})
    assert unauthorised.status_code == 401 and throttled.status_code == 429
    for resp in (unauthorised, throttled):
        assert cors_headers(resp)["access-control-allow-origin"] == APP
        exposed = cors_headers(resp)["access-control-expose-headers"].lower()
        assert ("www-authenticate" if resp.status_code == 401 else "retry-after") in exposed


def test_the_preflight_cells_of_the_authorisation_matrix(sqlite_url: str, browser_api: TestClient) -> None:
    def outcome(resp: httpx.Response) -> str:
        h = cors_headers(resp)
        if resp.status_code == 200 and h.get("access-control-allow-origin") == APP:
            return "200 allowed"
        if resp.status_code == 401 and not h and "Origin" in PREFLIGHT:
            return "401 no CORS headers"
        return str(resp.status_code)

    with make_client(sqlite_url, client_id=None) as off:
        seen = {
            "`GATEWAY_CORS_ORIGINS` empty (the default)": str(
                off.options("/fhir/Task", headers=PREFLIGHT).status_code
            )
        }
    for path in ("/fhir/Task", "/fhir/Patient/1", "/admin/outbox", "/v2"):
        bad_header = {**PREFLIGHT, "Access-Control-Request-Headers": "x-other"}
        seen["origin listed"] = outcome(browser_api.options(path, headers=PREFLIGHT))
        seen["origin listed, a request header not allowed"] = outcome(
            browser_api.options(path, headers=bad_header)
        )
        seen["origin not listed"] = outcome(browser_api.options(path, headers={**PREFLIGHT, "Origin": OTHER}))
        assert seen == matrix.PREFLIGHT, path
    public = browser_api.options("/console/referrals", headers={**PREFLIGHT, "Origin": OTHER})
    assert public.status_code == 405 and not cors_headers(public)  # no token needed, no OPTIONS route


# -- gzip -----------------------------------------------------------------------------------------
@pytest.fixture
def many(client: TestClient) -> TestClient:
    """Forty Organizations: a search Bundle of them is well over the 1000-byte threshold."""
    entries = [
        {
            "resource": organization(i, f"Welzijnsorganisatie nummer {i}"),
            "request": {"method": "POST", "url": "Organization"},
        }
        for i in range(40)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    return client


def raw_get(client: TestClient, url: str, encoding: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """The answer and its bytes as they came over the wire (not decoded by httpx)."""
    with client.stream("GET", url, headers={"Accept-Encoding": encoding, **headers}) as resp:
        return resp, b"".join(resp.iter_raw())


def comparable(bundle: dict[str, Any]) -> list[Any]:
    return [e["resource"] for e in bundle["entry"]]


def test_a_big_search_bundle_is_gzipped_only_when_asked(many: TestClient) -> None:
    url = "/fhir/Organization?_count=100&_sort=_id"
    plain, plain_bytes = raw_get(many, url, "identity")
    packed, packed_bytes = raw_get(many, url, "gzip, deflate")
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["vary"]
    assert packed.headers["content-type"] == plain.headers["content-type"]
    assert len(packed_bytes) < len(plain_bytes) / 3
    decoded = gzip.decompress(packed_bytes)
    assert int(packed.headers["content-length"]) == len(packed_bytes)
    same, bundle = orjson.loads(decoded), orjson.loads(plain_bytes)
    assert len(bundle["entry"]) >= 40
    assert comparable(same) == comparable(bundle)


def test_a_big_xml_bundle_is_gzipped_and_decodes_to_the_same_fhir(many: TestClient) -> None:
    url = "/fhir/Organization?_count=100&_sort=_id"
    _, json_bytes = raw_get(many, url, "identity")
    packed, packed_bytes = raw_get(many, url + "&_format=xml", "gzip")
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("application/fhir+xml")
    from_xml = fhir_xml.loads(gzip.decompress(packed_bytes), JsonLimits(64, 1000))
    assert comparable(from_xml) == comparable(orjson.loads(json_bytes))


def test_small_answers_and_errors_stay_plain_and_readable(many: TestClient) -> None:
    resp, raw = raw_get(many, "/fhir/Organization?unknown-parameter=1", "gzip", Prefer="handling=strict")
    assert resp.status_code == 400
    assert "content-encoding" not in resp.headers  # an OperationOutcome is small
    assert orjson.loads(raw)["resourceType"] == "OperationOutcome"
    many.headers.pop("Authorization")
    resp, raw = raw_get(many, "/fhir/Organization", "gzip", Accept="application/fhir+xml")
    assert resp.status_code == 401 and b"OperationOutcome" in raw


def test_gzip_keeps_the_fhir_etag_and_conditional_reads(many: TestClient) -> None:
    big = organization(998, "Groot", alias=[f"alias {i} " * 8 for i in range(30)])
    created = many.post("/fhir/Organization", json=big, headers=FHIR_JSON).json()
    url = f"/fhir/Organization/{created['id']}"
    plain, _ = raw_get(many, url, "identity")
    packed, packed_bytes = raw_get(many, url, "gzip")
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["etag"] == plain.headers["etag"] == 'W/"1"'  # weak: unchanged by gzip
    assert orjson.loads(gzip.decompress(packed_bytes))["alias"] == big["alias"]
    again, raw = raw_get(many, url, "gzip", **{"If-None-Match": packed.headers["etag"]})
    assert again.status_code == 304 and raw == b""


def test_nothing_under_console_is_compressed(many: TestClient) -> None:
    """Console pages hold the CSRF value beside reflected search terms (BREACH): the whole
    prefix is left alone (here its stylesheet, big enough to be compressed elsewhere)."""
    resp, raw = raw_get(many, "/console/static/console.css", "gzip")
    assert resp.status_code == 200 and "content-encoding" not in resp.headers
    assert len(raw) >= GZIP_MINIMUM_BYTES
    assert raw_get(many, "/console/login", "gzip")[0].headers.get("content-encoding") is None
