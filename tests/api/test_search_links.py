"""One level of chaining and `_has`, each run as the caller: they narrow only by what it may see.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.workflow import linked_search
from tests.conftest import authorize, make_client
from tests.wor import BSN, load_directory, send_referral, task_for

GP_A, GP_B, W1 = "praktijk-de-geinoord-his", "praktijk-batau-his", "welzijn-de-brug-cms"


@pytest.fixture
def scene(database_url: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    with make_client(database_url) as client:
        load_directory(client)
        authorize(client, GP_A)
        sr = send_referral(client)
        task = task_for(client, sr["id"])
        patient = client.get(f"/fhir/{sr['subject']['reference']}").json()
        yield client, {"sr": sr, "task": task, "bsn": patient["identifier"][0]["value"]}


def ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [e["resource"]["id"] for e in resp.json().get("entry", []) if e["search"]["mode"] == "match"]


def test_a_typed_chain_finds_the_task_of_a_referral(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, s = scene
    ident = s["sr"]["identifier"][0]
    found = client.get("/fhir/Task", params={"focus:ServiceRequest.identifier": f"{ident['system']}|{ident['value']}"})
    assert ids(found) == [s["task"]["id"]]
    assert ids(client.get("/fhir/Task", params={"focus:ServiceRequest.identifier": "nothing-like-it"})) == []
    by_bsn = client.get("/fhir/Task", params={"patient.identifier": f"{BSN}|{s['bsn']}", "status": "requested"})
    assert ids(by_bsn) == [s["task"]["id"]]  # `patient` declares its target: no type needed


def test_has_finds_referrals_by_their_task(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, s = scene
    assert ids(client.get("/fhir/ServiceRequest", params={"_has:Task:focus:status": "requested"})) == [s["sr"]["id"]]
    assert ids(client.get("/fhir/ServiceRequest", params={"_has:Task:focus:status": "completed"})) == []
    counted = client.get("/fhir/ServiceRequest", params={"_has:Task:focus:status": "requested", "_summary": "count"})
    assert counted.json()["total"] == 1


def test_links_never_reach_outside_the_compartment(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, s = scene
    authorize(client, GP_B)  # knows nothing of A's patient, referral or task
    assert ids(client.get("/fhir/Task", params={"patient.identifier": f"{BSN}|{s['bsn']}"})) == []
    assert ids(client.get("/fhir/ServiceRequest", params={"_has:Task:focus:status": "requested"})) == []
    authorize(client, GP_A)
    assert ids(client.get("/fhir/Task", params={"patient.identifier": f"{BSN}|{s['bsn']}"})) == [s["task"]["id"]]


def test_a_minimised_caller_cannot_chain_on_what_its_view_withholds(
    scene: tuple[TestClient, dict[str, Any]],
) -> None:
    client, s = scene
    authorize(client, W1)
    assert ids(client.get("/fhir/Task", params={"focus:ServiceRequest.status": "active"})) == [s["task"]["id"]]
    withheld = client.get("/fhir/Task", params={"focus:ServiceRequest.reason-code": "Z12"})
    assert withheld.status_code == 403 and withheld.json()["issue"][0]["code"] == "forbidden"


def test_too_many_linked_matches_is_400(
    scene: tuple[TestClient, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _s = scene
    send_referral(client)
    monkeypatch.setattr(linked_search, "MAX_LINKED", 1)
    resp = client.get("/fhir/Task", params={"focus:ServiceRequest.status": "active"})
    assert resp.status_code == 400 and resp.json()["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize(
    "query",
    [
        "Task?focus.status=active",  # focus declares no target: the type must be named
        "Task?focus:ServiceRequest.subject:Patient.identifier=x",  # two levels
        "ServiceRequest?_has:Task:focus:_has:Communication:about:status=x",  # nested _has
        "ServiceRequest?_has:Task:status:status=requested",  # Task.status is no reference
    ],
)
def test_deeper_or_untyped_links_are_400_under_strict(
    scene: tuple[TestClient, dict[str, Any]], query: str
) -> None:
    client, _s = scene
    strict = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text


def test_subscription_criteria_may_not_chain(scene: tuple[TestClient, dict[str, Any]]) -> None:
    client, _s = scene
    sub = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "worklist",
        "criteria": "Task?focus:ServiceRequest.status=active",
        "channel": {"type": "rest-hook", "endpoint": "https://his.example.nl/hook", "payload": "application/fhir+json"},
    }
    resp = client.post("/fhir/Subscription", json=sub, headers={"content-type": "application/fhir+json"})
    assert resp.status_code == 422 and "chain" in resp.json()["issue"][0]["diagnostics"]
