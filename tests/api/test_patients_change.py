"""Patients change: a referral that brings a new address, and a patient who moves.

A referral Bundle whose Patient differs from the practice's stored one updates it (a new version
plus a Provenance) and is routed on the new address; open referrals of the patient are never
re-routed, but their welfare organisation and practice get a notice. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.security.clients import get_client
from tests.conftest import authorize, make_client
from tests.wor import (
    BSN,
    DE_BRUG,
    FHIR_JSON,
    IJSSELSTEIN,
    fresh_bsn,
    load_directory,
    put_task,
    reason,
    referral_bundle,
    send_referral,
    task_for,
)

GP = "praktijk-de-geinoord-his"
ADMIN = "gateway-admin"
NOTICE = "address-changed"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as c:
        load_directory(c)
        authorize(c, GP)
        yield c


def entries(resp: Any) -> dict[str, dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return {e["resource"]["resourceType"]: e for e in resp.json()["entry"]}


def notices(client: TestClient, task_id: str) -> list[dict[str, Any]]:
    found = client.get("/fhir/Communication", params={"about": f"Task/{task_id}"}).json()
    return [
        e["resource"]
        for e in found.get("entry", [])
        if any(c.get("code") == NOTICE for cat in e["resource"].get("category", []) for c in cat["coding"])
    ]


def test_a_referral_with_a_new_address_updates_the_patient_and_routes_on_it(client: TestClient) -> None:
    bsn = fresh_bsn()
    first = entries(client.post("/fhir", json=referral_bundle(bsn=bsn), headers=FHIR_JSON))
    patient_id = first["Patient"]["resource"]["id"]
    assert task_for(client, first["ServiceRequest"]["resource"]["id"])["owner"]["reference"] == DE_BRUG

    moved = referral_bundle(bsn=bsn, postcode="3401 AK", number="5")  # IJsselstein
    second = entries(client.post("/fhir", json=moved, headers=FHIR_JSON))
    patient = second["Patient"]
    assert patient["resource"]["id"] == patient_id  # the same record, a new version
    assert patient["response"]["etag"] == 'W/"2"'
    assert patient["resource"]["address"][0]["postalCode"] == "3401 AK"
    task = task_for(client, second["ServiceRequest"]["resource"]["id"])
    assert task["owner"]["reference"] == IJSSELSTEIN  # routed on the address in force

    authorize(client, ADMIN)
    provenance = client.get("/fhir/Provenance", params={"target": f"Patient/{patient_id}/_history/2"}).json()
    updates = [
        e["resource"]
        for e in provenance.get("entry", [])
        if e["resource"]["activity"]["coding"][0]["code"] == "UPDATE"
    ]
    assert len({u["id"] for u in updates}) == len(updates), [u["id"] for u in updates]
    assert len(updates) == 1
    assert f"Patient/{patient_id}/_history/2" in [t["reference"] for t in updates[0]["target"]]
    assert updates[0]["agent"][0]["onBehalfOf"]["reference"] == "Organization/praktijk-de-geinoord"
    assert "referral" in updates[0]["reason"][0]["text"]


def test_the_same_patient_again_writes_no_new_version(client: TestClient) -> None:
    bsn = fresh_bsn()
    entries(client.post("/fhir", json=referral_bundle(bsn=bsn), headers=FHIR_JSON))
    again = entries(client.post("/fhir", json=referral_bundle(bsn=bsn), headers=FHIR_JSON))
    assert again["Patient"]["response"]["etag"] == 'W/"1"'


def test_a_move_notifies_both_parties_of_an_open_referral_and_reroutes_nothing(client: TestClient) -> None:
    bsn = fresh_bsn()
    sr = send_referral(client, bsn=bsn)
    task = task_for(client, sr["id"])
    patient_id = sr["subject"]["reference"].split("/")[1]
    current = client.get(f"/fhir/Patient/{patient_id}").json()
    address = {**current["address"][0], "postalCode": "3401 AK", "line": ["Benschopperstraat 5"]}
    address.pop("_line", None)
    moved = {**current, "address": [address]}
    resp = client.put(f"/fhir/Patient/{patient_id}", json=moved, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert resp.status_code == 200, resp.text

    assert task_for(client, sr["id"])["owner"]["reference"] == DE_BRUG  # not re-routed
    seen_by_practice = notices(client, task["id"])
    assert len(seen_by_practice) == 1
    text = seen_by_practice[0]["payload"][0]["contentString"]
    assert "buiten het werkgebied" in text and "niet opnieuw" in text
    assert "3401" not in text and "Benschopperstraat" not in text  # no address in the notice
    recipients = {r["reference"] for r in seen_by_practice[0]["recipient"]}
    assert DE_BRUG in recipients

    authorize(client, "welzijn-de-brug-cms")
    assert [n["id"] for n in notices(client, task["id"])] == [seen_by_practice[0]["id"]]


def test_a_move_within_the_area_says_so_and_a_closed_referral_gets_nothing(client: TestClient) -> None:
    bsn = fresh_bsn()
    sr = send_referral(client, bsn=bsn)
    task = task_for(client, sr["id"])
    patient_id = sr["subject"]["reference"].split("/")[1]
    current = client.get(f"/fhir/Patient/{patient_id}").json()
    criteria = f"/fhir/Patient?identifier={BSN}|{bsn}"
    nearby = {**current, "address": [{**current["address"][0], "line": ["Dorpsstraat 14"]}]}
    assert client.put(criteria, json=nearby, headers=FHIR_JSON).status_code == 200
    [notice] = notices(client, task["id"])
    assert "in het werkgebied" in notice["payload"][0]["contentString"]

    closed = put_task(client, task_for(client, sr["id"]), status="cancelled", statusReason=reason("Verhuisd"))
    assert closed.status_code == 200, closed.text
    current = client.get(f"/fhir/Patient/{patient_id}").json()
    again = {**current, "address": [{**current["address"][0], "line": ["Dorpsstraat 16"]}]}
    assert client.put(criteria, json=again, headers=FHIR_JSON).status_code == 200
    assert len(notices(client, task["id"])) == 1  # the cancelled referral got no second notice


def test_a_practice_without_patient_update_scope_gets_409_not_stale_routing(database_url: str) -> None:
    with make_client(database_url) as c:
        load_directory(c)
        authorize(c, GP)
        bsn = fresh_bsn()
        entries(c.post("/fhir", json=referral_bundle(bsn=bsn), headers=FHIR_JSON))
        registration = get_client(c.app.state.ctx.database, GP)  # type: ignore[attr-defined]
        assert registration is not None
        narrow = [s for s in registration.scopes if not s.startswith("system/Patient.")] + ["system/Patient.crs"]
        token = c.app.state.tokens.issue(registration, narrow)  # type: ignore[attr-defined]
        c.headers["Authorization"] = f"Bearer {token.access_token}"
        resp = c.post("/fhir", json=referral_bundle(bsn=bsn, postcode="3401 AK"), headers=FHIR_JSON)
        assert resp.status_code == 409, resp.text
        issue = resp.json()["issue"][0]
        assert issue["code"] == "conflict" and "differs" in issue["diagnostics"]
        assert issue["expression"][0].startswith("Bundle.entry[0]")
