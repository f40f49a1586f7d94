"""Mappings from the real mappings/ folder: valid R4 output, overlays as data, the template language."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy import compile as fp_compile
from fhirpathpy.models import models

from fhir_gateway.mapping import (
    MappingError,
    deep_merge,
    dutch_public_holidays,
    feedback_for,
    feedback_inputs,
    load_mappings,
    map_file,
    referral_inputs,
    working_days_after,
)
from fhir_gateway.mapping.engine import Expression, Mapping
from fhir_gateway.mapping.loader import MappingSet

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
NOW = "2026-04-24T10:00:00+02:00"  # a Friday; Monday 27 April is King's Day

SR: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "identifier": [{"system": "https://his.example.nl/verwijzing", "value": "ZD-2026-0042"}],
    "requisition": {"system": "https://his.example.nl/verwijzing", "value": "ZD-2026-0042"},
    "status": "active",
    "intent": "order",
    "priority": "routine",
    "category": [
        {
            "coding": [
                {
                    "system": "https://wor.example.nl/fhir/CodeSystem/wor-category",
                    "code": "social-prescribing",
                }
            ]
        }
    ],
    "subject": {"reference": "Patient/pat-1"},
    "authoredOn": "2026-04-23T16:12:00+02:00",
    "occurrenceDateTime": "2026-05-01",
    "requester": {"reference": "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"},
    "reasonCode": [
        {"coding": [{"system": "http://hl7.org/fhir/sid/icpc-1-nl", "code": "Z15"}], "text": "Rouw"}
    ],
    "note": [
        {"text": "Mevrouw is sinds het overlijden van haar man eenzaam."},
        {"text": "Wil graag wandelen."},
    ],
    "supportingInfo": [{"reference": "Consent/con-1"}],
}


def route(region: str, municipality: str) -> dict[str, Any]:
    return {
        "organization": "Organization/welzijn-de-brug",
        "service": "HealthcareService/welzijn-de-brug-wor",
        "region": region,
        "municipality": municipality,
        "reason": "postcode",
    }


TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "task-1",
    "status": "in-progress",
    "intent": "order",
    "businessStatus": {
        "coding": [
            {"system": "https://wor.example.nl/fhir/CodeSystem/wor-milestones", "code": "activity-found"}
        ]
    },
    "focus": {"reference": "ServiceRequest/sr-1"},
    "for": {"reference": "Patient/pat-1"},
    "requester": {"reference": "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"},
    "owner": {"reference": "Organization/welzijn-de-brug"},
    "output": [
        {
            "type": {
                "coding": [
                    {
                        "system": "https://wor.example.nl/fhir/CodeSystem/wor-activity-categories",
                        "code": "sport",
                        "display": "Sport en bewegen",
                    }
                ]
            },
            "valueString": "Wandelgroep Fort Jutphaas",
        },
        {"type": {"text": "intern"}, "valueString": "niet voor de praktijk"},
    ],
}

PH = {
    "intake": {
        "date": "2026-05-04",
        "lichaamsfuncties": 6,
        "mentaalWelbevinden": 4,
        "zingeving": 3,
        "kwaliteitVanLeven": 5,
        "meedoen": 2,
        "dagelijksFunctioneren": 7,
    },
    "closure": {
        "date": "2026-09-01",
        "lichaamsfuncties": 7,
        "mentaalWelbevinden": 6,
        "zingeving": 6,
        "kwaliteitVanLeven": 6,
        "meedoen": 6,
    },
}


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(MAPPINGS)


def validate(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def referral(mappings: MappingSet, name: str, region: str, **kw: Any) -> dict[str, Any]:
    inputs = referral_inputs(route(region, "Nieuwegein"), mappings.region_settings(region), NOW, **kw)
    return mappings.get(name, region).apply(SR, inputs)


@pytest.mark.parametrize("region", ["default", "nieuwegein", "ijsselstein", "not-configured"])
def test_task_is_valid_and_complete(mappings: MappingSet, region: str) -> None:
    task = referral(mappings, "servicerequest-to-task", region)
    validate(task)
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["focus"] == {"reference": "ServiceRequest/sr-1"}
    assert task["for"] == SR["subject"] and task["requester"] == SR["requester"]
    assert task["owner"] == {"reference": "Organization/welzijn-de-brug"}
    assert task["authoredOn"] == NOW and task["restriction"]["period"]["start"] == NOW
    assert task["groupIdentifier"]["value"] == "ZD-2026-0042"


@pytest.mark.parametrize("region", ["default", "nieuwegein", "ijsselstein"])
def test_careplan_is_valid(mappings: MappingSet, region: str) -> None:
    plan = referral(
        mappings, "servicerequest-to-careplan", region, task={"resourceType": "Task", "id": "task-1"}
    )
    validate(plan)
    assert plan["category"][0]["coding"][0]["code"] == "social-prescribing"
    assert plan["supportingInfo"] == [{"reference": "ServiceRequest/sr-1"}]
    assert plan["description"] == "Mevrouw is sinds het overlijden van haar man eenzaam. Wil graag wandelen."
    assert plan["activity"] == [{"reference": {"reference": "Task/task-1"}}]
    assert plan["contributor"][0] == SR["requester"]


def test_careplan_without_task_or_note_omits_them(mappings: MappingSet) -> None:
    sr = {k: v for k, v in SR.items() if k != "note"}
    inputs = referral_inputs(route("default", "Houten"), mappings.region_settings("default"), NOW)
    plan = mappings.get("servicerequest-to-careplan").apply(sr, inputs)
    validate(plan)
    assert "activity" not in plan
    assert plan["description"] == "Rouw"


def test_region_overlay_changes_periods_without_code(mappings: MappingSet) -> None:
    ends = {
        r: referral(mappings, "servicerequest-to-careplan", r)["period"]["end"]
        for r in ("default", "nieuwegein")
    }
    assert ends == {"default": "2026-08-24", "nieuwegein": "2026-10-24"}  # 4 vs 6 months
    deadlines = {
        r: referral(mappings, "servicerequest-to-task", r)["restriction"]["period"]["end"]
        for r in ("default", "ijsselstein")
    }
    assert deadlines == {"default": "2026-05-11", "ijsselstein": "2026-05-19"}  # 10 vs 15 working days
    assert referral(mappings, "servicerequest-to-task", "ijsselstein")["performerType"][0]["text"].endswith(
        "IJsselstein)"
    )
    assert "De Brug" in referral(mappings, "servicerequest-to-careplan", "nieuwegein")["title"]


def test_region_settings_overlay(mappings: MappingSet) -> None:
    default, ijs, nwg = (mappings.region_settings(r) for r in ("default", "ijsselstein", "nieuwegein"))
    assert (default["intake"]["working_days"], default["trajectory"]["months"]) == (10, 4)
    assert default["auto_close"]["enabled"] is True and ijs["auto_close"]["enabled"] is False
    assert ijs["auto_close"]["grace_days"] == default["auto_close"]["grace_days"]  # untouched keys remain
    assert nwg["trajectory"]["months"] == 6 and nwg["name"] == "nieuwegein"
    assert mappings.region_settings("unknown-region")["name"] == "default"


def test_feedback_table_is_regional_data(mappings: MappingSet) -> None:
    default, nwg = mappings.region_settings("default"), mappings.region_settings("nieuwegein")
    assert (feedback_for(default, milestone="contact-attempted") or {})["kind"]["code"] == "no-intake-yet"
    assert feedback_for(nwg, milestone="contact-attempted") is None
    assert feedback_for(default, milestone="received") is None
    assert feedback_for(default, status="in-progress") is None
    accepted = feedback_for(default, status="accepted") or {}
    assert accepted["text"].startswith("De welzijnscoach heeft de verwijzing geaccepteerd")
    closed = feedback_for(default, status="completed", milestone="closed-goal-reached") or {}
    assert (closed["kind"]["code"], closed["milestone"]["code"]) == ("completed", "closed-goal-reached")
    assert "doel" in closed["text"]
    question = feedback_for(default, kind="question", text="Is er een tolk nodig?") or {}
    assert question["text"] == "Is er een tolk nodig?"


@pytest.mark.parametrize("region", ["default", "nieuwegein"])
def test_communication_is_valid_with_activities_and_positive_health(
    mappings: MappingSet, region: str
) -> None:
    settings = mappings.region_settings(region)
    fb = feedback_for(settings, milestone="activity-found")
    assert fb is not None
    inputs = feedback_inputs(
        settings, NOW, fb, practice="Organization/praktijk-de-geinoord", positive_health=PH
    )
    com = mappings.get("milestone-to-communication", region).apply(TASK, inputs)
    validate(com)
    assert com["status"] == "completed" and com["sent"] == NOW
    assert com["category"][0]["coding"][0]["code"] == "activity-found"
    assert com["topic"]["coding"][0]["code"] == "activity-found"
    assert com["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
    assert com["partOf"] == com["about"] == [{"reference": "Task/task-1"}]
    assert com["recipient"] == [TASK["requester"], {"reference": "Organization/praktijk-de-geinoord"}]
    assert com["sender"] == TASK["owner"]
    texts = [p["contentString"] for p in com["payload"] if "contentString" in p]
    assert texts[0].startswith("Uw patiënt heeft samen met de welzijnscoach")
    assert texts[1:] == ["Activiteit (Sport en bewegen): Wandelgroep Fort Jutphaas"]
    refs = [p["contentReference"]["reference"] for p in com["payload"] if "contentReference" in p]
    assert refs == ["#ph-intake", "#ph-closure"]
    intake, closure = com["contained"]
    assert [c["valueInteger"] for c in intake["component"]] == [6, 4, 3, 5, 2, 7]
    assert len(closure["component"]) == 5  # a missing dimension is left out, not null


def test_minimal_communication_and_rejection_reason(mappings: MappingSet) -> None:
    settings = mappings.region_settings("default")
    task = {
        **TASK,
        "status": "rejected",
        "output": [],
        "statusReason": {
            "coding": [
                {
                    "system": "https://wor.example.nl/fhir/CodeSystem/wor-rejection-reasons",
                    "code": "no-capacity",
                }
            ]
        },
    }
    fb = feedback_for(settings, status="rejected")
    assert fb is not None
    com = mappings.get("milestone-to-communication").apply(task, feedback_inputs(settings, NOW, fb))
    validate(com)
    assert "contained" not in com and "topic" not in com
    assert com["recipient"] == [TASK["requester"]]
    assert com["reasonCode"][0]["coding"][0]["code"] == "no-capacity"
    assert len(com["payload"]) == 1


def test_missing_required_input_and_wrong_source(mappings: MappingSet) -> None:
    with pytest.raises(MappingError, match="intakeDeadline"):
        mappings.get("servicerequest-to-task").apply(SR, {"route": route("default", "x"), "now": NOW})
    with pytest.raises(MappingError, match="ServiceRequest"):
        mappings.get("servicerequest-to-task").apply(TASK, {})
    with pytest.raises(MappingError, match="no mapping named"):
        mappings.get("nope")


def test_working_days_skip_weekends_and_dutch_holidays() -> None:
    assert working_days_after(date(2026, 4, 24), 1) == date(2026, 4, 28)  # weekend + King's Day
    assert working_days_after(date(2026, 4, 24), 1, holidays=False) == date(2026, 4, 27)
    assert working_days_after(date(2025, 5, 2), 1) == date(2025, 5, 6)  # Liberation Day 2025 (lustrum)
    holidays = dutch_public_holidays(2026)
    assert {date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25), date(2026, 12, 25)} <= holidays
    assert date(2025, 4, 26) in dutch_public_holidays(2025)  # 27 April 2025 is a Sunday


def test_deep_merge_semantics() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "d": None, "e": 2}) == {"a": {"b": 1, "c": [3]}, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_template_language() -> None:
    doc = {
        "source": "ServiceRequest",
        "inputs": {"x": "optional"},
        "template": {
            "resourceType": "Basic",
            "all[]": "=note.text",
            "first": "=note.text",
            "empty": "=patientInstruction",
            "nothing": {"text": "=%x.missing"},
            "text": "Verwijzing {=id} ({=priority})",
            "gone": "Alleen met {=%x}",
            "flag": {"$when": "=%x.exists()", "text": "x was given"},
            "items": [{"$each": "=note", "t": "=text"}, "=id"],
            "occ": "=occurrence",
        },
    }
    out = Mapping("t", doc).apply(SR, {})
    assert out == {
        "resourceType": "Basic",
        "all": ["Mevrouw is sinds het overlijden van haar man eenzaam.", "Wil graag wandelen."],
        "first": "Mevrouw is sinds het overlijden van haar man eenzaam.",
        "text": "Verwijzing sr-1 (routine)",
        "items": [
            {"t": "Mevrouw is sinds het overlijden van haar man eenzaam."},
            {"t": "Wil graag wandelen."},
            "sr-1",
        ],
        "occ": "2026-05-01",  # a choice type still resolves through the FHIR model
    }
    assert Mapping("t", doc).apply(SR, {"x": "ja"})["flag"] == {"text": "x was given"}


def test_bad_expression_fails_at_load() -> None:
    with pytest.raises(MappingError, match=r"t\.bad"):
        Mapping("t", {"template": {"resourceType": "Basic", "bad": "=where(("}})


@pytest.mark.parametrize(
    "expr",
    [
        "subject",
        "note.text",
        "note.text.join(' ')",
        "'ServiceRequest/' + id",
        "%task.id.exists()",
        "(patientInstruction | note.text | reasonCode.text).first()",
        "(patientInstruction | note.text).exists()",
        "(_missing | _other).exists()",
        "occurrence",
        "reasonCode.coding.code",
        "%route.organization",
        "'Task/' + %task.id",
        "identifier.first()",
        "_missing",
        "performer.exists()",
    ],
)
def test_fast_path_agrees_with_fhirpathpy(expr: str) -> None:
    env = {"route": route("default", "x"), "task": {"id": "t1"}}
    compiled = Expression(expr)
    assert compiled._fast is not None  # each shape here is one the fast path answers
    assert compiled(SR, env) == fp_compile(expr, models["r4"])(SR, env)


def test_map_file_for_the_cli(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": "pat-1"}}, {"resource": SR}],
    }
    path = tmp_path / "referral.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    task = map_file(
        path, "servicerequest-to-task", {"route": route("nieuwegein", "Nieuwegein"), "now": NOW}, MAPPINGS
    )
    validate(task)
    assert task["restriction"]["period"]["end"] == "2026-05-11"
    tpath = tmp_path / "task.json"
    tpath.write_text(json.dumps(TASK), encoding="utf-8")
    com = map_file(tpath, "milestone-to-communication", {"milestone": "intake-held", "now": NOW}, MAPPINGS)
    validate(com)
    assert com["category"][0]["coding"][0]["code"] == "intake-held"


def test_broken_overlay_fails_at_load(tmp_path: Path) -> None:
    (tmp_path / "regions").mkdir()
    for p in MAPPINGS.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text("utf-8"), "utf-8")
    (tmp_path / "regions" / "default.yaml").write_text(
        (MAPPINGS / "regions/default.yaml").read_text("utf-8"), "utf-8"
    )
    (tmp_path / "regions" / "bad.yaml").write_text("settings:\n  trajectory:\n    months: 0\n", "utf-8")
    with pytest.raises(MappingError, match=r"trajectory\.months"):
        load_mappings(tmp_path)
    (tmp_path / "regions" / "bad.yaml").write_text("mappings:\n  nope: {}\n", "utf-8")
    with pytest.raises(MappingError, match="unknown mappings"):
        load_mappings(tmp_path)
