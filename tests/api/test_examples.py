"""Replay examples/scenarios in the documented order: the files never drift from the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_client
from tests.wor import FHIR_JSON, load_directory

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
PATCH = {"content-type": "application/json-patch+json"}


def read(name: str, **placeholders: str) -> Any:
    text = (SCENARIOS / name).read_text(encoding="utf-8")
    for key, value in placeholders.items():
        text = text.replace(f"<{key}>", value)
    return orjson.loads(text)


@pytest.fixture
def gateway(sqlite_url: str) -> Any:
    with make_client(sqlite_url) as client:
        load_directory(client)
        yield client


def referral(client: TestClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = client.post("/fhir", json=read(name), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]
    task = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{sr['id']}"}).json()["entry"][0][
        "resource"
    ]
    return sr, task


def patch(client: TestClient, task: dict[str, Any], name: str, **placeholders: str) -> dict[str, Any]:
    resp = client.patch(
        f"/fhir/Task/{task['id']}",
        json=read(name, **placeholders),
        headers={**PATCH, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_happy_path_scenario(gateway: TestClient) -> None:
    sr, task = referral(gateway, "01-referral-bundle.json")
    assert task["owner"]["reference"] == "Organization/welzijn-de-brug"
    task = patch(gateway, task, "02-accept.patch.json")
    task = patch(gateway, task, "03-intake-held.patch.json")
    patient_id = sr["subject"]["reference"].split("/")[1]
    ids = {}
    for key, name in (
        ("intake-id", "04a-positive-health-intake.json"),
        ("closure-id", "04b-positive-health-closure.json"),
    ):
        resp = gateway.post(
            "/fhir/QuestionnaireResponse", json=read(name, **{"patient-id": patient_id}), headers=FHIR_JSON
        )
        assert resp.status_code == 201, resp.text
        ids[key] = resp.json()["id"]
    task = patch(gateway, task, "04c-complete.patch.json", **ids)
    assert task["status"] == "completed"
    comms = gateway.get("/fhir/Communication", params={"based-on": f"ServiceRequest/{sr['id']}"}).json()[
        "entry"
    ]
    assert len(comms) == 3
    resend = gateway.post("/fhir", json=read("09-resend.json"), headers=FHIR_JSON)
    assert resend.status_code == 200
    assert resend.json()["entry"][2]["resource"]["id"] == sr["id"]
    assert gateway.get("/fhir/Task", params={"_summary": "count"}).json()["total"] == 1


def test_cancel_and_reject_scenarios(gateway: TestClient) -> None:
    _, task = referral(gateway, "01-referral-bundle.json")
    assert patch(gateway, task, "05-cancel-by-gp.patch.json")["status"] == "cancelled"
    second = read("01-referral-bundle.json")
    second["entry"][2]["resource"]["identifier"][0]["value"] = "VRW-2026-0099"
    resp = gateway.post("/fhir", json=second, headers=FHIR_JSON)
    sr2 = resp.json()["entry"][2]["resource"]
    task2 = gateway.get("/fhir/Task", params={"focus": f"ServiceRequest/{sr2['id']}"}).json()["entry"][0][
        "resource"
    ]
    assert patch(gateway, task2, "06-reject.patch.json")["status"] == "rejected"


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("07-unroutable-address.json", 422, "business-rule"), ("08-invalid-bsn.json", 422, "value")],
)
def test_error_scenarios(gateway: TestClient, name: str, status: int, code: str) -> None:
    resp = gateway.post("/fhir", json=read(name), headers=FHIR_JSON)
    assert resp.status_code == status
    assert resp.json()["issue"][0]["code"] == code


def test_patient_moved_scenario(gateway: TestClient) -> None:
    """10: the example patient, moved to IJsselstein, referred again: routed on the new address;
    the open referral stays at De Brug, which (and the practice) gets an address-changed notice."""
    _sr, first = referral(gateway, "01-referral-bundle.json")
    moved, task = referral(gateway, "10-patient-moved.json")
    assert task["owner"]["reference"] == "Organization/welzijn-ijsselstein-samen"
    assert moved["subject"] == _sr["subject"]  # the same Patient record, a new version
    notices = gateway.get("/fhir/Communication", params={"about": f"Task/{first['id']}"}).json()["entry"]
    assert [n["resource"]["category"][0]["coding"][0]["code"] for n in notices] == ["address-changed"]
    still = gateway.get(f"/fhir/Task/{first['id']}").json()
    assert still["owner"]["reference"] == "Organization/welzijn-de-brug"
