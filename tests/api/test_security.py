"""Authentication, scopes, compartments, consent minimisation and the audit trail, as real clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import authorize, make_client
from tests.wor import (
    DE_BRUG,
    FHIR_JSON,
    WOR,
    load_directory,
    put_task,
    referral_bundle,
    task_for,
)

GP = "praktijk-de-geinoord-his"
OTHER_GP = "praktijk-batau-his"
COACH = "welzijn-de-brug-cms"
OTHER_COACH = "welzijn-ijsselstein-samen-cms"


@pytest.fixture
def gw(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        load_directory(client)
        yield client


def as_(client: TestClient, client_id: str) -> TestClient:
    authorize(client, client_id)
    return client


def refer(client: TestClient, **kwargs: Any) -> dict[str, Any]:
    resp = as_(client, GP).post("/fhir", json=referral_bundle(**kwargs), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    return resp.json()["entry"][2]["resource"]


def count(client: TestClient, query: str) -> int:
    return int(client.get(f"/fhir/{query}", params={"_summary": "count"}).json()["total"])


def test_no_token_is_401_with_challenge(gw: TestClient) -> None:
    resp = gw.get("/fhir/Task", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["issue"][0]["code"] == "login"
    assert gw.get("/fhir/metadata", headers={"Authorization": ""}).status_code == 200


def test_scopes_and_roles(gw: TestClient) -> None:
    as_(gw, COACH)
    resp = gw.post("/fhir", json=referral_bundle(), headers=FHIR_JSON)  # welfare cannot refer
    assert resp.status_code == 403 and resp.json()["issue"][0]["code"] == "forbidden"
    org = gw.get("/fhir/Organization/welzijn-de-brug").json()
    resp = gw.put("/fhir/Organization/welzijn-de-brug", json={**org, "name": "Mine now"}, headers=FHIR_JSON)
    assert resp.status_code == 403  # the directory is maintained by administrators
    assert gw.get("/fhir/AuditEvent").status_code == 403
    assert gw.get("/fhir/Task/_history").status_code == 403


def test_practice_refers_only_as_itself(gw: TestClient) -> None:
    as_(gw, OTHER_GP)
    resp = gw.post("/fhir", json=referral_bundle(), headers=FHIR_JSON)  # requester of De Geinoord
    assert resp.status_code == 403
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.requester"]
    assert count(as_(gw, "gateway-admin"), "ServiceRequest") == 0


def test_compartments_confine_reads_searches_and_includes(gw: TestClient) -> None:
    sr = refer(gw)
    task = task_for(as_(gw, "gateway-admin"), sr["id"])
    # the referring practice and the owning welfare organisation see the loop
    for who in (GP, COACH):
        as_(gw, who)
        assert gw.get(f"/fhir/Task/{task['id']}").status_code == 200
        assert count(gw, "Task") == 1 and count(gw, "ServiceRequest") == 1 and count(gw, "CarePlan") == 1
    # another practice and another welfare organisation see nothing, not even existence
    for who in (OTHER_GP, OTHER_COACH):
        as_(gw, who)
        assert gw.get(f"/fhir/Task/{task['id']}").status_code == 404
        assert gw.get(f"/fhir/ServiceRequest/{sr['id']}").status_code == 404
        assert gw.get(f"/fhir/{sr['subject']['reference']}").status_code == 404
        assert count(gw, "Task") == 0 and count(gw, "CarePlan") == 0
        page = gw.get("/fhir/Task", params={"_count": "1"}).json()
        assert "entry" not in page and not any(link["relation"] == "next" for link in page["link"])
    # _include obeys the same rules: a Task of theirs would not drag ours along
    as_(gw, COACH)
    bundle = gw.get("/fhir/Task", params={"_include": "Task:focus"}).json()
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Task", "ServiceRequest"}


def test_welfare_sees_the_consented_minimum(gw: TestClient) -> None:
    sr = refer(gw)
    as_(gw, COACH)
    patient = gw.get(f"/fhir/{sr['subject']['reference']}").json()
    assert "identifier" not in patient  # no BSN for the social domain
    assert patient["birthDate"]
    assert patient["name"][0]["family"] == "Jansen" and patient["telecom"]  # how to reach them
    assert {"code": "REDACTED"}.items() <= patient["meta"]["security"][0].items()
    shared = gw.get(f"/fhir/ServiceRequest/{sr['id']}").json()
    assert "reasonCode" not in shared  # ICPC codes only with 'diagnosis-codes' consent
    assert shared["note"]  # the social question was consented
    searched = gw.get("/fhir/ServiceRequest", params={"_id": sr["id"]}).json()["entry"][0]["resource"]
    assert "reasonCode" not in searched
    task = task_for(gw, sr["id"])
    assert "Z12" not in str(task)  # nothing derived carries what the consent withholds
    question = [i["valueString"] for i in task["input"] if i["type"].get("text") == "Hulpvraag"]
    assert question == [shared["note"][0]["text"]]  # the consented social question travels with the Task
    as_(gw, GP)  # the practice sees its own referral whole
    assert gw.get(f"/fhir/ServiceRequest/{sr['id']}").json()["reasonCode"]


def test_diagnosis_codes_shared_when_consented(gw: TestClient) -> None:
    bundle = referral_bundle()
    bundle["entry"][1]["resource"]["provision"]["code"].append(
        {"coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "diagnosis-codes"}]}
    )
    resp = as_(gw, GP).post("/fhir", json=bundle, headers=FHIR_JSON)
    sr = resp.json()["entry"][2]["resource"]
    assert (
        as_(gw, COACH).get(f"/fhir/ServiceRequest/{sr['id']}").json()["reasonCode"][0]["coding"][0]["code"]
        == "Z12"
    )


def test_who_may_move_a_task(gw: TestClient) -> None:
    sr = refer(gw)
    task = task_for(as_(gw, "gateway-admin"), sr["id"])
    resp = put_task(as_(gw, GP), task, status="accepted")  # the requester cannot accept
    assert resp.status_code == 409
    resp = put_task(as_(gw, COACH), task, status="cancelled", statusReason={"text": "x"})
    assert resp.status_code == 409  # the owner cannot cancel
    resp = put_task(as_(gw, OTHER_COACH), task, status="accepted")
    assert resp.status_code == 404  # outside the compartment
    task = put_task(as_(gw, COACH), task, status="accepted").json()
    assert task["status"] == "accepted"
    resp = put_task(as_(gw, GP), task, status="cancelled", statusReason={"text": "Patiënt verhuisd"})
    assert resp.status_code == 200
    comms = as_(gw, GP).get("/fhir/Communication").json()["entry"]
    assert sorted(c["resource"]["category"][0]["coding"][0]["code"] for c in comms) == [
        "accepted",
        "cancelled",
    ]
    assert as_(gw, OTHER_GP).get("/fhir/Communication", params={"_summary": "count"}).json()["total"] == 0


def test_every_access_to_personal_data_is_audited(gw: TestClient) -> None:
    sr = refer(gw)
    patient = sr["subject"]["reference"]
    as_(gw, COACH).get(f"/fhir/{patient}")
    as_(gw, OTHER_COACH).get(f"/fhir/{patient}")  # refused: audited as a failure
    as_(gw, COACH).get("/fhir/Task", params={"owner": DE_BRUG})
    events = [
        e["resource"]
        for e in as_(gw, "gateway-admin")
        .get("/fhir/AuditEvent", params={"patient": patient, "_count": "100"})
        .json()["entry"]
    ]
    by_client = {(e["agent"][0]["name"], e["subtype"][0]["code"], e["outcome"]) for e in events}
    assert ("praktijk-de-geinoord-his", "create", "0") in by_client
    assert ("welzijn-de-brug-cms", "read", "0") in by_client
    assert ("welzijn-de-brug-cms", "search-type", "0") in by_client
    refused = [
        e for e in as_(gw, "gateway-admin").get("/fhir/AuditEvent", params={"outcome": "4"}).json()["entry"]
    ]
    assert any(e["resource"]["agent"][0]["name"] == OTHER_COACH for e in refused)
    coach_read = next(
        e for e in events if e["agent"][0]["name"] == COACH and e["subtype"][0]["code"] == "read"
    )
    assert coach_read["action"] == "R"
    assert coach_read["agent"][1]["who"] == {"reference": DE_BRUG}  # on behalf of which organisation


def test_consent_withdrawal_stops_sharing(gw: TestClient) -> None:
    bundle = referral_bundle()
    resp = as_(gw, GP).post("/fhir", json=bundle, headers=FHIR_JSON)
    sr = resp.json()["entry"][2]["resource"]
    consent = resp.json()["entry"][1]["resource"]
    task = task_for(as_(gw, COACH), sr["id"])
    task = put_task(gw, task, status="accepted").json()
    withdrawn = {**consent, "status": "inactive"}
    resp = as_(gw, GP).put(
        f"/fhir/Consent/{consent['id']}", json=withdrawn, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert resp.status_code == 200, resp.text
    as_(gw, COACH)
    task = gw.get(f"/fhir/Task/{task['id']}").json()  # the Task stays visible, so the coach knows to stop
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == "consent-withdrawn"
    assert not any(i["type"].get("text") == "Hulpvraag" for i in task.get("input", []))
    for ref in (sr["subject"]["reference"], f"ServiceRequest/{sr['id']}"):
        assert gw.get(f"/fhir/{ref}").status_code == 404, ref
    assert count(gw, "CarePlan") == 0
    kinds = [
        c["resource"]["category"][0]["coding"][0]["code"]
        for c in as_(gw, GP).get("/fhir/Communication", params={"_sort": "_lastUpdated"}).json()["entry"]
    ]
    assert kinds == ["accepted", "cancelled"]


def test_writes_may_only_point_at_what_the_writer_sees(gw: TestClient) -> None:
    sr = refer(gw)
    task = task_for(as_(gw, COACH), sr["id"])
    question = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": f"{WOR}/CodeSystem/wor-feedback-kinds", "code": "question"}]}],
        "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
        "about": [{"reference": f"Task/{task['id']}"}],
        "subject": {"reference": sr["subject"]["reference"]},
        "recipient": [{"reference": "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"}],
        "sender": {"reference": DE_BRUG},
        "sent": "2026-11-20T10:00:00+01:00",
        "payload": [{"contentString": "Mag ik de patiënt ook 's avonds bellen?"}],
    }
    assert as_(gw, COACH).post("/fhir/Communication", json=question, headers=FHIR_JSON).status_code == 201
    resp = as_(gw, OTHER_COACH).post("/fhir/Communication", json=question, headers=FHIR_JSON)
    assert resp.status_code == 422 and resp.json()["issue"][0]["code"] == "not-found"
    questions = as_(gw, GP).get("/fhir/Communication", params={"category": "question"}).json()["entry"]
    assert len(questions) == 1  # the practice got the coach's question


def test_audit_and_provenance_cannot_be_changed(gw: TestClient) -> None:
    refer(gw)
    as_(gw, "gateway-admin")
    event = gw.get("/fhir/AuditEvent", params={"_count": "1"}).json()["entry"][0]["resource"]
    assert gw.put(f"/fhir/AuditEvent/{event['id']}", json=event, headers=FHIR_JSON).status_code == 405
    assert gw.delete(f"/fhir/AuditEvent/{event['id']}").status_code == 405
    assert gw.post("/fhir/AuditEvent", json=event, headers=FHIR_JSON).status_code == 405
    provenance = gw.get("/fhir/Provenance", params={"_count": "1"}).json()["entry"][0]["resource"]
    assert gw.delete(f"/fhir/Provenance/{provenance['id']}").status_code == 405
    assert event["agent"][0].get("network", {}).get("address") == "testclient"
    assert any(d["type"] == "X-Request-Id" for e in event.get("entity", []) for d in e.get("detail", []))
