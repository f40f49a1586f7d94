"""The authorisation matrix: 2 practices x 2 welfare organisations x admin x resource type x interaction.

One loop is played (practice A refers to welfare organisation 1, which accepts, records Positive
Health and so sends feedback). Then every principal tries every interaction on every resource, and
the exact status is asserted. 200/204 = allowed; 403 = no scope (or admin-only); 404 = outside the
compartment (existence not revealed); 405 = never through the API; 409 = the workflow forbids it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import authorize, make_client
from tests.wor import FHIR_JSON, load_directory, put_task, referral_bundle, task_for

ADMIN, GP_A, GP_B, W1, W2 = (
    "gateway-admin",
    "praktijk-de-geinoord-his",
    "praktijk-batau-his",
    "welzijn-de-brug-cms",
    "welzijn-ijsselstein-samen-cms",
)
PRINCIPALS = (ADMIN, GP_A, GP_B, W1, W2)

# expected status per resource type, in the order of PRINCIPALS: admin, GP A, GP B, W1, W2
READ = {
    "Patient": (200, 200, 404, 200, 404),
    "Consent": (200, 200, 404, 403, 403),
    "ServiceRequest": (200, 200, 404, 200, 404),
    "Task": (200, 200, 404, 200, 404),
    "CarePlan": (200, 200, 404, 200, 404),
    "Communication": (200, 200, 404, 200, 404),
    "QuestionnaireResponse": (200, 403, 403, 200, 404),
    "Provenance": (200, 403, 403, 403, 403),
    "AuditEvent": (200, 403, 403, 403, 403),
    "Organization": (200, 200, 200, 200, 200),
}
# search: status, and whether the resource is found (None where the status is an error)
SEARCH = {
    "Patient": ((200, True), (200, True), (200, False), (403, None), (403, None)),
    "Consent": ((200, True), (403, None), (403, None), (403, None), (403, None)),
    "ServiceRequest": ((200, True), (200, True), (200, False), (200, True), (200, False)),
    "Task": ((200, True), (200, True), (200, False), (200, True), (200, False)),
    "CarePlan": ((200, True), (200, True), (200, False), (200, True), (200, False)),
    "Communication": ((200, True), (200, True), (200, False), (200, True), (200, False)),
    "QuestionnaireResponse": ((200, True), (403, None), (403, None), (200, True), (200, False)),
    "Provenance": ((200, True), (403, None), (403, None), (403, None), (403, None)),
    "AuditEvent": ((200, True), (403, None), (403, None), (403, None), (403, None)),
    "Organization": ((200, True), (200, True), (200, True), (200, True), (200, True)),
}
UPDATE = {  # PUT the current version back unchanged, with If-Match
    "Patient": (200, 403, 403, 403, 403),
    "Consent": (200, 200, 404, 403, 403),
    "ServiceRequest": (200, 403, 403, 403, 403),
    "Task": (200, 409, 404, 200, 404),
    "CarePlan": (200, 403, 403, 200, 404),
    "Communication": (200, 403, 403, 403, 403),
    "QuestionnaireResponse": (200, 403, 403, 403, 403),  # welfare may create, not change
    "Provenance": (405, 403, 403, 403, 403),
    "AuditEvent": (405, 403, 403, 403, 403),
    "Organization": (200, 403, 403, 403, 403),
}
DELETE = {
    "Task": (409, 403, 403, 403, 403),
    "ServiceRequest": (409, 403, 403, 403, 403),
    "AuditEvent": (405, 403, 403, 403, 403),
    "Provenance": (405, 403, 403, 403, 403),
    "Communication": (204, 403, 403, 403, 403),
}


@pytest.fixture
def loop(database_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with make_client(database_url) as client:
        load_directory(client)
        authorize(client, GP_A)
        resp = client.post("/fhir", json=referral_bundle(), headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        entries = [e["resource"] for e in resp.json()["entry"]]
        patient, consent, sr = entries
        authorize(client, W1)
        task = put_task(client, task_for(client, sr["id"]), status="accepted").json()
        qr = client.post(
            "/fhir/QuestionnaireResponse",
            headers=FHIR_JSON,
            json={
                "resourceType": "QuestionnaireResponse",
                "status": "completed",
                "subject": {"reference": f"Patient/{patient['id']}"},
                "item": [{"linkId": "zingeving", "answer": [{"valueInteger": 6}]}],
            },
        ).json()
        authorize(client, ADMIN)

        def first(query: str) -> str:
            return client.get(f"/fhir/{query}").json()["entry"][0]["resource"]["id"]

        ids = {
            "Patient": patient["id"],
            "Consent": consent["id"],
            "ServiceRequest": sr["id"],
            "Task": task["id"],
            "CarePlan": first(f"CarePlan?supporting-info=ServiceRequest/{sr['id']}"),
            "Communication": first(f"Communication?based-on=ServiceRequest/{sr['id']}"),
            "QuestionnaireResponse": qr["id"],
            "Provenance": first("Provenance?_count=1"),
            "AuditEvent": first("AuditEvent?_count=1"),
            "Organization": "welzijn-de-brug",
        }
        yield client, ids


def test_read_search_and_history(loop: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = loop
    failures = []
    for p, who in enumerate(PRINCIPALS):
        authorize(client, who)
        for rtype, rid in ids.items():
            status = client.get(f"/fhir/{rtype}/{rid}").status_code
            if status != READ[rtype][p]:
                failures.append(f"read {rtype} as {who}: {status} != {READ[rtype][p]}")
            history = client.get(f"/fhir/{rtype}/{rid}/_history").status_code
            if history != READ[rtype][p]:
                failures.append(f"history {rtype} as {who}: {history} != {READ[rtype][p]}")
            resp = client.get(f"/fhir/{rtype}", params={"_id": rid})
            expected_status, expected_found = SEARCH[rtype][p]
            found = bool(resp.json().get("entry")) if resp.status_code == 200 else None
            if (resp.status_code, found) != (expected_status, expected_found):
                failures.append(
                    f"search {rtype} as {who}: {(resp.status_code, found)} != "
                    f"{(expected_status, expected_found)}"
                )
    assert not failures, "\n".join(failures)


def test_include_obeys_the_compartments(loop: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = loop
    seen: dict[str, set[str]] = {}
    for who in PRINCIPALS:
        authorize(client, who)
        resp = client.get("/fhir/Task", params={"_include": ["Task:focus", "Task:patient", "Task:owner"]})
        seen[who] = {e["resource"]["resourceType"] for e in resp.json().get("entry", [])}
    full = {"Task", "ServiceRequest", "Patient", "Organization"}
    assert seen == {ADMIN: full, GP_A: full, GP_B: set(), W1: full, W2: set()}


def _current(client: TestClient, rtype: str, rid: str) -> tuple[str, dict[str, Any]]:
    authorize(client, ADMIN)
    current: dict[str, Any] = client.get(f"/fhir/{rtype}/{rid}").json()
    return current["meta"]["versionId"], current


def test_update_and_delete(loop: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = loop
    failures = []
    for p, who in enumerate(PRINCIPALS):
        for rtype, rid in ids.items():
            version, current = _current(client, rtype, rid)
            authorize(client, who)
            status = client.put(
                f"/fhir/{rtype}/{rid}", json=current, headers={**FHIR_JSON, "If-Match": f'W/"{version}"'}
            ).status_code
            if status != UPDATE[rtype][p]:
                failures.append(f"update {rtype} as {who}: {status} != {UPDATE[rtype][p]}")
    for p, who in reversed(list(enumerate(PRINCIPALS))):  # admin last: its delete succeeds
        authorize(client, who)
        for rtype, expected in DELETE.items():
            status = client.delete(f"/fhir/{rtype}/{ids[rtype]}").status_code
            if status != expected[p]:
                failures.append(f"delete {rtype} as {who}: {status} != {expected[p]}")
    assert not failures, "\n".join(failures)
