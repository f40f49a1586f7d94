"""FHIR XML in and out: official R4 examples round-trip, the referral loop in XML over HTTP on
SQLite and PostgreSQL, and the strict-JSON guards' intent for XML (no DTD, no entities, no
silently dropped elements, the Bundle entry cap)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from fhir_gateway.fhir import xml as fhir_xml
from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.fhir.strict_json import JsonLimits
from tests.conftest import make_client
from tests.wor import DE_BRUG, load_directory, patient

ROOT = Path(__file__).resolve().parents[2]
R4 = ROOT / "tests" / "data" / "r4"
REFERRAL_XML = ROOT / "examples" / "scenarios" / "01-referral-bundle.xml"
XML = {"content-type": "application/fhir+xml", "accept": "application/fhir+xml"}
LIMITS = JsonLimits()


def _canonical_narrative(doc: Any) -> Any:
    """`text.div` compared as XHTML, not as characters (`&quot;` and `"` are the same text)."""
    if isinstance(doc, dict):
        return {
            k: etree.tostring(etree.fromstring(v), method="c14n")
            if k == "div" and isinstance(v, str)
            else _canonical_narrative(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_canonical_narrative(v) for v in doc]
    return doc


@pytest.mark.parametrize("path", sorted(R4.glob("*.json")), ids=lambda p: p.stem)
def test_official_r4_examples_survive_json_xml_json(path: Path) -> None:
    # tests/data/r4 holds the official examples in JSON only: their XML is made by the library
    original = json.loads(path.read_bytes())
    xml = fhir_xml.dumps(original)
    assert etree.QName(etree.fromstring(xml)).localname == original["resourceType"]
    assert _canonical_narrative(fhir_xml.loads(xml, LIMITS)) == _canonical_narrative(original)


def test_the_xml_example_is_the_json_example() -> None:
    as_json = json.loads(REFERRAL_XML.with_suffix(".json").read_bytes())
    assert fhir_xml.loads(REFERRAL_XML.read_bytes(), LIMITS) == as_json


def _xml(client: TestClient, method: str, url: str, body: bytes | None = None, **headers: str) -> Any:
    resp = client.request(method, url, content=body, headers={**XML, **headers})
    assert resp.headers["content-type"] == "application/fhir+xml; charset=utf-8", resp.text[:300]
    return resp, fhir_xml.loads(resp.content, LIMITS)


@pytest.fixture
def wor(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        load_directory(client)
        yield client


def test_xml_referral_through_the_whole_loop(wor: TestClient) -> None:
    resp, answer = _xml(wor, "POST", "/fhir", REFERRAL_XML.read_bytes())
    assert resp.status_code == 200 and answer["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["201", "201", "201"]
    sr = next(e["resource"] for e in answer["entry"] if e["resource"]["resourceType"] == "ServiceRequest")

    resp, found = _xml(wor, "GET", f"/fhir/Task?focus=ServiceRequest/{sr['id']}")
    assert resp.status_code == 200 and found["resourceType"] == "Bundle"
    task = found["entry"][0]["resource"]
    assert task["owner"]["reference"] == DE_BRUG and task["status"] == "requested"

    # the welfare organisation accepts in XML (update with If-Match), reads it back with _format
    accepted = {**task, "status": "accepted"}
    body = fhir_xml.dumps(accepted)
    version = task["meta"]["versionId"]
    resp, stored = _xml(wor, "PUT", f"/fhir/Task/{task['id']}", body, **{"if-match": f'W/"{version}"'})
    assert resp.status_code == 200, stored
    assert stored["status"] == "accepted"
    read = wor.get(f"/fhir/Task/{task['id']}?_format=xml")
    assert read.headers["content-type"].startswith("application/fhir+xml")
    assert fhir_xml.loads(read.content, LIMITS)["status"] == "accepted"

    # feedback went back to the practice; the JSON view of it is the same as the XML view
    query = f"/fhir/Communication?based-on=ServiceRequest/{sr['id']}"
    _, comms = _xml(wor, "GET", query)
    assert comms["entry"] and comms == wor.get(query).json()

    # a stale If-Match is a 412 OperationOutcome, in XML
    resp, outcome = _xml(wor, "PUT", f"/fhir/Task/{task['id']}", body, **{"if-match": f'W/"{version}"'})
    assert resp.status_code == 412 and outcome["resourceType"] == "OperationOutcome"


def test_xml_create_read_and_search(wor: TestClient) -> None:
    sent = patient(bsn="999999151")
    resp, created = _xml(wor, "POST", "/fhir/Patient", fhir_xml.dumps(sent))
    assert resp.status_code == 201, created
    assert created["name"] == sent["name"] and created["identifier"] == sent["identifier"]
    json_view = wor.get(f"/fhir/Patient/{created['id']}", headers={"accept": "application/json"})
    assert json_view.headers["content-type"] == "application/json; charset=utf-8"
    assert json_view.json() == created


HOSTILE = [
    ("DTD with entities", b'<!DOCTYPE p [<!ENTITY a "aa"><!ENTITY b "&a;&a;">]><Patient xmlns="http://hl7.org/fhir"/>', 400, "structure", "DOCTYPE"),
    ("external entity", b'<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>', 400, "structure", "entity"),
    ("external DTD", b'<!DOCTYPE p SYSTEM "http://127.0.0.1:9/p.dtd"><Patient xmlns="http://hl7.org/fhir"/>', 400, "structure", "DOCTYPE"),
    ("no namespace", b'<Patient><gender value="male"/></Patient>', 400, "structure", "namespace"),
    ("repeated single element", b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="female"/></Patient>', 400, "structure", "only once"),
    ("unknown element", b'<Patient xmlns="http://hl7.org/fhir"><hairColour value="red"/></Patient>', 400, "structure", "hairColour"),
    ("bad date", b'<Patient xmlns="http://hl7.org/fhir"><birthDate value="12-04-1961"/></Patient>', 400, "value", "birthDate"),
    ("not well-formed", b'<Patient xmlns="http://hl7.org/fhir"><name>', 400, "structure", "well-formed"),
    ("control character", b'<Patient xmlns="http://hl7.org/fhir"><name><family value="a&#0;b"/></name></Patient>', 400, "structure", "well-formed"),
    ("unsupported type", b'<Observation xmlns="http://hl7.org/fhir"><status value="final"/></Observation>', 400, "invalid", "Observation"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "code", "text"), [pytest.param(*c[1:], id=c[0]) for c in HOSTILE])
def test_hostile_xml_gets_an_xml_operation_outcome(
    client: TestClient, body: bytes, status: int, code: str, text: str
) -> None:
    resp, outcome = _xml(client, "POST", "/fhir/Patient", body)
    assert resp.status_code == status, outcome
    issue = outcome["issue"][0]
    assert issue["code"] == code and text in issue["diagnostics"] + str(issue.get("expression"))


def test_too_many_bundle_entries_are_refused_before_reading() -> None:
    entry = b"<entry><request><method value='GET'/><url value='Patient'/></request></entry>"
    body = b'<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/>' + entry * 3 + b"</Bundle>"
    with pytest.raises(FhirError) as refused:
        fhir_xml.loads(body, JsonLimits(max_bundle_entries=2))
    assert refused.value.status == 413


def test_xml_patch_is_not_offered(client: TestClient) -> None:
    resp = client.patch(
        "/fhir/Patient/x", content=b"<Parameters/>", headers=XML | {"accept": "application/json"}
    )
    assert resp.status_code == 415


def test_values_keep_their_text_and_primitive_extensions_survive() -> None:
    """The stored text comes back as sent (the library's writer turns `Z` into `+00:00`: a client
    sending back what it read would be told it changed the value)."""
    doc = {
        "resourceType": "Task",
        "id": "t1",
        "status": "requested",
        "intent": "order",
        "authoredOn": "2026-12-04T15:13:00.120Z",
        "_authoredOn": {"id": "a1", "extension": [{"url": "http://example.org/x", "valueBoolean": True}]},
        "input": [{"type": {"text": "n"}, "valueDecimal": 1.5}],
        "note": [{"text": "x"}],
        "extension": [{"url": "http://example.org/y", "valueInteger": 3}],
    }
    patient_doc = {
        "resourceType": "Patient",
        "name": [{"given": ["A", None], "_given": [None, {"id": "g2"}]}],
    }
    for original in (doc, patient_doc):
        xml = fhir_xml.dumps(original)
        assert fhir_xml.loads(xml, LIMITS) == original, xml
    assert b'value="2026-12-04T15:13:00.120Z"' in fhir_xml.dumps(doc)
    assert b'<extension url="http://example.org/y"><valueInteger value="3"/>' in fhir_xml.dumps(doc)
