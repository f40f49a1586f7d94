"""A practice's own people: a locum not in the public directory can refer, over FHIR and v2.

The practice registers the Practitioner (and gets its role at the practice) in its own
compartment: other practices neither see nor can reference it, the public directory stays the
administrators', and the welfare organisation of a referral sees who referred. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.v2.inbound import parse
from tests.conftest import authorize, make_client
from tests.wor import FHIR_JSON, fresh_bsn, load_directory, referral_bundle, task_for

GP_A, GP_B = "praktijk-de-geinoord-his", "praktijk-batau-his"
PRACTICE_A, PRACTICE_B = "Organization/praktijk-de-geinoord", "Organization/praktijk-batau"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as c:
        load_directory(c)
        authorize(c, GP_A)
        yield c


def locum(agb: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": AGB, "value": agb or f"01{uuid.uuid4().int % 10**6:06d}"}],
        "name": [{"use": "official", "family": "Waarnemer", "given": ["Sanne"]}],
    }


def register(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register a locum as the current practice: (Practitioner, its PractitionerRole)."""
    resp = client.post("/fhir/Practitioner", json=locum(), headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    practitioner = resp.json()
    roles = client.get("/fhir/PractitionerRole", params={"practitioner": f"Practitioner/{practitioner['id']}"})
    [role] = [e["resource"] for e in roles.json()["entry"]]
    return practitioner, role


def refer_by(client: TestClient, requester: str) -> Any:
    bundle = referral_bundle(bsn=fresh_bsn())
    bundle["entry"][2]["resource"]["requester"] = {"reference": requester}
    return client.post("/fhir", json=bundle, headers=FHIR_JSON)


def test_a_locum_registered_by_the_practice_can_refer(client: TestClient) -> None:
    practitioner, role = register(client)
    assert role["organization"]["reference"] == PRACTICE_A
    resp = refer_by(client, f"PractitionerRole/{role['id']}")
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]
    task = task_for(client, sr["id"])
    assert task["requester"]["reference"] == f"PractitionerRole/{role['id']}"

    authorize(client, "welzijn-de-brug-cms")  # the welfare organisation sees who referred
    assert client.get(f"/fhir/PractitionerRole/{role['id']}").status_code == 200
    assert client.get(f"/fhir/Practitioner/{practitioner['id']}").status_code == 200


def test_another_practice_neither_sees_nor_references_the_locum(client: TestClient) -> None:
    practitioner, role = register(client)
    authorize(client, GP_B)
    assert client.get(f"/fhir/Practitioner/{practitioner['id']}").status_code == 404
    listed = client.get("/fhir/Practitioner", params={"_count": "200"}).json()
    ids = {e["resource"]["id"] for e in listed.get("entry", [])}
    assert practitioner["id"] not in ids and "huisarts-de-vries" in ids  # the public directory stays
    by_agb = client.get("/fhir/Practitioner", params={"identifier": practitioner["identifier"][0]["value"]})
    assert by_agb.json().get("entry", []) == []
    resp = refer_by(client, f"PractitionerRole/{role['id']}")
    assert resp.status_code == 422 and resp.json()["issue"][0]["code"] == "not-found"


def test_a_practice_registers_roles_at_itself_only(client: TestClient) -> None:
    practitioner, _role = register(client)
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/{practitioner['id']}"}}
    elsewhere = {**role, "organization": {"reference": PRACTICE_B}}
    assert client.post("/fhir/PractitionerRole", json=elsewhere, headers=FHIR_JSON).status_code == 403
    nowhere = client.post("/fhir/PractitionerRole", json=role, headers=FHIR_JSON)
    assert nowhere.status_code == 422 and nowhere.json()["issue"][0]["expression"] == ["PractitionerRole.organization"]


def test_the_public_directory_stays_the_administrators(client: TestClient) -> None:
    public = client.get("/fhir/Practitioner/huisarts-de-vries").json()
    renamed = {**public, "name": [{"family": "Anders"}]}
    resp = client.put("/fhir/Practitioner/huisarts-de-vries", json=renamed, headers=FHIR_JSON)
    assert resp.status_code == 403 and "public directory" in resp.json()["issue"][0]["diagnostics"]
    own, _role = register(client)
    fixed = {**own, "name": [{"use": "official", "family": "Waarnemer-Jansen"}]}
    assert client.put(f"/fhir/Practitioner/{own['id']}", json=fixed, headers=FHIR_JSON).status_code == 200


def test_a_v2_referral_from_a_new_locum_registers_them_and_is_accepted(database_url: str) -> None:
    """PRD names an AGB the directory does not know: AA (not AR 207 "retry later" forever);
    the locum is registered in the sending practice's compartment."""
    with make_client(database_url) as c:
        load_directory(c)
        authorize(c, GP_B)  # MSH-4 01053417 = Batau-Noord
        message = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_text()
        message = message.replace("El Amrani^Youssef", "Waarnemer^Sanne").replace("01023456^AGB", "01999999^AGB")
        message = message.replace("REF-2026-0001", f"REF-{uuid.uuid4().hex[:8]}").replace("999911120", fresh_bsn())
        resp = c.post("/v2", content=message.encode(), headers={"content-type": "x-application/hl7-v2+er7"})
        msa = parse(resp.content).segment("MSA")
        assert msa is not None and msa.value(1) == "AA", resp.text
        found = c.get("/fhir/Practitioner", params={"identifier": f"{AGB}|01999999"}).json()["entry"]
        assert [e["resource"]["name"][0]["family"] for e in found] == ["Waarnemer"]
        authorize(c, GP_A)
        assert c.get("/fhir/Practitioner", params={"identifier": f"{AGB}|01999999"}).json().get("entry", []) == []


def test_a_conditional_create_matches_the_public_directory_and_own_people_only(client: TestClient) -> None:
    """If-None-Exist on a Practitioner looks among the public directory and the caller's own
    registrations: another practice's locum with the same AGB code is no match."""
    public = client.get("/fhir/Practitioner/huisarts-de-vries").json()
    public_agb = next(i["value"] for i in public["identifier"] if i["system"] == AGB)
    agb = f"01{uuid.uuid4().int % 10**6:06d}"

    def create(identifier: str) -> Any:
        headers = {**FHIR_JSON, "if-none-exist": f"identifier={AGB}|{identifier}"}
        return client.post("/fhir/Practitioner", json=locum(identifier), headers=headers)

    first = create(agb)
    assert first.status_code == 201
    again = create(agb)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    matched = create(public_agb)
    assert matched.status_code == 200 and matched.json()["id"] == "huisarts-de-vries"
    authorize(client, GP_B)
    theirs = create(agb)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert create(agb).json()["id"] == theirs.json()["id"]
    assert create(public_agb).json()["id"] == "huisarts-de-vries"
