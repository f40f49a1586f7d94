"""The example social map loads with the R4B models, is internally consistent, and indexes right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_gateway.routing import Directory, normalise_postcode
from fhir_gateway.routing.directory import FHIR_REST, HL7V2_MLLP, house_number, split_reference

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = ROOT / "examples" / "directory" / "directory.json"
PROFILES = ROOT / "profiles"


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return json.loads(DIRECTORY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def directory(bundle: dict[str, Any]) -> Directory:
    return Directory.from_bundle(bundle)


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def test_bundle_and_every_resource_validate_with_r4b(bundle: dict[str, Any]) -> None:
    get_fhir_model_class("Bundle").model_validate(bundle)
    for entry in bundle["entry"]:
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)


def test_entries_are_idempotent_puts(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "transaction"
    urls = [e["request"]["url"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}


def test_every_reference_resolves_inside_the_directory(bundle: dict[str, Any], directory: Directory) -> None:
    refs = _references(bundle)
    assert len(refs) > 30
    for ref in refs:
        assert directory.resolve(ref) is not None, ref


def test_extension_definitions_are_structure_definitions() -> None:
    for name in ("wor-coverage", "wor-region"):
        sd = json.loads((PROFILES / f"StructureDefinition-{name}.json").read_text(encoding="utf-8"))
        get_fhir_model_class("StructureDefinition").model_validate(sd)
        assert sd["url"] == f"https://wor.example.nl/fhir/StructureDefinition/{name}"
        assert sd["type"] == "Extension" and sd["context"][0]["expression"] == "HealthcareService"


def test_wor_services_are_recognised_by_category(directory: Directory) -> None:
    ids = sorted(s["id"] for s in directory.wor_services())
    assert ids == ["welzijn-de-brug-wor", "welzijn-houten-doet-mee-wor", "welzijn-ijsselstein-samen-wor"]
    assert not directory.is_wor_service(directory.service("welzijn-de-brug-schuldhulp") or {})
    assert [s["id"] for s in directory.services_of("welzijn-de-brug")] == ["welzijn-de-brug-wor"]
    assert len(directory.services_of("welzijn-de-brug", wor_only=False)) == 2


def test_regions_of_services(directory: Directory) -> None:
    assert directory.region_of(directory.service("welzijn-de-brug-wor") or {}) == "nieuwegein"
    assert directory.region_of(directory.service("welzijn-ijsselstein-samen-wor") or {}) == "ijsselstein"
    assert directory.region_of(directory.service("welzijn-houten-doet-mee-wor") or {}) == "default"


def test_practice_of_practitioner_and_role(directory: Directory) -> None:
    assert (directory.practice_of("Practitioner/poh-bakker") or {})["id"] == "praktijk-de-geinoord"
    role = "PractitionerRole/huisarts-de-vries-praktijk-hollandse-ijssel"
    assert (directory.practice_of(role) or {})["id"] == "praktijk-hollandse-ijssel"
    assert directory.practice_of("Practitioner/unknown") is None
    for org in directory.practices_of("Practitioner/huisarts-smit"):
        assert directory.is_gp_practice(org)


def test_endpoints_by_connection_type(directory: Directory) -> None:
    assert [e["id"] for e in directory.endpoints_of("praktijk-de-geinoord", FHIR_REST)] == [
        "praktijk-de-geinoord-fhir"
    ]
    assert directory.endpoints_of("praktijk-de-geinoord", HL7V2_MLLP) == []
    assert [e["id"] for e in directory.endpoints_of("praktijk-batau", HL7V2_MLLP)] == ["praktijk-batau-mllp"]
    assert directory.endpoints_of("praktijk-het-rond") == []


def test_identifier_lookup(directory: Directory) -> None:
    org = directory.organization_by_identifier("http://fhir.nl/fhir/NamingSystem/agb-z", "01053417")
    assert org is not None and org["id"] == "praktijk-batau"


def test_one_pc4_area_is_split_between_two_municipalities(directory: Directory) -> None:
    municipalities = {r.municipality for pc in ("3404AB", "3404PC") for r in directory.coverage_for(pc, 1)}
    assert municipalities == {"Nieuwegein", "IJsselstein"}
    assert directory.coverage_conflicts() == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1012 nx", "1012NX"),
        (" 3404NB ", "3404NB"),
        ("3404", "3404"),
        ("0123AB", None),
        ("12345", None),
        ("", None),
    ],
)
def test_normalise_postcode(raw: str, expected: str | None) -> None:
    assert normalise_postcode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("12A", 12), ("12-14", 12), (" 7 ", 7), ("bis", None), (None, None)]
)
def test_house_number_uses_the_number_part(raw: str | None, expected: int | None) -> None:
    assert house_number(raw) == expected


def test_split_reference_accepts_absolute_and_versioned() -> None:
    assert split_reference("https://x.example/fhir/Organization/a/_history/3") == ("Organization", "a")
    assert split_reference("#contained") is None
    assert split_reference("urn:uuid:123") is None


def test_bad_coverage_range_is_refused() -> None:
    service = {
        "resourceType": "HealthcareService",
        "id": "bad",
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
        "extension": [
            {
                "url": "https://wor.example.nl/fhir/StructureDefinition/wor-coverage",
                "extension": [
                    {"url": "municipality", "valueString": "Houten"},
                    {"url": "postcodeFrom", "valueString": "3998"},
                    {"url": "postcodeTo", "valueString": "3990AA"},
                ],
            }
        ],
    }
    from fhir_gateway.fhir.outcome import FhirError

    with pytest.raises(FhirError) as err:
        Directory.from_resources([service])
    assert err.value.status == 422
