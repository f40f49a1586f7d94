"""Conditional update and delete (`PUT` / `DELETE [base]/Type?criteria`, R4 http.html).

The match runs inside the caller's compartment only and grants nothing: practice A updates its
own patient by BSN; practice B, asking for the same BSN, finds nothing of its own and creates
its own record, leaving A's untouched. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import authorize, make_client
from tests.wor import (
    BSN,
    FHIR_JSON,
    fresh_bsn,
    load_directory,
    patient,
    put_task,
    refer_new_patient,
)

GP_A, GP_B = "praktijk-de-geinoord-his", "praktijk-batau-his"
W1 = "welzijn-de-brug-cms"
ADMIN = "gateway-admin"


@pytest.fixture
def scene(database_url: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """Practice A's referral of a new patient: A's Patient, ServiceRequest and its BSN."""
    with make_client(database_url) as client:
        load_directory(client)
        authorize(client, GP_A)
        bsn, pat, _consent, sr = refer_new_patient(client)
        yield client, {"bsn": bsn, "Patient": pat, "ServiceRequest": sr}


def by_bsn(bsn: str) -> str:
    return f"/fhir/Patient?identifier={BSN}|{bsn}"


def as_(client: TestClient, who: str) -> TestClient:
    authorize(client, who)
    return client


def admin_read(client: TestClient, reference: str) -> dict[str, Any]:
    found: dict[str, Any] = as_(client, ADMIN).get(f"/fhir/{reference}").json()
    return found


def moved(body: dict[str, Any], street: str) -> dict[str, Any]:
    """The patient at a new address (a copy)."""
    address = {**body["address"][0], "line": [street]}
    address.pop("_line", None)
    return {**body, "address": [address]}


def test_a_practice_updates_its_patient_by_bsn(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, a = scene
    body = {k: v for k, v in moved(a["Patient"], "Kerkstraat 3").items() if k not in ("id", "meta")}
    resp = as_(client, GP_A).put(by_bsn(a["bsn"]), json=body, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == a["Patient"]["id"] and resp.json()["meta"]["versionId"] == "2"
    assert resp.json()["address"][0]["line"] == ["Kerkstraat 3"]
    assert resp.headers["ETag"] == 'W/"2"'
    # If-Match is still honoured: version 1 is stale now
    stale = client.put(by_bsn(a["bsn"]), json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text
    # and a body id other than the match's is refused
    other = client.put(by_bsn(a["bsn"]), json={**body, "id": "someone-else"}, headers=FHIR_JSON)
    assert other.status_code == 400 and other.json()["issue"][0]["expression"] == ["Patient.id"]
    # the instance update with If-Match works for the practice too (system/Patient.u)
    current = client.get(f"/fhir/Patient/{a['Patient']['id']}").json()
    again = client.put(
        f"/fhir/Patient/{current['id']}",
        json=moved(current, "Kerkstraat 5"),
        headers={**FHIR_JSON, "If-Match": 'W/"2"'},
    )
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "3", again.text


def test_another_practice_with_the_same_bsn_creates_its_own_patient(
    scene: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = scene
    before = admin_read(client, f"Patient/{a['Patient']['id']}")
    body = moved(a["Patient"], "Stationsweg 1")  # A's id in the body: it must not reach A's record
    created = as_(client, GP_B).put(by_bsn(a["bsn"]), json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    own = created.json()
    assert own["id"] != a["Patient"]["id"] and own["meta"]["versionId"] == "1"
    assert created.headers["Location"].endswith(f"/Patient/{own['id']}/_history/1")
    # A's record is untouched, and B still cannot see it
    assert admin_read(client, f"Patient/{a['Patient']['id']}") == before
    assert as_(client, GP_B).get(f"/fhir/Patient/{a['Patient']['id']}").status_code == 404
    # B's next conditional update finds its own record (one match in its compartment) only
    updated = client.put(by_bsn(a["bsn"]), json=moved(own, "Stationsweg 2"), headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == own["id"], updated.text
    assert admin_read(client, f"Patient/{a['Patient']['id']}") == before
    # the same answer when A's patient does not exist at all: nothing tells B about it
    nobody = as_(client, GP_B).put(by_bsn(fresh_bsn()), json=body, headers=FHIR_JSON)
    assert nobody.status_code == 201 and nobody.json()["id"] not in (a["Patient"]["id"], own["id"])


def test_several_matches_are_412(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, a = scene
    second = as_(client, GP_A).post("/fhir/Patient", json=patient(bsn=a["bsn"]), headers=FHIR_JSON)
    assert second.status_code == 201, second.text
    resp = client.put(by_bsn(a["bsn"]), json=patient(bsn=a["bsn"]), headers=FHIR_JSON)
    assert resp.status_code == 412, resp.text
    assert resp.json()["issue"][0]["code"] == "multiple-matches"
    several = as_(client, ADMIN).delete(f"/fhir/Patient?identifier={BSN}|{a['bsn']}")
    assert several.status_code == 412, several.text
    assert admin_read(client, f"Patient/{a['Patient']['id']}")["id"] == a["Patient"]["id"]


def test_conditional_delete_of_a_communication_by_the_administrator(
    scene: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = scene
    sr = f"ServiceRequest/{a['ServiceRequest']['id']}"
    task = as_(client, W1).get("/fhir/Task", params={"focus": sr}).json()["entry"][0]["resource"]
    assert put_task(client, task, status="accepted").status_code == 200  # feedback goes to A
    criteria = f"based-on={sr}"
    found = as_(client, ADMIN).get(f"/fhir/Communication?{criteria}").json()["entry"]
    assert len(found) == 1, found
    cid = found[0]["resource"]["id"]
    refused = as_(client, GP_B).delete(f"/fhir/Communication?{criteria}")
    assert refused.status_code == 403, refused.text  # no delete scope: nothing matched, nothing gone
    deleted = as_(client, ADMIN).delete(f"/fhir/Communication?{criteria}")
    assert deleted.status_code == 204, deleted.text
    assert client.get(f"/fhir/Communication/{cid}").status_code == 410
    # no match: 204, like the delete of what does not exist
    assert client.delete(f"/fhir/Communication?{criteria}").status_code == 204
    assert client.delete("/fhir/Communication").status_code == 400  # criteria are required


def test_a_welfare_organisation_cannot_match_on_what_its_view_withholds(
    scene: tuple[TestClient, dict[str, Any]],
) -> None:
    """Even registered with Patient.u, a welfare organisation may not pick a patient by BSN: the
    identifier is shared only with the `bsn` consent scope, so a match would tell what the view
    hides. Refused before any record is looked at, whatever the data."""
    client, a = scene
    app = client.app
    from fhir_gateway.security.clients import get_client

    registration = get_client(app.state.ctx.database, W1)  # type: ignore[attr-defined]
    assert registration is not None
    scopes = [*registration.scopes, "system/Patient.u"]
    token = app.state.tokens.issue(registration, scopes)  # type: ignore[attr-defined]
    client.headers["Authorization"] = f"Bearer {token.access_token}"
    before = admin_read(client, f"Patient/{a['Patient']['id']}")
    client.headers["Authorization"] = f"Bearer {token.access_token}"
    for criteria in (f"identifier={BSN}|{a['bsn']}", f"identifier={BSN}|{fresh_bsn()}"):
        resp = client.put(f"/fhir/Patient?{criteria}", json=moved(before, "Ergens 1"), headers=FHIR_JSON)
        assert resp.status_code == 403, resp.text
        assert resp.json()["issue"][0]["code"] == "forbidden"
        assert "identifier" in resp.json()["issue"][0]["diagnostics"]
    assert admin_read(client, f"Patient/{a['Patient']['id']}") == before


def test_a_task_still_needs_if_match(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, a = scene
    task = as_(client, W1).get("/fhir/Task", params={"focus": f"ServiceRequest/{a['ServiceRequest']['id']}"})
    body = task.json()["entry"][0]["resource"]
    url = f"/fhir/Task?_id={body['id']}"
    assert client.put(url, json={**body, "status": "accepted"}, headers=FHIR_JSON).status_code == 428
    version = body["meta"]["versionId"]
    accepted = client.put(
        url, json={**body, "status": "accepted"}, headers={**FHIR_JSON, "If-Match": f'W/"{version}"'}
    )
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text


def test_the_capability_statement_says_so(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = scene
    patient_entry = next(
        r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient"
    )
    assert patient_entry["conditionalUpdate"] is True
    assert patient_entry["conditionalDelete"] == "single"


def test_a_conditional_update_in_a_transaction(scene: tuple[TestClient, dict[str, Any]]) -> None:
    """The same rules in a Bundle entry: A's patient updated, B's own created although the body
    carries A's id; that id is given to no fullUrl (it names no record the entry writes)."""
    client, a = scene
    for who, status, same in ((GP_A, "200", True), (GP_B, "201", False)):
        entry = {
            "fullUrl": "urn:uuid:0b6f3c55-8d0e-4a4c-9d43-0c3a3f1f6e01",
            "resource": moved(a["Patient"], f"Brink {status}"),
            "request": {"method": "PUT", "url": f"Patient?identifier={BSN}|{a['bsn']}"},
        }
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        resp = as_(client, who).post("/fhir", json=bundle, headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        answer = resp.json()["entry"][0]
        assert answer["response"]["status"].split()[0] == status
        assert (answer["resource"]["id"] == a["Patient"]["id"]) is same
    assert admin_read(client, f"Patient/{a['Patient']['id']}")["address"][0]["line"] == ["Brink 200"]


@pytest.mark.parametrize("criteria", ["_summary=count", "_count=1", "_sort=_id", "_elements=name"])
def test_result_parameters_select_nothing_and_are_refused(database_url: str, criteria: str) -> None:
    """`_summary=count` alone matched nothing, so every conditional write with it created a new
    record: criteria must select resources."""
    with make_client(database_url) as client:
        load_directory(client)
        authorize(client, "praktijk-de-geinoord-his")
        created = client.post(
            "/fhir/Patient", json=patient(fresh_bsn()), headers={**FHIR_JSON, "If-None-Exist": criteria}
        )
        assert created.status_code == 400, created.text
        assert created.json()["issue"][0]["expression"] == ["If-None-Exist"]
        updated = client.put(f"/fhir/Patient?{criteria}", json=patient(fresh_bsn()), headers=FHIR_JSON)
        assert updated.status_code == 400, updated.text
        assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0
