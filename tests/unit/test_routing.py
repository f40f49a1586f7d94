"""Routing against the example social map: performer rules, the split postcode area, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.routing import Directory, Route, address_house_number, route

ROOT = Path(__file__).resolve().parents[2]
HOUSE_NUMBER = "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-houseNumber"
BRUG = "Organization/welzijn-de-brug"
IJSSELSTEIN = "Organization/welzijn-ijsselstein-samen"
HOUTEN = "Organization/welzijn-houten-doet-mee"


def bsn_valid(bsn: str) -> bool:
    """The 11-test, so the example BSNs below are realistic."""
    digits = [int(c) for c in bsn]
    return (
        len(digits) == 9
        and sum(d * w for d, w in zip(digits, [9, 8, 7, 6, 5, 4, 3, 2, -1], strict=True)) % 11 == 0
    )


@pytest.fixture(scope="module")
def directory() -> Directory:
    return Directory.from_bundle(json.loads((ROOT / "examples/directory/directory.json").read_text("utf-8")))


def patient(
    postcode: str | None, number: str | None = None, *, line: str | None = None, **extra: Any
) -> dict:
    address: dict[str, Any] = {"use": "home", "city": "IJsselstein", **extra}
    if postcode is not None:
        address["postalCode"] = postcode
    if number is not None:
        address["line"] = [f"Benschopperstraat {number}"]
        address["_line"] = [{"extension": [{"url": HOUSE_NUMBER, "valueString": number}]}]
    elif line is not None:
        address["line"] = [line]
    return {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "111222333"}],
        "address": [address],
    }


SR: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "subject": {"reference": "Patient/pat-1"},
}


def test_example_bsns_pass_the_11_test() -> None:
    assert bsn_valid("111222333")
    assert bsn_valid("123456782")
    assert not bsn_valid("123456789")


@pytest.mark.parametrize(
    ("postcode", "number", "organization", "municipality"),
    [
        ("3404 AB", "1", IJSSELSTEIN, "IJsselstein"),  # PC4 range of IJsselstein
        ("3404PA", "3", BRUG, "Nieuwegein"),  # PC6 range wins over PC4
        ("3404 pz", "200", BRUG, "Nieuwegein"),  # PC6 range end, any number
        ("3404QA", "3", IJSSELSTEIN, "IJsselstein"),  # just past the PC6 range
        ("3404NB", "39", IJSSELSTEIN, "IJsselstein"),  # below the house-number range
        ("3404NB", "40", BRUG, "Nieuwegein"),  # lower bound, inclusive
        ("3404NB", "98A", BRUG, "Nieuwegein"),  # upper bound with an addition
        ("3404NB", "99", IJSSELSTEIN, "IJsselstein"),  # above the range
        ("3432 KB", "14", BRUG, "Nieuwegein"),
        ("3995DN", "7", HOUTEN, "Houten"),
    ],
)
def test_routing_by_postcode_and_house_number(
    directory: Directory, postcode: str, number: str, organization: str, municipality: str
) -> None:
    r = route(SR, patient(postcode, number), directory)
    assert (r.organization, r.municipality, r.reason) == (organization, municipality, "postcode")


def test_route_names_service_and_region(directory: Directory) -> None:
    r = route(SR, patient("3404NB", "50"), directory)
    assert r == Route(BRUG, "HealthcareService/welzijn-de-brug-wor", "nieuwegein", "Nieuwegein", "postcode")
    assert route(SR, patient("3995DN", "1"), directory).region == "default"


def test_house_number_from_line_text_when_no_extension(directory: Directory) -> None:
    assert route(SR, patient("3404NB", line="Benschopperstraat 41 bis"), directory).organization == BRUG
    assert address_house_number({"line": ["2e Kruisstraat"]}) is None


def test_without_house_number_a_house_number_range_does_not_match(directory: Directory) -> None:
    assert route(SR, patient("3404NB"), directory).organization == IJSSELSTEIN


def test_home_address_is_preferred(directory: Directory) -> None:
    p = patient("3995DN", "7")
    p["address"].insert(0, {"use": "work", "postalCode": "3404NB", "line": ["Werkweg 50"]})
    r = route(SR, p, directory)
    assert r.organization == HOUTEN


def test_explicit_performer_service(directory: Directory) -> None:
    sr = {**SR, "performer": [{"reference": "HealthcareService/welzijn-houten-doet-mee-wor"}]}
    r = route(sr, patient("3404NB", "50"), directory)  # the performer beats the postcode
    assert (r.organization, r.reason, r.municipality, r.region) == (HOUTEN, "performer", "Houten", "default")


def test_explicit_performer_organisation_with_one_wor_service(directory: Directory) -> None:
    sr = {**SR, "performer": [{"reference": "https://gw.example.nl/fhir/Organization/welzijn-de-brug"}]}
    r = route(sr, patient("3404NB", "50"), directory)
    assert (r.service, r.municipality) == ("HealthcareService/welzijn-de-brug-wor", "Nieuwegein")


def test_explicit_performer_by_identifier(directory: Directory) -> None:
    ident = {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "90004321"}
    r = route({**SR, "performer": [{"identifier": ident}]}, None, directory)
    assert r.organization == IJSSELSTEIN


@pytest.mark.parametrize(
    ("reference", "code"),
    [
        ("HealthcareService/unknown", "not-found"),
        ("Organization/unknown", "not-found"),
        ("HealthcareService/welzijn-de-brug-schuldhulp", "business-rule"),  # not a WoR service
        ("Organization/praktijk-batau", "business-rule"),  # a GP practice provides none
        ("Practitioner/huisarts-smit", "business-rule"),
    ],
)
def test_bad_performer_is_422(directory: Directory, reference: str, code: str) -> None:
    with pytest.raises(FhirError) as err:
        route({**SR, "performer": [{"reference": reference}]}, patient("3404NB", "50"), directory)
    assert err.value.status == 422
    assert err.value.issues[0].code == code
    assert err.value.issues[0].expression == "ServiceRequest.performer[0]"


def test_no_coverage_is_422_naming_only_the_area(directory: Directory) -> None:
    with pytest.raises(FhirError) as err:
        route(SR, patient("9999 ZZ", "12"), directory)
    issue = err.value.issues[0]
    assert (err.value.status, issue.code, issue.expression) == (
        422,
        "business-rule",
        "Patient.address[0].postalCode",
    )
    assert "9999" in issue.diagnostics
    assert "ZZ" not in issue.diagnostics and "Benschopperstraat" not in issue.diagnostics
    assert "12" not in issue.diagnostics


@pytest.mark.parametrize("p", [None, {"resourceType": "Patient"}, {"resourceType": "Patient", "address": []}])
def test_missing_address_is_422(directory: Directory, p: dict | None) -> None:
    with pytest.raises(FhirError) as err:
        route(SR, p, directory)
    assert err.value.status == 422 and err.value.issues[0].expression == "Patient.address"


def test_missing_postcode_is_422(directory: Directory) -> None:
    with pytest.raises(FhirError) as err:
        route(SR, patient(None, "5"), directory)
    assert err.value.issues[0].expression == "Patient.address[0].postalCode"


def _service(sid: str, municipality: str, pc_from: str, pc_to: str) -> list[dict[str, Any]]:
    cov = {
        "url": "https://wor.example.nl/fhir/StructureDefinition/wor-coverage",
        "extension": [
            {"url": "municipality", "valueString": municipality},
            {"url": "postcodeFrom", "valueString": pc_from},
            {"url": "postcodeTo", "valueString": pc_to},
        ],
    }
    category = {
        "coding": [
            {"system": "https://wor.example.nl/fhir/CodeSystem/wor-category", "code": "social-prescribing"}
        ]
    }
    return [
        {"resourceType": "Organization", "id": f"org-{sid}", "name": sid},
        {
            "resourceType": "HealthcareService",
            "id": sid,
            "category": [category],
            "providedBy": {"reference": f"Organization/org-{sid}"},
            "extension": [cov],
        },
    ]


def test_equal_specificity_overlap_is_decided_by_district_or_refused() -> None:
    d = Directory.from_resources(
        _service("a", "Utrecht", "3500", "3509") + _service("b", "Zeist", "3500", "3509")
    )
    assert len(d.coverage_conflicts()) == 1
    assert route(SR, patient("3501AA", "1", district="Zeist"), d).organization == "Organization/org-b"
    with pytest.raises(FhirError) as err:
        route(SR, patient("3501AA", "1"), d)
    assert err.value.issues[0].code == "business-rule"


def test_narrower_range_wins_at_equal_level() -> None:
    d = Directory.from_resources(
        _service("wide", "Utrecht", "3500", "3599") + _service("narrow", "Zeist", "3500", "3501")
    )
    assert d.coverage_conflicts() == []
    assert route(SR, patient("3501AA", "1"), d).organization == "Organization/org-narrow"
    assert route(SR, patient("3502AA", "1"), d).organization == "Organization/org-wide"
