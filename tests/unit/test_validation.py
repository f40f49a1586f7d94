"""Every WoR profile rule and base-spec check, each with a failing and a passing case.

Each case mutates a valid base resource and states the one issue it must produce (severity,
issue code, FHIRPath expression) or, for a passing case, that the result has no issues at all.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_gateway.fhir.outcome import Invalid, Issue
from fhir_gateway.validation import ProfileSet, Validator, default_profiles_dir

WOR = "https://wor.example.nl/fhir"
ICPC = "http://hl7.org/fhir/sid/icpc-1-nl"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
CAT = {"coding": [{"system": f"{WOR}/CodeSystem/wor-category", "code": "social-prescribing"}]}

BASE: dict[str, dict[str, Any]] = {
    "ServiceRequest": {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.4.6.1.12345678", "value": "REF-2026-0001"}],
        "status": "active",
        "intent": "order",
        "category": [CAT],
        "subject": {"reference": "Patient/p-1"},
        "authoredOn": "2026-11-02T09:30:00+01:00",
        "requester": {"reference": "Practitioner/gp-1"},
        "reasonCode": [{"coding": [{"system": ICPC, "code": "Z12", "display": "Relatieprobleem partner"}]}],
        "supportingInfo": [{"reference": "Consent/c-1"}],
        "note": [{"text": "Eenzaam sinds de scheiding."}],
    },
    "Task": {
        "resourceType": "Task",
        "id": "t-1",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": "ServiceRequest/sr-1"},
        "for": {"reference": "Patient/p-1"},
        "authoredOn": "2026-11-02T09:31:00+01:00",
        "requester": {"reference": "Organization/gp-practice"},
        "owner": {"reference": "Organization/welzijn-1"},
        "businessStatus": {"coding": [{"system": f"{WOR}/CodeSystem/wor-milestones", "code": "received"}]},
        "restriction": {"period": {"start": "2026-11-02", "end": "2026-11-16"}},
    },
    "Consent": {
        "resourceType": "Consent",
        "id": "c-1",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-1"},
        "dateTime": "2026-11-02T09:25:00+01:00",
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
        "provision": {
            "type": "permit",
            "code": [
                {"coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "contact-details"}]},
                {"coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "social-question"}]},
            ],
        },
    },
    "Patient": {
        "resourceType": "Patient",
        "id": "p-1",
        "identifier": [{"system": BSN, "value": "999911120"}],
        "name": [{"family": "Jansen", "given": ["Johanna"]}],
        "gender": "female",
        "birthDate": "1958-04-12",
        "address": [{"line": ["Dorpsstraat 1"], "postalCode": "3431 AB", "city": "Nieuwegein"}],
    },
    "Practitioner": {
        "resourceType": "Practitioner",
        "id": "gp-1",
        "identifier": [{"system": AGB, "value": "01234567"}],
        "name": [{"family": "de Vries", "prefix": ["dr."]}],
    },
    "Organization": {
        "resourceType": "Organization",
        "id": "welzijn-1",
        "identifier": [{"system": AGB, "value": "12345678"}],
        "name": "Welzijn Nieuwegein",
    },
    "CarePlan": {
        "resourceType": "CarePlan",
        "id": "cp-1",
        "status": "active",
        "intent": "plan",
        "category": [CAT],
        "subject": {"reference": "Patient/p-1"},
        "supportingInfo": [{"reference": "ServiceRequest/sr-1"}],
        "activity": [
            {
                "detail": {
                    "status": "in-progress",
                    "code": {
                        "coding": [{"system": f"{WOR}/CodeSystem/wor-activity-categories", "code": "sport"}]
                    },
                }
            }
        ],
    },
    "Communication": {
        "resourceType": "Communication",
        "id": "fb-1",
        "basedOn": [{"reference": "ServiceRequest/sr-1"}],
        "status": "completed",
        "category": [{"coding": [{"system": f"{WOR}/CodeSystem/wor-feedback-kinds", "code": "intake-held"}]}],
        "subject": {"reference": "Patient/p-1"},
        "about": [{"reference": "Task/t-1"}],
        "sent": "2026-11-10T14:00:00+01:00",
        "recipient": [{"reference": "Practitioner/gp-1"}],
        "sender": {"reference": "Organization/welzijn-1"},
        "payload": [{"contentString": "Intake gehouden op 10 november."}],
    },
}

DEL = object()  # mutation value: remove the element


def mutate(resource: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Copy `resource` and apply {"a.0.b": value} changes (DEL removes; missing containers are created)."""
    res = copy.deepcopy(resource)
    for path, value in changes.items():
        steps: list[str | int] = [int(s) if s.isdigit() else s for s in path.split(".")]
        node: Any = res
        for step in steps[:-1]:
            node = node[step] if isinstance(step, int) or step in node else node.setdefault(step, {})
        last = steps[-1]
        if value is DEL:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    return res


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(ProfileSet.load(default_profiles_dir()))


