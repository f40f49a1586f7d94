"""Batch and transaction Bundles: all-or-nothing, urn:uuid references, ifNoneExist."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi.testclient import TestClient

from tests.conftest import FHIR_JSON
from tests.wor import patient

PATIENT_URN = "urn:uuid:6f1c4c2e-8a5d-4b1e-9a57-0c1f7a9b8e01"


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def questionnaire_bundle() -> dict[str, Any]:
    """A QuestionnaireResponse that points at a Patient created in the same transaction."""
    return transaction(
        post_entry(
            {
                "resourceType": "QuestionnaireResponse",
                "status": "completed",
                "subject": {"reference": PATIENT_URN},
            },
            "urn:uuid:0b3e9f7c-1111-4c5e-8a2b-3f4d5e6a7b8c",
        ),
        post_entry(
            patient(), PATIENT_URN, ifNoneExist="identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"
        ),
    )


def test_transaction_resolves_urn_references(any_client: TestClient) -> None:
    resp = any_client.post("/fhir", json=questionnaire_bundle(), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    qr_location = body["entry"][0]["response"]["location"]
    patient_id = body["entry"][1]["resource"]["id"]
    qr = any_client.get(qr_location.replace("http://gateway.test", "")).json()
    assert qr["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_if_none_exist_reuses_existing(any_client: TestClient) -> None:
    first = any_client.post("/fhir", json=questionnaire_bundle(), headers=FHIR_JSON).json()
    second = any_client.post("/fhir", json=questionnaire_bundle(), headers=FHIR_JSON).json()
    assert second["entry"][1]["response"]["status"] == "200 OK"
    assert first["entry"][1]["resource"]["id"] == second["entry"][1]["resource"]["id"]
    qr = second["entry"][0]["resource"]
    assert qr["subject"]["reference"] == f"Patient/{first['entry'][1]['resource']['id']}"
    assert any_client.get("/fhir/Patient?_summary=count").json()["total"] == 1


def test_transaction_is_all_or_nothing(any_client: TestClient) -> None:
    bad = transaction(
        post_entry(patient()),
        post_entry({**patient(), "birthDate": "not-a-date"}),
    )
    resp = any_client.post("/fhir", json=bad, headers=FHIR_JSON)
    assert resp.status_code == 400
    issue = resp.json()["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[1]")
    assert issue["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert any_client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_transaction_stale_update_rolls_back_everything(any_client: TestClient) -> None:
    created = any_client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    bundle = transaction(
        post_entry({"resourceType": "Location", "name": "Should not stay"}),
        {
            "resource": {**created, "gender": "male"},
            "request": {"method": "PUT", "url": f"Patient/{created['id']}", "ifMatch": 'W/"7"'},
        },
    )
    resp = any_client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 412
    assert any_client.get("/fhir/Location?_summary=count").json()["total"] == 0


def test_transaction_patch_delete_and_read_entries(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    other = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    patch = [{"op": "add", "path": "/gender", "value": "female"}]
    bundle = transaction(
        {
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": base64.b64encode(orjson.dumps(patch)).decode(),
            },
            "request": {"method": "PATCH", "url": f"Patient/{created['id']}"},
        },
        {"request": {"method": "DELETE", "url": f"Patient/{other['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
    )
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.json()
    entries = resp.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "204 No Content", "200 OK"]
    assert entries[2]["resource"]["gender"] == "female"
    assert client.get(f"/fhir/Patient/{other['id']}").status_code == 410


def test_batch_entries_succeed_and_fail_independently(client: TestClient) -> None:
    bundle = transaction(
        post_entry(patient()),
        post_entry({**patient(), "bogus": True}),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        kind="batch",
    )
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses == ["201 Created", "400", "404"]
    assert resp.json()["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "structure"


def test_bundle_errors(client: TestClient) -> None:
    coll = client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR_JSON)
    assert coll.status_code == 400 and coll.json()["issue"][0]["expression"] == ["Bundle.type"]
    no_request = client.post(
        "/fhir", json=transaction({"resource": {"resourceType": "Patient"}}), headers=FHIR_JSON
    )
    assert no_request.status_code == 400
    unknown = transaction(post_entry({"resourceType": "Bogus"}))
    resp = client.post("/fhir", json=unknown, headers=FHIR_JSON)
    assert resp.status_code == 404, resp.text
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    dup = transaction(
        post_entry({"resourceType": "Patient"}, "urn:uuid:a"),
        post_entry({"resourceType": "Patient"}, "urn:uuid:a"),
    )
    assert client.post("/fhir", json=dup, headers=FHIR_JSON).json()["issue"][0]["code"] == "duplicate"


def test_conditional_urls_name_entries_by_whole_values(any_client: TestClient) -> None:
    """request.url values that ARE an entry's fullUrl become its Type/id — every one of them, in
    OR lists and percent-encoded too — and a fullUrl inside a longer value is not touched."""
    from urllib.parse import quote

    from tests.wor import VALID_BSNS, consent

    one, two = "http://his.example/fhir/Patient/1", "http://his.example/fhir/Patient/12"
    entries = [
        post_entry(patient(bsn=VALID_BSNS[0]), one),
        post_entry(patient(bsn=VALID_BSNS[1]), two),
        post_entry(consent(one)),
        post_entry(consent(two)),
        {"request": {"method": "GET", "url": f"Consent?patient={one},{quote(two, safe='')}"}},
        {"request": {"method": "GET", "url": f"Consent?patient={two}&status=active"}},
    ]
    resp = any_client.post("/fhir", json=transaction(*entries), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.json()
    body = resp.json()["entry"]
    ids = [body[0]["resource"]["id"], body[1]["resource"]["id"]]

    def patients(i: int) -> list[str]:
        found = body[i]["resource"].get("entry", [])
        return sorted(e["resource"]["patient"]["reference"] for e in found)

    assert patients(4) == sorted(f"Patient/{i}" for i in ids)  # both values rewritten
    assert patients(5) == [f"Patient/{ids[1]}"]  # …/Patient/12 is not …/Patient/1 + "2"
