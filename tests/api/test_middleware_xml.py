"""Refusals made by middleware before any route (401, 413, 429) speak the client's format.

A client that asked for FHIR XML (`Accept`, `_format`, or an XML body) gets its 401, 413 or 429
as an XML OperationOutcome, like the API's own errors; everyone else gets FHIR JSON, also when
what was asked cannot be produced (the refusal wins over the 406).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_gateway.fhir import xml as fhir_xml
from fhir_gateway.fhir.strict_json import JsonLimits
from tests.conftest import make_client

XML = "application/fhir+xml"


def outcome(resp: httpx.Response) -> dict[str, object]:
    """The OperationOutcome in whichever type it came, checked against its Content-Type."""
    media = resp.headers["content-type"].split(";")[0]
    if media in (XML, "application/xml"):
        assert resp.content.lstrip().startswith(b"<")
        return fhir_xml.loads(resp.content, JsonLimits())  # type: ignore[no-any-return]
    assert media == "application/fhir+json", media
    return orjson.loads(resp.content)  # type: ignore[no-any-return]


@pytest.fixture
def anonymous(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url, client_id=None, max_body_bytes=2000) as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "query", "media"),
    [
        ({"Accept": XML}, "", XML),
        ({"Accept": "application/xml"}, "", "application/xml"),
        ({}, "?_format=xml", XML),
        ({"Accept": "application/fhir+json"}, "", "application/fhir+json"),
        ({}, "", "application/fhir+json"),
        ({"Accept": "text/csv"}, "", "application/fhir+json"),  # not producible: JSON, still 401
    ],
)
def test_401_in_the_format_asked_for(
    anonymous: TestClient, headers: dict[str, str], query: str, media: str
) -> None:
    resp = anonymous.get(f"/fhir/Task{query}", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith(media)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    body = outcome(resp)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"  # type: ignore[index]


def test_413_for_an_xml_body_is_xml(sqlite_url: str) -> None:
    big = b"<Patient xmlns='http://hl7.org/fhir'>" + b" " * 5000 + b"</Patient>"
    with make_client(sqlite_url, max_body_bytes=2000) as client:
        resp = client.post("/fhir/Patient", content=big, headers={"Content-Type": XML})
        as_json = client.post(
            "/fhir/Patient",
            content=b"{" + b" " * 5000 + b"}",
            headers={"Content-Type": "application/fhir+json"},
        )
    assert resp.status_code == 413
    assert resp.headers["content-type"].startswith(XML)
    issue = outcome(resp)["issue"][0]  # type: ignore[index]
    assert issue["code"] == "too-costly" and "2000 bytes" in issue["diagnostics"]
    assert as_json.status_code == 413 and outcome(as_json)["resourceType"] == "OperationOutcome"
    assert as_json.headers["content-type"].startswith("application/fhir+json")


def test_429_in_the_format_asked_for(sqlite_url: str) -> None:
    with make_client(sqlite_url, rate_limit_per_second=0.01, rate_limit_burst=1) as client:
        assert client.get("/fhir/Task").status_code == 200  # the one token of this client's bucket
        xml = client.get("/fhir/Task", headers={"Accept": XML})
        json = client.get("/fhir/Task")
    assert xml.status_code == json.status_code == 429
    assert xml.headers["content-type"].startswith(XML) and xml.headers["retry-after"]
    assert outcome(xml)["issue"][0]["code"] == "throttled"  # type: ignore[index]
    assert outcome(json)["issue"][0]["code"] == "throttled"  # type: ignore[index]


def test_the_token_endpoint_and_v2_keep_their_own_refusals(anonymous: TestClient) -> None:
    token = anonymous.post(
        "/auth/token",
        content=b"x" * 70_000,
        headers={"Accept": XML, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 413 and token.json()["error"] == "invalid_request"