def issues_of(validator: Validator, resource: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(i.severity, i.code, i.expression) for i in validator.validate(resource)]


@pytest.mark.parametrize("rtype", sorted(BASE))
def test_base_fixtures_are_valid(validator: Validator, rtype: str) -> None:
    """The bases are clean for both the R4B models and the WoR profiles, so each case tests one rule."""
    get_fhir_model_class(rtype).model_validate(BASE[rtype])
    assert validator.validate(BASE[rtype]) == []


E, W = "error", "warning"
SR, TK, CO, PA, PR, OR, CP, CM = (
    "ServiceRequest",
    "Task",
    "Consent",
    "Patient",
    "Practitioner",
    "Organization",
    "CarePlan",
    "Communication",
)

# (base, changes, expected issue or None for "no issues at all")
CASES: list[tuple[str, dict[str, Any], tuple[str, str, str] | None]] = [
    # --- WorServiceRequest
    (SR, {"identifier": DEL}, (E, "required", "ServiceRequest.identifier")),
    (SR, {"identifier.0.system": DEL}, (E, "required", "ServiceRequest.identifier[0].system")),
    (SR, {"identifier.0.value": DEL}, (E, "required", "ServiceRequest.identifier[0].value")),
    (SR, {"identifier.1": {"system": "urn:x", "value": "2"}}, None),
    (SR, {"status": DEL}, (E, "required", "ServiceRequest.status")),
    (SR, {"intent": "plan"}, (E, "value", "ServiceRequest.intent")),
    (SR, {"category": DEL}, (E, "required", "ServiceRequest.category")),
    (SR, {"category.0.coding.0.system": "urn:other"}, (E, "required", "ServiceRequest.category")),
    (SR, {"category.1": CAT}, (E, "structure", "ServiceRequest.category")),
    (SR, {"category.1": {"text": "verwijzing"}}, None),
    (
        SR,
        {"category.0.coding.0.code": "social"},
        (E, "code-invalid", "ServiceRequest.category[0].coding[0].code"),
    ),
    (SR, {"subject": {"reference": "Group/g-1"}}, (E, "value", "ServiceRequest.subject.reference")),
    (
        SR,
        {"subject": {"reference": "urn:uuid:1", "type": "Group"}},
        (E, "value", "ServiceRequest.subject.type"),
    ),
    (
        SR,
        {"subject": {"reference": "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7", "type": "Patient"}},
        None,
    ),
    (SR, {"subject": {"reference": "https://his.example.nl/fhir/Patient/p-1/_history/3"}}, None),
    (SR, {"authoredOn": DEL}, (E, "required", "ServiceRequest.authoredOn")),
    (SR, {"requester": DEL}, (E, "required", "ServiceRequest.requester")),
    (SR, {"requester": {"reference": "Patient/p-1"}}, (E, "value", "ServiceRequest.requester.reference")),
    (SR, {"requester": {"reference": "PractitionerRole/r-1"}}, None),
    (SR, {"requester": {"reference": "Organization/o-1"}}, None),
    (
        SR,
        {"performer": [{"reference": "Organization/a"}, {"reference": "Organization/b"}]},
        (E, "structure", "ServiceRequest.performer"),
    ),
    (SR, {"performer": [{"reference": "Organization/a"}]}, None),
    (SR, {"performer": [{"reference": "Device/a"}]}, (E, "value", "ServiceRequest.performer[0].reference")),
    (SR, {"reasonCode": DEL}, (E, "required", "ServiceRequest.reasonCode")),
    (
        SR,
        {"reasonCode.0.coding.0.code": "Z17"},
        (E, "code-invalid", "ServiceRequest.reasonCode[0].coding[0].code"),
    ),
    (
        SR,
        {"reasonCode.0.coding.0.code": "Z26"},
        (E, "code-invalid", "ServiceRequest.reasonCode[0].coding[0].code"),
    ),
    (
        SR,
        {"reasonCode.0.coding.0.code": "P15"},
        (E, "code-invalid", "ServiceRequest.reasonCode[0].coding[0].code"),
    ),
    (
        SR,
        {"reasonCode.0.coding.0.code": "T90"},
        (E, "code-invalid", "ServiceRequest.reasonCode[0].coding[0].code"),
    ),
    (
        SR,
        {"reasonCode.0.coding.0.code": "Z120"},
        (E, "code-invalid", "ServiceRequest.reasonCode[0].coding[0].code"),
    ),
    (SR, {"reasonCode.0.coding.0.code": "Z01"}, None),
    (SR, {"reasonCode.0.coding.0.code": "Z29"}, None),
    (SR, {"reasonCode.0.coding.0.code": "Z12.01"}, None),
    (SR, {"reasonCode.0.coding.0.code": "P03"}, None),
    (SR, {"reasonCode.0.coding.0.code": "P29"}, None),
    (SR, {"reasonCode.0.coding.0.code": "P06.01"}, None),
    (SR, {"reasonCode.0": {"text": "eenzaam"}}, (E, "code-invalid", "ServiceRequest.reasonCode[0]")),
    (
        SR,
        {"reasonCode.0.coding.0": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "Z60.2"}},
        (E, "code-invalid", "ServiceRequest.reasonCode[0]"),
    ),
    (SR, {"reasonCode.0.coding.1": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "Z60.2"}}, None),
    (
        SR,
        {"reasonCode.1": {"coding": [{"system": ICPC, "code": "K86"}]}},
        (E, "code-invalid", "ServiceRequest.reasonCode[1].coding[0].code"),
    ),
    (SR, {"supportingInfo": DEL}, (E, "required", "ServiceRequest.supportingInfo")),
    (SR, {"supportingInfo.0": {"reference": "DocumentReference/d-1"}}, (E, "invariant", "ServiceRequest")),
    (SR, {"supportingInfo.0": {"reference": "urn:uuid:1"}}, (E, "invariant", "ServiceRequest")),
    (SR, {"supportingInfo.0": {"reference": "urn:uuid:1", "type": "Consent"}}, None),
    (SR, {"supportingInfo.0": {"reference": "https://his.example.nl/fhir/Consent/c-1"}}, None),
    (SR, {"supportingInfo.1": {"reference": "DocumentReference/d-1"}}, None),
    # --- WorTask
    (TK, {"status": DEL}, (E, "required", "Task.status")),
    (TK, {"intent": "plan"}, (E, "value", "Task.intent")),
    (TK, {"code": DEL}, (E, "required", "Task.code")),
    (TK, {"code.coding.0.code": "approve"}, (E, "value", "Task.code")),
    (TK, {"code.text": "WoR"}, None),
    (TK, {"focus": DEL}, (E, "required", "Task.focus")),
    (TK, {"focus": {"reference": "CarePlan/cp-1"}}, (E, "value", "Task.focus.reference")),
    (TK, {"for": DEL}, (E, "required", "Task.for")),
    (TK, {"for": {"reference": "Group/g"}}, (E, "value", "Task.for.reference")),
    (TK, {"authoredOn": DEL}, (E, "required", "Task.authoredOn")),
    (TK, {"requester": DEL}, (E, "required", "Task.requester")),
    (TK, {"requester": {"reference": "Device/x"}}, (E, "value", "Task.requester.reference")),
    (TK, {"owner": DEL}, (E, "required", "Task.owner")),
    (TK, {"owner": {"reference": "Practitioner/x"}}, (E, "value", "Task.owner.reference")),
    (TK, {"businessStatus.coding.0.code": "lost"}, (E, "code-invalid", "Task.businessStatus.coding[0].code")),
    (TK, {"businessStatus": {"text": "bezig"}}, (E, "code-invalid", "Task.businessStatus")),
    (TK, {"businessStatus.coding.0.code": "closed-goal-reached"}, None),
    (TK, {"businessStatus": DEL}, None),
    (
        TK,
        {"statusReason": {"coding": [{"system": "urn:other", "code": "x"}]}},
        (W, "code-invalid", "Task.statusReason"),
    ),
    (TK, {"statusReason": {"text": "verhuisd"}}, (W, "code-invalid", "Task.statusReason")),
    (TK, {"status": "rejected"}, (E, "invariant", "Task")),
    (
        TK,
        {
            "status": "rejected",
            "statusReason": {
                "coding": [{"system": f"{WOR}/CodeSystem/wor-rejection-reasons", "code": "out-of-area"}]
            },
        },
        None,
    ),
    (TK, {"restriction": {"repetitions": 1}}, (E, "required", "Task.restriction.period")),
    (TK, {"restriction": DEL}, None),
    (TK, {"status": "done"}, (E, "code-invalid", "Task.status")),
    (TK, {"priority": "high"}, (E, "code-invalid", "Task.priority")),
    (TK, {"priority": "urgent"}, None),
    # --- WorConsent
    (CO, {"status": DEL}, (E, "required", "Consent.status")),
    (CO, {"status": "yes"}, (E, "code-invalid", "Consent.status")),
    (CO, {"status": "inactive"}, None),
    (CO, {"scope.coding.0.code": "treatment"}, (E, "value", "Consent.scope")),
    (CO, {"category": DEL}, (E, "required", "Consent.category")),
    (CO, {"patient": DEL}, (E, "required", "Consent.patient")),
    (CO, {"patient": {"reference": "RelatedPerson/r"}}, (E, "value", "Consent.patient.reference")),
    (CO, {"dateTime": DEL}, (E, "required", "Consent.dateTime")),
    (CO, {"provision": DEL}, (E, "required", "Consent.provision")),
    (CO, {"provision.type": DEL}, (E, "required", "Consent.provision.type")),
    (CO, {"provision.type": "allow"}, (E, "code-invalid", "Consent.provision.type")),
    (CO, {"provision.type": "deny"}, (E, "invariant", "Consent")),
    (CO, {"provision.code": DEL}, (E, "required", "Consent.provision.code")),
    (
        CO,
        {"provision.code.0.coding.0.code": "everything"},
        (E, "code-invalid", "Consent.provision.code[0].coding[0].code"),
    ),
    (CO, {"provision.code.0.coding.0.code": "diagnosis-codes"}, (E, "invariant", "Consent")),
    (
        CO,
        {
            "provision.code.2": {
                "coding": [{"system": f"{WOR}/CodeSystem/wor-consent-scope", "code": "clinical-notes"}]
            }
        },
        None,
    ),
    # --- WorPatient
    (PA, {"identifier": DEL}, (E, "required", "Patient.identifier")),
    (PA, {"identifier.0.value": "999911121"}, (E, "value", "Patient.identifier[0].value")),
    (PA, {"identifier.0.value": "12345678"}, (E, "value", "Patient.identifier[0].value")),
    (PA, {"identifier.0.value": "999999151"}, None),
    (PA, {"identifier.1": {"system": BSN, "value": "999999151"}}, (E, "structure", "Patient.identifier")),
    (PA, {"identifier.0.system": DEL}, (E, "required", "Patient.identifier[0].system")),
    (PA, {"identifier.0": {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "x1"}}, None),
    (PA, {"name": DEL}, (E, "required", "Patient.name")),
    (PA, {"address.0.postalCode": DEL}, (E, "required", "Patient.address[0].postalCode")),
    (PA, {"address.0.postalCode": "34311"}, (W, "invariant", "Patient")),
    (PA, {"address.0.postalCode": "3431AB"}, None),
    (PA, {"address.0.postalCode": "B-2000", "address.0.country": "BE"}, None),
    (PA, {"gender": "f"}, (E, "code-invalid", "Patient.gender")),
    (PA, {"address.0.use": "house"}, (E, "code-invalid", "Patient.address[0].use")),
    (
        PA,
        {"telecom": [{"system": "mobile", "value": "0612345678"}]},
        (E, "code-invalid", "Patient.telecom[0].system"),
    ),
    # --- WorPractitioner
    (PR, {"identifier.0.system": "urn:other"}, (E, "invariant", "Practitioner")),
    (PR, {"identifier.0": {"system": "http://fhir.nl/fhir/NamingSystem/big", "value": "19012345601"}}, None),
    (PR, {"identifier.0.value": "1234567"}, (E, "value", "Practitioner.identifier[0].value")),
    (PR, {"identifier.1": {"system": AGB, "value": "01234568"}}, (E, "structure", "Practitioner.identifier")),
    (PR, {"identifier": DEL}, (E, "required", "Practitioner.identifier")),
    (PR, {"name": DEL}, (E, "required", "Practitioner.name")),
    (PR, {"gender": "man"}, (E, "code-invalid", "Practitioner.gender")),
    # --- WorOrganization
    (OR, {"identifier.0.system": "urn:other"}, (E, "invariant", "Organization")),
    (OR, {"identifier.0": {"system": URA, "value": "90000123"}}, None),
    (OR, {"identifier.0.value": "1234567A"}, (E, "value", "Organization.identifier[0].value")),
    (OR, {"identifier.1": {"system": AGB, "value": "87654321"}}, (E, "structure", "Organization.identifier")),
    (OR, {"identifier.1": {"system": URA, "value": "90000123"}}, None),
    (OR, {"name": DEL}, (E, "required", "Organization.name")),
    # --- WorCarePlan
    (CP, {"status": DEL}, (E, "required", "CarePlan.status")),
    (CP, {"status": "closed"}, (E, "code-invalid", "CarePlan.status")),
    (CP, {"intent": "order"}, (E, "value", "CarePlan.intent")),
    (CP, {"category": DEL}, (E, "required", "CarePlan.category")),
    (CP, {"category.0": {"text": "welzijn"}}, (E, "required", "CarePlan.category")),
    (CP, {"subject": {"reference": "Group/g"}}, (E, "value", "CarePlan.subject.reference")),
    (CP, {"supportingInfo": DEL}, (E, "required", "CarePlan.supportingInfo")),
    (CP, {"supportingInfo.0": {"reference": "Task/t-1"}}, (E, "invariant", "CarePlan")),
    (CP, {"supportingInfo.1": {"reference": "Task/t-1"}}, None),
    (CP, {"basedOn": [{"reference": "ServiceRequest/sr-1"}]}, (E, "value", "CarePlan.basedOn[0].reference")),
    (CP, {"basedOn": [{"reference": "CarePlan/cp-0"}]}, None),
    (
        CP,
        {"activity.0.detail.code": {"text": "schaken"}},
        (W, "code-invalid", "CarePlan.activity[0].detail.code"),
    ),
    (CP, {"activity.0.detail.code.coding.0.code": "huiskamer"}, None),
    (CP, {"activity.0.detail.status": "busy"}, (E, "code-invalid", "CarePlan.activity[0].detail.status")),
    # --- WorFeedbackCommunication
    (CM, {"basedOn": DEL}, (E, "required", "Communication.basedOn")),
    (CM, {"basedOn.0": {"reference": "Task/t-1"}}, (E, "value", "Communication.basedOn[0].reference")),
    (CM, {"status": "sent"}, (E, "code-invalid", "Communication.status")),
    (CM, {"category": DEL}, (E, "required", "Communication.category")),
    (
        CM,
        {"category.0.coding.0.code": "done"},
        (E, "code-invalid", "Communication.category[0].coding[0].code"),
    ),
    (
        CM,
        {"category.0": {"coding": [{"system": "urn:other", "code": "x"}]}},
        (E, "code-invalid", "Communication.category[0]"),
    ),
    (CM, {"category.0.coding.0.code": "activity-found"}, None),
    (CM, {"about": DEL}, (E, "required", "Communication.about")),
    (CM, {"about.0": {"reference": "ServiceRequest/sr-1"}}, (E, "value", "Communication.about[0].reference")),
    (CM, {"recipient": DEL}, (E, "required", "Communication.recipient")),
    (CM, {"recipient.0": {"reference": "Patient/p-1"}}, (E, "value", "Communication.recipient[0].reference")),
    (CM, {"recipient.0": {"reference": "Organization/gp-practice"}}, None),
    (CM, {"payload": DEL}, (E, "required", "Communication.payload")),
    (CM, {"sent": DEL}, (W, "invariant", "Communication")),
    (CM, {"sent": DEL, "status": "in-progress"}, None),
    # --- JSON hygiene (any resource)
    (SR, {"note.0.text": None}, (E, "structure", "ServiceRequest.note[0].text")),
    (SR, {"note": []}, (E, "structure", "ServiceRequest.note")),
    (SR, {"note.0": {}}, (E, "structure", "ServiceRequest.note[0]")),
    (SR, {"subject.display": ""}, (E, "structure", "ServiceRequest.subject.display")),
    (PA, {"name.0.given": ["Johanna", None]}, (E, "structure", "Patient.name[0].given[1]")),
    (PA, {"name.0.given": ["Johanna", None], "name.0._given": [None, {"id": "g2"}]}, None),
    (
        PA,
        {"text": {"status": "done", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}},
        (E, "code-invalid", "Patient.text.status"),
    ),
    # --- codes of local CodeSystems are checked wherever they appear
    (
        SR,
        {
            "orderDetail": [
                {"coding": [{"system": f"{WOR}/CodeSystem/wor-activity-categories", "code": "golf"}]}
            ]
        },
        (E, "code-invalid", "ServiceRequest.orderDetail[0].coding[0].code"),
    ),
    # --- BSN anywhere (here: a logical reference)
    (
        SR,
        {"subject": {"identifier": {"system": BSN, "value": "123456789"}}},
        (E, "value", "ServiceRequest.subject.identifier.value"),
    ),
    (SR, {"subject": {"identifier": {"system": BSN, "value": "999911120"}}}, None),
]


