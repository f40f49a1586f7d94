"""The WoR loop through the API: referral → routed Task + CarePlan → workflow → feedback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_client
from tests.wor import (
    DE_BRUG,
    FHIR_JSON,
    GP_ROLE,
    IJSSELSTEIN,
    completion_output,
    consent,
    load_directory,
    milestone,
    patient,
    put_task,
    reason,
    referral_bundle,
    send_referral,
    service_request,
    task_for,
)


@pytest.fixture
def wor(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url) as client:
        load_directory(client)
        yield client


@pytest.fixture
def any_wor(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        load_directory(client)
        yield client


def count(client: TestClient, query: str) -> int:
    return int(client.get(f"/fhir/{query}", params={"_summary": "count"}).json()["total"])


def communications(client: TestClient, sr_id: str) -> list[dict[str, Any]]:
    body = client.get(
        "/fhir/Communication", params={"based-on": f"ServiceRequest/{sr_id}", "_sort": "_lastUpdated"}
    ).json()
    return [e["resource"] for e in body.get("entry", [])]


def kinds(comms: list[dict[str, Any]]) -> list[str]:
    return [c["category"][0]["coding"][0]["code"] for c in comms]


def test_referral_bundle_lands_as_task_and_careplan(any_wor: TestClient) -> None:
    sr = send_referral(any_wor, referral_id="REF-1")
    task = task_for(any_wor, sr["id"])
    assert task["owner"]["reference"] == DE_BRUG
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["for"] == sr["subject"] and task["requester"]["reference"] == GP_ROLE
    assert task["restriction"]["period"]["end"] > task["restriction"]["period"]["start"][:10]
    plans = any_wor.get("/fhir/CarePlan", params={"supporting-info": f"ServiceRequest/{sr['id']}"}).json()
    assert len(plans["entry"]) == 1 and plans["entry"][0]["resource"]["status"] == "active"
    prov = any_wor.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}).json()
    targets = {t["reference"] for t in prov["entry"][0]["resource"]["target"]}
    assert f"ServiceRequest/{sr['id']}" in targets and f"Task/{task['id']}" in targets


def test_referral_by_rest_create_with_existing_patient(wor: TestClient) -> None:
    p = wor.post("/fhir/Patient", json=patient(bsn="999999151"), headers=FHIR_JSON).json()
    c = wor.post("/fhir/Consent", json=consent(f"Patient/{p['id']}"), headers=FHIR_JSON).json()
    resp = wor.post(
        "/fhir/ServiceRequest",
        json=service_request(f"Patient/{p['id']}", f"Consent/{c['id']}", "REF-REST"),
        headers=FHIR_JSON,
    )
    assert resp.status_code == 201, resp.text
    assert task_for(wor, resp.json()["id"])["owner"]["reference"] == DE_BRUG
    again = wor.post(
        "/fhir/ServiceRequest",
        json=service_request(f"Patient/{p['id']}", f"Consent/{c['id']}", "REF-REST"),
        headers=FHIR_JSON,
    )
    assert again.status_code == 200 and again.json()["id"] == resp.json()["id"]
    assert count(wor, "Task") == 1


def test_resend_returns_original_without_second_task(any_wor: TestClient) -> None:
    first = any_wor.post("/fhir", json=referral_bundle("REF-DUP"), headers=FHIR_JSON).json()
    second = any_wor.post("/fhir", json=referral_bundle("REF-DUP"), headers=FHIR_JSON)
    assert second.status_code == 200
    statuses = [e["response"]["status"] for e in second.json()["entry"]]
    assert statuses[0] == "200 OK" and statuses[2] == "200 OK"
    assert second.json()["entry"][2]["resource"]["id"] == first["entry"][2]["resource"]["id"]
    assert count(any_wor, "Task") == 1 and count(any_wor, "ServiceRequest") == 1


@pytest.mark.parametrize(
    ("postcode", "number", "owner"),
    [
        ("3431 AB", "12", DE_BRUG),  # Nieuwegein
        ("3404 AA", "3", IJSSELSTEIN),  # IJsselstein part of the split PC4 area
        ("3404 PB", "7", DE_BRUG),  # 3404PA-PZ belongs to Nieuwegein
        ("3404 NB", "40", DE_BRUG),  # house numbers 40-98 of 3404NB go to Nieuwegein
        ("3404 NB", "98", DE_BRUG),
        ("3404 NB", "39", IJSSELSTEIN),
        ("3404 NB", "100", IJSSELSTEIN),
        ("3991 AA", "1", "Organization/welzijn-houten-doet-mee"),
    ],
)
def test_routing_at_the_split_postcode(wor: TestClient, postcode: str, number: str, owner: str) -> None:
    sr = send_referral(wor, postcode=postcode, number=number)
    assert task_for(wor, sr["id"])["owner"]["reference"] == owner


def test_unroutable_address_is_422_and_nothing_is_stored(any_wor: TestClient) -> None:
    resp = any_wor.post("/fhir", json=referral_bundle(postcode="9999 ZZ"), headers=FHIR_JSON)
    assert resp.status_code == 422
    issue = resp.json()["issue"][0]
    assert issue["code"] == "business-rule" and "9999" in issue["diagnostics"]
    assert "ZZ" not in issue["diagnostics"]  # no full address in outcomes
    assert issue["expression"] == ["Bundle.entry[0].resource.address[0].postalCode"]  # the Patient entry
    assert count(any_wor, "Patient") == 0 and count(any_wor, "ServiceRequest") == 0


def test_invalid_bsn_is_rejected_with_expression(wor: TestClient) -> None:
    resp = wor.post("/fhir", json=referral_bundle(bsn="123456789"), headers=FHIR_JSON)
    assert resp.status_code == 422
    issue = resp.json()["issue"][0]
    assert "BSN" in issue["diagnostics"]
    assert issue["expression"][0].startswith("Bundle.entry[0].resource.identifier[0]")
    assert count(wor, "Patient") == 0


def test_ineligible_reason_and_inactive_consent_are_rejected(wor: TestClient) -> None:
    bundle = referral_bundle()
    bundle["entry"][2]["resource"]["reasonCode"][0]["coding"][0]["code"] = "K86"  # hypertension
    resp = wor.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422 and resp.json()["issue"][0]["code"] == "code-invalid"
    bundle = referral_bundle()
    bundle["entry"][1]["resource"]["status"] = "inactive"
    resp = wor.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422 and "consent" in resp.json()["issue"][0]["diagnostics"].lower()
    assert count(wor, "Task") == 0


def test_explicit_performer_must_be_a_wor_service(wor: TestClient) -> None:
    bundle = referral_bundle()
    bundle["entry"][2]["resource"]["performer"] = [
        {"reference": "HealthcareService/welzijn-ijsselstein-samen-wor"}
    ]
    resp = wor.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200
    sr = resp.json()["entry"][2]["resource"]
    assert task_for(wor, sr["id"])["owner"]["reference"] == IJSSELSTEIN
    bundle = referral_bundle()
    bundle["entry"][2]["resource"]["performer"] = [
        {"reference": "HealthcareService/welzijn-de-brug-schuldhulp"}
    ]
    resp = wor.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"][0].endswith("performer[0]")


def test_validate_operation_stores_nothing(wor: TestClient) -> None:
    bad = wor.post("/fhir/Patient/$validate", json=patient(bsn="123456789"), headers=FHIR_JSON)
    assert bad.status_code == 200
    assert any(i["severity"] == "error" and "BSN" in i["diagnostics"] for i in bad.json()["issue"])
    good = wor.post(
        "/fhir/Patient/$validate",
        json={"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient()}]},
        headers=FHIR_JSON,
    )
    assert good.json()["issue"][-1]["severity"] == "information"
    assert count(wor, "Patient") == 0


# -- the Task state machine ------------------------------------------------------------------------

PATHS = {  # status → how to get there from requested
    "requested": [],
    "received": ["received"],
    "accepted": ["accepted"],
    "rejected": ["rejected"],
    "in-progress": ["accepted", "in-progress"],
    "on-hold": ["accepted", "in-progress", "on-hold"],
    "completed": ["accepted", "in-progress", "completed"],
    "failed": ["accepted", "in-progress", "failed"],
    "cancelled": ["cancelled"],
}
ALLOWED = {
    "requested": {"received", "accepted", "rejected", "cancelled"},
    "received": {"accepted", "rejected", "cancelled"},
    "accepted": {"in-progress", "failed", "cancelled"},
    "in-progress": {"on-hold", "completed", "failed", "cancelled"},
    "on-hold": {"in-progress", "failed", "cancelled"},
    "rejected": set(),
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}


def move(client: TestClient, task: dict[str, Any], status: str) -> Any:
    extra = {"statusReason": reason("test")} if status in ("rejected", "cancelled", "failed") else {}
    return put_task(client, task, status=status, **extra)


def task_in(client: TestClient, status: str) -> dict[str, Any]:
    sr = send_referral(client)
    task = task_for(client, sr["id"])
    for step in PATHS[status]:
        resp = move(client, task, step)
        assert resp.status_code == 200, resp.text
        task = resp.json()
    return task


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in PATHS for t in PATHS if s != t])
def test_every_transition(wor: TestClient, source: str, target: str) -> None:
    task = task_in(wor, source)
    resp = move(wor, task, target)
    if target in ALLOWED[source]:
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == target
    else:
        assert resp.status_code == 409, resp.text
        assert resp.json()["issue"][0]["code"] == "business-rule"
        allowed_text = resp.json()["issue"][0]["diagnostics"]
        assert all(a in allowed_text for a in ALLOWED[source])


def test_task_update_rules(wor: TestClient) -> None:
    task = task_in(wor, "requested")
    no_if_match = wor.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"}, headers=FHIR_JSON)
    assert no_if_match.status_code == 428
    other_field = put_task(wor, task, owner={"reference": IJSSELSTEIN})
    assert other_field.status_code == 422 and other_field.json()["issue"][0]["expression"] == ["Task.owner"]
    no_reason = put_task(wor, task, status="rejected")
    assert no_reason.status_code == 422 and "statusReason" in no_reason.json()["issue"][0]["diagnostics"]
    patched = wor.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "accepted"}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert patched.status_code == 428
    patched = wor.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "accepted"}],
        headers={"content-type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert patched.status_code == 200 and patched.json()["status"] == "accepted"
    stale = put_task(wor, task, status="in-progress")  # still version 1
    assert stale.status_code == 412


def test_stale_if_match_on_a_completed_task_is_412_a_current_one_409(wor: TestClient) -> None:
    """The precondition wins over the final-state rule; with the right version the rule answers."""
    task = task_in(wor, "completed")
    path = f"/fhir/Task/{task['id']}"
    note = [{"op": "add", "path": "/note", "value": [{"text": "late"}]}]
    patch = {"content-type": "application/json-patch+json"}
    stale_version = int(task["meta"]["versionId"]) - 1
    for stale in (
        put_task(
            wor, {**task, "meta": {**task["meta"], "versionId": str(stale_version)}}, note=note[0]["value"]
        ),
        wor.patch(path, json=note, headers={**patch, "If-Match": f'W/"{stale_version}"'}),
    ):
        assert stale.status_code == 412, stale.text
        issue = stale.json()["issue"][0]
        assert (issue["code"], issue["expression"]) == ("conflict", ["If-Match"]), issue
    current = wor.patch(path, json=note, headers={**patch, "If-Match": f'W/"{task["meta"]["versionId"]}"'})
    assert current.status_code == 409, current.text
    assert current.json()["issue"][0]["code"] == "business-rule"
    assert wor.get(path).json()["meta"]["versionId"] == task["meta"]["versionId"]  # nothing applied


def test_roles_owner_moves_forward_requester_cancels() -> None:
    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.security.principal import Principal
    from fhir_gateway.workflow.tasks import check_update

    task = {"resourceType": "Task", "status": "requested", "owner": {"reference": DE_BRUG}}
    welfare = Principal("w", DE_BRUG, "welfare-org")
    gp = Principal("g", "Organization/praktijk-de-geinoord", "gp-practice")
    stranger = Principal("x", IJSSELSTEIN, "welfare-org")
    check_update(task, {**task, "status": "accepted"}, welfare, 1, gp.organization)
    check_update(task, {**task, "status": "cancelled", "statusReason": {"text": "x"}}, gp, 1, gp.organization)
    for principal, status in ((gp, "accepted"), (welfare, "cancelled"), (stranger, "accepted")):
        with pytest.raises(FhirError) as err:
            check_update(
                task, {**task, "status": status, "statusReason": {"text": "x"}}, principal, 1, gp.organization
            )
        assert err.value.status == 409


# -- feedback --------------------------------------------------------------------------------------


def questionnaire_response(patient_ref: str, moment: str, score: int) -> dict[str, Any]:
    dims = (
        "lichaamsfuncties",
        "mentaalWelbevinden",
        "zingeving",
        "kwaliteitVanLeven",
        "meedoen",
        "dagelijksFunctioneren",
    )
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": patient_ref},
        "authored": "2026-11-10T10:00:00+01:00",
        "item": [{"linkId": d, "answer": [{"valueInteger": score}]} for d in dims],
    }


def test_full_loop_with_feedback_per_milestone(any_wor: TestClient) -> None:
    sr = send_referral(any_wor, referral_id="REF-LOOP")
    task = task_for(any_wor, sr["id"])
    steps: list[dict[str, Any]] = [
        {"status": "received"},  # seen by the welfare system: no feedback
        {"status": "accepted"},
        {"status": "in-progress", "businessStatus": milestone("intake-held")},
    ]
    for change in steps:
        resp = put_task(any_wor, task, **change)
        assert resp.status_code == 200, resp.text
        task = resp.json()
    intake = any_wor.post(
        "/fhir/QuestionnaireResponse",
        json=questionnaire_response(sr["subject"]["reference"], "intake", 4),
        headers=FHIR_JSON,
    ).json()
    closure = any_wor.post(
        "/fhir/QuestionnaireResponse",
        json=questionnaire_response(sr["subject"]["reference"], "closure", 7),
        headers=FHIR_JSON,
    ).json()
    output = completion_output(intake["id"], closure["id"])
    resp = put_task(
        any_wor, task, status="completed", businessStatus=milestone("closed-goal-reached"), output=output
    )
    assert resp.status_code == 200, resp.text
    comms = communications(any_wor, sr["id"])
    assert kinds(comms) == ["accepted", "intake-held", "completed"]
    for comm in comms:
        assert comm["recipient"][0]["reference"] == GP_ROLE
        assert comm["sender"]["reference"] == DE_BRUG
        assert comm["about"][0]["reference"] == f"Task/{task['id']}"
        assert comm["payload"][0]["contentString"]
    closing = comms[-1]
    assert "doel" in closing["payload"][0]["contentString"]
    text = str(closing)
    assert "Vrijwilliger bij de voedselbank" in text or "volunteering" in text
    assert "'valueInteger': 7" in text or "7" in text
    # the practice polls its feedback
    practice_view = any_wor.get(
        "/fhir/Communication", params={"recipient": GP_ROLE, "_lastUpdated": "gt2000-01-01"}
    ).json()
    assert len(practice_view["entry"]) == 3
    assert any_wor.get(f"/fhir/ServiceRequest/{sr['id']}").json()["status"] == "completed"
    plan = any_wor.get("/fhir/CarePlan", params={"supporting-info": f"ServiceRequest/{sr['id']}"}).json()
    plan = plan["entry"][0]["resource"]
    assert plan["status"] == "completed"
    assert any(
        a.get("detail", {}).get("description") == "Vrijwilliger bij de voedselbank" for a in plan["activity"]
    )


def test_rejection_and_cancellation_feedback(wor: TestClient) -> None:
    sr = send_referral(wor)
    task = task_for(wor, sr["id"])
    rejected = put_task(wor, task, status="rejected", statusReason=reason("Geen capaciteit"))
    assert rejected.status_code == 200
    assert kinds(communications(wor, sr["id"])) == ["rejected"]
    sr2 = send_referral(wor)
    task2 = task_for(wor, sr2["id"])
    cancelled = put_task(wor, task2, status="cancelled", statusReason=reason("Patiënt verhuisd"))
    assert cancelled.status_code == 200
    assert kinds(communications(wor, sr2["id"])) == ["cancelled"]
    assert wor.get(f"/fhir/ServiceRequest/{sr2['id']}").json()["status"] == "revoked"


def test_regional_overlay_changes_feedback_without_code(wor: TestClient) -> None:
    """Nieuwegein (De Brug) sends no feedback on contact-attempted; IJsselstein does."""
    results = {}
    for postcode, owner, bsn in (("3431 AB", DE_BRUG, "999911120"), ("3404 AA", IJSSELSTEIN, "999999151")):
        sr = send_referral(wor, postcode=postcode, bsn=bsn)
        task = task_for(wor, sr["id"])
        assert task["owner"]["reference"] == owner
        task = put_task(wor, task, status="accepted").json()
        resp = put_task(wor, task, status="in-progress", businessStatus=milestone("contact-attempted"))
        assert resp.status_code == 200
        results[owner] = kinds(communications(wor, sr["id"]))
    assert results[DE_BRUG] == ["accepted"]
    assert results[IJSSELSTEIN] == ["accepted", "no-intake-yet"]
