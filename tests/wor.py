"""Builders for WoR test data: a valid referral Bundle against the example social map."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
WOR = "https://wor.example.nl/fhir"
ICPC = "http://hl7.org/fhir/sid/icpc-1-nl"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
FHIR_JSON = {"content-type": "application/fhir+json"}
GP_ROLE = "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"  # practice De Geinoord, Nieuwegein
GP_PRACTICE = "Organization/praktijk-de-geinoord"
DE_BRUG = "Organization/welzijn-de-brug"  # welfare organisation for Nieuwegein
IJSSELSTEIN = "Organization/welzijn-ijsselstein-samen"
VALID_BSNS = ("999911120", "999999151", "999990019")


def load_directory(client: TestClient) -> None:
    bundle = orjson.loads((ROOT / "examples" / "directory" / "directory.json").read_bytes())
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text


def fresh_bsn() -> str:
    """A random 9-digit number passing the BSN 11-test: a person no other test refers."""
    while True:
        digits = f"7{uuid.uuid4().int % 10**7:07d}"
        check = sum(int(d) * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11
        if check < 10:
            return digits + str(check)


def patient(bsn: str = "999911120", postcode: str = "3431 AB", number: str = "12") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": BSN, "value": bsn}],
        "name": [{"family": "Jansen", "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1961-04-12",
        "telecom": [{"system": "phone", "value": "06-12345678"}],
        "address": [
            {
                "use": "home",
                "line": [f"Dorpsstraat {number}"],
                "postalCode": postcode,
                "city": "Nieuwegein",
                "_line": [
                    {
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-houseNumber",
                                "valueString": number,
                            }
                        ]
                    }
                ],
            }
        ],
    }


def consent(patient_ref: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": "2026-11-02T09:25:00+01:00",
        "provision": {
            "type": "permit",
            "code": [
                {"coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "contact-details"}]},
                {"coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "social-question"}]},
            ],
        },
    }


def service_request(
    patient_ref: str,
    consent_ref: str,
    referral_id: str,
    *,
    code: str = "Z12",
    requester: str = GP_ROLE,
    consent_type: bool = False,
) -> dict[str, Any]:
    info: dict[str, Any] = {"reference": consent_ref}
    if consent_type:
        info["type"] = "Consent"
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "https://his.hadegeinoord.example.nl/verwijzing", "value": referral_id}],
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": f"{WOR}/CodeSystem/wor-category", "code": "social-prescribing"}]}
        ],
        "subject": {"reference": patient_ref, "type": "Patient"},
        "authoredOn": "2026-11-02T09:30:00+01:00",
        "requester": {"reference": requester},
        "reasonCode": [{"coding": [{"system": ICPC, "code": code}]}],
        "supportingInfo": [info],
        "note": [{"text": "Eenzaam sinds de scheiding; zoekt zinvolle dagbesteding."}],
    }


def referral_bundle(referral_id: str | None = None, **patient_args: str) -> dict[str, Any]:
    """A transaction Bundle: Patient (ifNoneExist on BSN), Consent and ServiceRequest."""
    referral_id = referral_id or f"REF-{uuid.uuid4().hex[:8]}"
    p = patient(**patient_args)
    p_urn, c_urn, s_urn = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    bsn = p["identifier"][0]["value"]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": p_urn,
                "resource": p,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={BSN}|{bsn}"},
            },
            {"fullUrl": c_urn, "resource": consent(p_urn), "request": {"method": "POST", "url": "Consent"}},
            {
                "fullUrl": s_urn,
                "resource": service_request(p_urn, c_urn, referral_id, consent_type=True),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }


def refer_new_patient(client: TestClient) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Post a referral of a patient no other test knows, as the client's current principal:
    (BSN, Patient, Consent, ServiceRequest) as stored."""
    bsn = fresh_bsn()
    resp = client.post("/fhir", json=referral_bundle(bsn=bsn), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    patient_, consent_, sr = (e["resource"] for e in resp.json()["entry"])
    return bsn, patient_, consent_, sr


def send_referral(client: TestClient, **kwargs: Any) -> dict[str, Any]:
    """Post a referral Bundle; return the stored ServiceRequest."""
    resp = client.post("/fhir", json=referral_bundle(**kwargs), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    return next(
        e["resource"] for e in resp.json()["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )


def task_for(client: TestClient, sr_id: str) -> dict[str, Any]:
    found = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{sr_id}"}).json()
    assert len(found.get("entry", [])) == 1, found
    return found["entry"][0]["resource"]


def put_task(client: TestClient, task: dict[str, Any], **changes: Any) -> Any:
    body = {**task, **changes}
    return client.put(
        f"/fhir/Task/{task['id']}",
        json=body,
        headers={**FHIR_JSON, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )


def milestone(code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"{WOR}/CodeSystem/wor-milestones", "code": code}]}


def reason(text: str) -> dict[str, Any]:
    return {"coding": [{"system": f"{WOR}/CodeSystem/wor-rejection-reasons", "code": "other"}], "text": text}


def completion_output(
    intake_qr: str, closure_qr: str, activity: str = "Vrijwilliger bij de voedselbank"
) -> list[dict[str, Any]]:
    """Task.output at completion: the activity found and the Positive Health scores (QR ids)."""

    def typed(system: str, code: str) -> dict[str, Any]:
        return {"coding": [{"system": f"{WOR}/CodeSystem/{system}", "code": code}]}

    return [
        {"type": typed("wor-activity-categories", "volunteering"), "valueString": activity},
        {
            "type": typed("wor-task-output", "positive-health-intake"),
            "valueReference": {"reference": f"QuestionnaireResponse/{intake_qr}"},
        },
        {
            "type": typed("wor-task-output", "positive-health-closure"),
            "valueReference": {"reference": f"QuestionnaireResponse/{closure_qr}"},
        },
    ]