@pytest.mark.parametrize(
    ("rtype", "changes", "expected"),
    CASES,
    ids=[f"{r}:{','.join(c)}:{'ok' if e is None else e[1]}" for r, c, e in CASES],
)
def test_rule(
    validator: Validator, rtype: str, changes: dict[str, Any], expected: tuple[str, str, str] | None
) -> None:
    found = issues_of(validator, mutate(BASE[rtype], changes))
    if expected is None:
        assert found == []
    else:
        assert expected in found, found


def test_issues_name_profile_and_rule(validator: Validator) -> None:
    (issue,) = validator.validate(mutate(BASE[SR], {"reasonCode.0.coding.0.code": "Z17"}))
    assert "WorServiceRequest" in issue.diagnostics and "wor-eligible-reasons" in issue.diagnostics
    (issue,) = validator.validate(mutate(BASE[TK], {"status": "rejected"}))
    assert "wor-task-1" in issue.diagnostics and issue.severity == "error"


# ------------------------------------------------------------------ profile selection


def test_unknown_claimed_profile_warns_and_default_still_applies(validator: Validator) -> None:
    sr = mutate(
        BASE[SR], {"meta": {"profile": ["http://example.org/StructureDefinition/other"]}, "intent": "plan"}
    )
    found = issues_of(validator, sr)
    assert (W, "not-supported", "ServiceRequest.meta.profile[0]") in found
    assert (E, "value", "ServiceRequest.intent") in found


