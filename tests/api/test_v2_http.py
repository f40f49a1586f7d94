"""POST /v2 (ER7 over HTTP) mounted on the real app: ACK in the body, 415 for other types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.loading import load_files
from fhir_gateway.v2.inbound import parse
from tests.conftest import make_client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
ER7 = "x-application/hl7-v2+er7"


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
    body = (EXAMPLES / "ref-i12-v24.hl7").read_bytes()
    resp = http.post("/v2", content=body, headers={"content-type": content_type})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(content_type.split(";")[0])
    assert _msa(resp.content) == ("AA", "HHIJ-20261105-0042")


def test_duplicate_over_http_returns_the_original_ack(http: TestClient) -> None:
    body = (EXAMPLES / "ref-i12-escapes.hl7").read_bytes()
    first = http.post("/v2", content=body, headers={"content-type": ER7})
    second = http.post("/v2", content=body, headers={"content-type": ER7})
    assert first.content == second.content and _msa(first.content)[0] == "AA"
    found = http.get("/fhir/ServiceRequest", params={"identifier": "GEIN-VW-7781", "_summary": "count"})
    assert found.json()["total"] == 1


def test_errors_are_http_200_with_ae_or_ar_inside(http: TestClient) -> None:
    bad = http.post(
        "/v2",
        content=(EXAMPLES / "ref-i12-postcode-not-covered.hl7").read_bytes(),
        headers={"content-type": ER7},
    )
    assert bad.status_code == 200 and _msa(bad.content)[0] == "AE"
    assert b"ERR||PID^1^11^1^5|103^" in bad.content
    garbage = http.post("/v2", content=b"hello", headers={"content-type": ER7})
    assert garbage.status_code == 200 and _msa(garbage.content)[0] == "AR"


def test_other_content_types_get_415(http: TestClient) -> None:
    resp = http.post("/v2", content=b"{}", headers={"content-type": "application/fhir+json"})
    assert resp.status_code == 415
