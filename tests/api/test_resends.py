"""Resends and reused identifiers; every error of a request in one answer (issue "Meet partners
where they are", items 3 and 10). Over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, make_client
from tests.wor import FHIR_JSON, fresh_bsn, load_directory, referral_bundle


@pytest.fixture
def wor(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        load_directory(client)
        yield client


def count(client: TestClient, query: str) -> int:
    return int(client.get(f"/fhir/{query}", params={"_summary": "count"}).json()["total"])


def test_a_resend_with_the_same_content_answers_the_original_with_location_and_etag(wor: TestClient) -> None:
    doc = referral_bundle("RS-SAME-1")
    first = wor.post("/fhir", json=doc, headers=FHIR_JSON)
    assert first.status_code == 200, first.text
    again = referral_bundle("RS-SAME-1")  # new urn:uuid fullUrls, as a HIS makes them every time
    resp = wor.post("/fhir", json=again, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    for before, after in zip(first.json()["entry"], resp.json()["entry"], strict=True):
        assert after["resource"]["id"] == before["resource"]["id"]
        assert after["response"]["status"] == "200 OK"
        assert after["response"]["location"] == before["response"]["location"]
        assert after["response"]["etag"]
    assert count(wor, "ServiceRequest") == 1 and count(wor, "Task") == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda doc: doc["entry"][0]["resource"]["identifier"][0].update(value=fresh_bsn()), "patient"),
        (lambda doc: doc["entry"][0]["resource"]["address"][0].update(postalCode="3404 AA"), "postcode"),
        (lambda doc: doc["entry"][2]["resource"].update(priority="urgent"), "referral"),
    ],
)
def test_a_reused_identifier_with_other_content_is_a_409_naming_it(
    wor: TestClient, change: Any, where: str
) -> None:
    assert wor.post("/fhir", json=referral_bundle("RS-REUSE-1"), headers=FHIR_JSON).status_code == 200
    other = referral_bundle("RS-REUSE-1")
    change(other)
    resp = wor.post("/fhir", json=other, headers=FHIR_JSON)
    assert resp.status_code == 409, (where, resp.text)
    issue = resp.json()["issue"][0]
    assert issue["code"] == "conflict" and issue["expression"] == ["Bundle.entry[2].resource.identifier"]
    assert "RS-REUSE-1" in issue["diagnostics"]
    assert count(wor, "ServiceRequest") == 1 and count(wor, "Task") == 1


def test_a_rest_create_reusing_an_identifier_with_other_content_is_a_409(wor: TestClient) -> None:
    first = wor.post("/fhir", json=referral_bundle("RS-REST-1"), headers=FHIR_JSON).json()
    sr = copy.deepcopy(first["entry"][2]["resource"])
    for key in ("id", "meta"):
        del sr[key]
    sr["identifier"][0]["value"] = "RS-REST-2"  # its own referral by REST create, then resent
    created = wor.post("/fhir/ServiceRequest", json=sr, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    again = wor.post("/fhir/ServiceRequest", json=sr, headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    sr["priority"] = "urgent"
    ident = sr["identifier"][0]
    for headers in ({}, {"If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}):
        resp = wor.post("/fhir/ServiceRequest", json=sr, headers={**FHIR_JSON, **headers})
        assert resp.status_code == 409, resp.text
        assert resp.json()["issue"][0]["expression"] == ["ServiceRequest.identifier"]


def test_a_resend_whose_patient_is_invalid_is_refused_with_the_error(wor: TestClient) -> None:
    """The Patient is matched by ifNoneExist and the referral is a resend: nothing is written,
    but what was posted is still validated."""
    assert wor.post("/fhir", json=referral_bundle("RS-BAD-1"), headers=FHIR_JSON).status_code == 200
    again = referral_bundle("RS-BAD-1")
    again["entry"][0]["resource"]["gender"] = "vrouw"
    resp = wor.post("/fhir", json=again, headers=FHIR_JSON)
    assert 400 <= resp.status_code < 500, resp.text
    expressions = [i["expression"][0] for i in resp.json()["issue"]]
    assert "Bundle.entry[0].resource.gender" in expressions


def test_every_error_of_every_entry_in_one_outcome(wor: TestClient) -> None:
    doc = referral_bundle("RS-TWO-BAD-1")
    doc["entry"][0]["resource"]["birthDate"] = "14-03-1972"  # base: not a FHIR date
    doc["entry"][0]["resource"]["gender"] = "vrouw"  # binding: hidden behind the base error before
    doc["entry"][2]["resource"]["intent"] = "wish"  # another entry's binding
    resp = wor.post("/fhir", json=doc, headers=FHIR_JSON)
    assert resp.status_code == 400, resp.text
    expressions = {i["expression"][0] for i in resp.json()["issue"]}
    assert {
        "Bundle.entry[0].resource.birthDate",
        "Bundle.entry[0].resource.gender",
        "Bundle.entry[2].resource.intent",
    } <= expressions, expressions
    assert count(wor, "Patient") == 0


def test_a_single_create_reports_base_and_profile_errors_together(wor: TestClient) -> None:
    doc = referral_bundle()["entry"][0]["resource"]
    doc.update(birthDate="14-03-1972", gender="vrouw")
    resp = wor.post("/fhir/Patient", json=doc, headers=FHIR_JSON)
    assert resp.status_code == 400, resp.text
    expressions = {i["expression"][0] for i in resp.json()["issue"]}
    assert {"Patient.birthDate", "Patient.gender"} <= expressions, expressions


# -- v2 ---------------------------------------------------------------------------------------------
def _message(control_id: bytes, bsn: bytes) -> bytes:
    good = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes().replace(b"\n", b"\r")
    return good.replace(b"BATAU-000123", control_id).replace(b"999911120", bsn)


def test_v2_resends_and_a_reused_referral_number(wor: TestClient) -> None:
    from fhir_gateway.security.clients import get_client
    from fhir_gateway.v2.inbound import parse
    from fhir_gateway.v2.senders import registered_sender

    registration = get_client(wor.app.state.ctx.database, "praktijk-batau-his")  # type: ignore[attr-defined]
    assert registration is not None
    sender = registered_sender(registration, "test")
    service = wor.app.state.v2  # type: ignore[attr-defined]
    bsn = fresh_bsn().encode()
    first = service.handle(_message(b"RS-V2-1", bsn), sender)
    assert parse(first).segment("MSA").value(1) == "AA", first  # type: ignore[union-attr]
    assert service.handle(_message(b"RS-V2-1", bsn), sender) == first  # the journal's answer
    same = parse(service.handle(_message(b"RS-V2-2", bsn), sender))  # new control id, same referral
    assert same.segment("MSA").value(1) == "AA", same.to_er7()  # type: ignore[union-attr]
    other = parse(service.handle(_message(b"RS-V2-3", fresh_bsn().encode()), sender))  # other patient
    assert other.segment("MSA").value(1) in ("AE", "AR"), other.to_er7()  # type: ignore[union-attr]
    er7 = other.to_er7()
    assert "ERR||RF1^1^6" in er7 and "REF-2026-0001" in er7, er7
    assert count(wor, "ServiceRequest") == 1 and count(wor, "Task") == 1