def test_claimed_profile_of_other_type_is_an_error(validator: Validator) -> None:
    sr = mutate(BASE[SR], {"meta": {"profile": [f"{WOR}/StructureDefinition/WorTask"]}})
    assert (E, "invalid", "ServiceRequest.meta.profile[0]") in issues_of(validator, sr)


def test_claimed_known_profile_with_version(validator: Validator) -> None:
    sr = mutate(BASE[SR], {"meta": {"profile": [f"{WOR}/StructureDefinition/WorServiceRequest|0.1.0"]}})
    assert validator.validate(sr) == []


def test_explicit_profile_argument(validator: Validator) -> None:
    assert validator.validate(BASE[SR], f"{WOR}/StructureDefinition/WorServiceRequest") == []
    wrong_type = validator.validate(BASE[SR], f"{WOR}/StructureDefinition/WorTask")
    assert [(i.severity, i.code) for i in wrong_type] == [(E, "invalid")]
    unknown = validator.validate(BASE[SR], "http://example.org/nope")
    assert [(i.severity, i.code) for i in unknown] == [(E, "not-supported")]


def test_ensure_valid_raises_422(validator: Validator) -> None:
    assert validator.ensure_valid(mutate(BASE[CM], {"sent": DEL}))[0].severity == W
    with pytest.raises(Invalid) as caught:
        validator.ensure_valid(mutate(BASE[SR], {"status": "foo"}))
    assert caught.value.status == 422


def test_type_without_profile_gets_core_checks_only(validator: Validator) -> None:
    loc = {"resourceType": "Location", "status": "open", "name": "Buurthuis"}
    assert issues_of(validator, loc) == [(E, "code-invalid", "Location.status")]
    assert validator.validate({"resourceType": "Location", "status": "active"}) == []


def test_missing_resource_type(validator: Validator) -> None:
    assert (E, "structure", None) in issues_of(validator, {"status": "active"})


# ------------------------------------------------------------------ Bundles and contained resources


def _bundle(**changes: Any) -> dict[str, Any]:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i}",
                "resource": copy.deepcopy(BASE[t]),
                "request": {"method": "POST", "url": t},
            }
            for i, t in enumerate((SR, CO, PA))
        ],
    }
    return mutate(bundle, changes)


def test_valid_transaction_bundle(validator: Validator) -> None:
    bundle = _bundle()
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert validator.validate(bundle) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"type": "send"}, (E, "code-invalid", "Bundle.type")),
        ({"entry.1.request.method": "FETCH"}, (E, "code-invalid", "Bundle.entry[1].request.method")),
        ({"entry.0.resource.intent": "plan"}, (E, "value", "Bundle.entry[0].resource.intent")),
        ({"entry.0.resource.status": "new"}, (E, "code-invalid", "Bundle.entry[0].resource.status")),
        (
            {"entry.0.resource.supportingInfo.0.reference": "Patient/p-1"},
            (E, "invariant", "Bundle.entry[0].resource"),
        ),
        (
            {"entry.2.resource.identifier.0.value": "111111111"},
            (E, "value", "Bundle.entry[2].resource.identifier[0].value"),
        ),
        ({"entry.0.resource.note": None}, (E, "structure", "Bundle.entry[0].resource.note")),
    ],
)
def test_bundle_entries_are_validated(
    validator: Validator, changes: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    assert expected in issues_of(validator, _bundle(**{k: v for k, v in changes.items()}))


def test_contained_resources_get_core_checks(validator: Validator) -> None:
    sr = mutate(BASE[SR], {"contained": [{"resourceType": "Patient", "id": "p", "gender": "vrouw"}]})
    assert (E, "code-invalid", "ServiceRequest.contained[0].gender") in issues_of(validator, sr)
    ok = mutate(BASE[SR], {"contained": [{"resourceType": "Patient", "id": "p", "gender": "female"}]})
    assert validator.validate(ok) == []  # a contained Patient is not held to WorPatient


def test_validation_does_not_modify_input(validator: Validator) -> None:
    sr = copy.deepcopy(BASE[SR])
    validator.validate(sr)
    assert sr == BASE[SR]


def test_issue_is_outcome_ready(validator: Validator) -> None:
    (issue,) = validator.validate(mutate(BASE[SR], {"status": "foo"}))
    assert isinstance(issue, Issue)
    assert issue.to_fhir()["expression"] == ["ServiceRequest.status"]


# ------------------------------------------------------------------ fast paths match FHIRPath


def test_every_wor_invariant_has_a_fast_path(validator: Validator) -> None:
    invariants = [inv for p in validator.profiles.profiles.values() for inv in p.invariants]
    assert invariants and all(inv.has_fast_path for inv in invariants)


@pytest.mark.parametrize(
    ("rtype", "changes"),
    [(r, c) for r, c, _ in CASES] + [(r, {}) for r in BASE],
    ids=[f"{r}:{','.join(c)}" for r, c, _ in CASES] + list(BASE),
)
def test_fast_path_agrees_with_fhirpath(validator: Validator, rtype: str, changes: dict[str, Any]) -> None:
    res = mutate(BASE[rtype], changes)
    for prof in validator.profiles.profiles.values():
        if prof.type != rtype:
            continue
        for inv in prof.invariants:
            assert inv.holds(res) == (inv.evaluate(res, {"resource": res}) == [True]), inv.key


@pytest.mark.parametrize(
    ("rtype", "changes"),
    [
        (TK, {"status": DEL}),
        (TK, {"status": DEL, "statusReason": {"text": "x"}}),
        (CM, {"status": DEL, "sent": DEL}),
        (CO, {"provision": {"type": "permit"}}),
        (CO, {"provision.code.0": {"text": "contact"}}),
        (PA, {"address": DEL}),
        (PA, {"address.0.postalCode": DEL}),
        (PA, {"address.0.country": "NL", "address.0.postalCode": "0123 AB"}),
        (PA, {"address.1": {"country": "Nederland", "postalCode": "1012NX"}}),
        (PA, {"address.1": {"country": "DE", "postalCode": "10115"}}),
        (PR, {"identifier.0": {"value": "x"}}),
        (SR, {"supportingInfo.0": {"type": "Consent", "identifier": {"value": "c"}}}),
        (SR, {"supportingInfo.0.reference": "Consent/c-1/_history/2"}),
        (SR, {"supportingInfo.0.reference": "Consent/c-1/extra"}),
        (SR, {"supportingInfo.0.reference": "MyConsent/c-1"}),
        (SR, {"supportingInfo.0.reference": "#consent"}),
    ],
)
def test_fast_path_agrees_on_edge_cases(validator: Validator, rtype: str, changes: dict[str, Any]) -> None:
    test_fast_path_agrees_with_fhirpath(validator, rtype, changes)


def test_edited_expression_falls_back_to_fhirpath(tmp_path: Path) -> None:
    target = tmp_path / "profiles"
    shutil.copytree(default_profiles_dir(), target)
    path = target / "StructureDefinition-wor-task.json"
    sd = json.loads(path.read_text())
    sd["differential"]["element"][0]["constraint"][0]["expression"] = (
        "status = 'rejected' implies statusReason.text.exists()"
    )
    path.write_text(json.dumps(sd))
    v = Validator(ProfileSet.load(target))
    (inv,) = v.profiles.profiles[f"{WOR}/StructureDefinition/WorTask"].invariants
    assert not inv.has_fast_path
    task = mutate(
        BASE[TK],
        {
            "status": "rejected",
            "statusReason": {
                "coding": [{"system": f"{WOR}/CodeSystem/wor-rejection-reasons", "code": "other"}]
            },
        },
    )
    assert (E, "invariant", "Task") in issues_of(v, task)
