"""The conformance resources in profiles/ are well-formed FHIR R4 and usable by the validator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_gateway.validation import ProfileError, ProfileSet, default_profiles_dir

PROFILES = default_profiles_dir()
FILES = sorted(PROFILES.glob("*.json"))
WOR = "https://wor.example.nl/fhir"
ICPC = "http://hl7.org/fhir/sid/icpc-1-nl"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def by_type(rtype: str) -> list[dict[str, Any]]:
    return [r for r in map(load, FILES) if r["resourceType"] == rtype]


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return ProfileSet.load(PROFILES)


def test_directory_has_the_wor_profiles() -> None:
    names = {p.name for p in FILES}
    for sid in (
        "servicerequest",
        "task",
        "careplan",
        "feedback-communication",
        "consent",
        "patient",
        "practitioner",
        "organization",
    ):
        assert f"StructureDefinition-wor-{sid}.json" in names
    for cid in (
        "wor-category",
        "wor-consent-scope",
        "wor-milestones",
        "wor-feedback-kinds",
        "wor-rejection-reasons",
        "wor-activity-categories",
    ):
        assert f"CodeSystem-{cid}.json" in names and f"ValueSet-{cid}.json" in names
    assert "ValueSet-wor-eligible-reasons.json" in names and "ValueSet-wor-light-p-codes.json" in names
    assert "CapabilityStatement-wor-gateway.json" in names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_file_is_valid_r4_resource_named_by_type_and_id(path: Path) -> None:
    res = load(path)
    assert path.name == f"{res['resourceType']}-{res['id']}.json"
    get_fhir_model_class(res["resourceType"]).model_validate(res)
    if "url" in res and res["resourceType"] != "CapabilityStatement":
        assert res["url"].startswith(f"{WOR}/{res['resourceType']}/")


@pytest.mark.parametrize("sd", by_type("StructureDefinition"), ids=lambda sd: sd["id"])
def test_structure_definition_shape(sd: dict[str, Any]) -> None:
    assert sd["fhirVersion"] == "4.0.1"
    assert sd["derivation"] == "constraint" and sd["abstract"] is False
    assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
    if sd["kind"] != "resource":
        return  # extension definitions written elsewhere
    assert sd["url"] == f"{WOR}/StructureDefinition/{sd['name']}"
    elements = sd["differential"]["element"]
    assert elements[0]["path"] == sd["type"]
    for el in elements:
        assert el["id"] and el["path"].split(".")[0] == sd["type"]
        assert el["id"].replace(":", ".").split(".")[0] == sd["type"]
        for c in el.get("constraint", []):
            assert {"key", "severity", "human", "expression"} <= c.keys()
            assert c["key"].startswith("wor-")


@pytest.mark.parametrize("cs", by_type("CodeSystem"), ids=lambda cs: cs["id"])
def test_codesystem_shape(cs: dict[str, Any]) -> None:
    codes = [c["code"] for c in cs["concept"]]
    assert len(codes) == len(set(codes)) == cs["count"]
    assert cs["content"] == "complete" and cs["caseSensitive"] is True
    assert all(c.get("display") and c.get("definition") for c in cs["concept"])


def test_every_binding_resolves(profiles: ProfileSet) -> None:
    raw_bindings = [
        (sd["url"], el["id"], el["binding"]["valueSet"])
        for sd in by_type("StructureDefinition")
        for el in sd["differential"]["element"]
        if "binding" in el
    ]
    assert raw_bindings
    for _url, _eid, vs in raw_bindings:
        assert vs.split("|")[0] in profiles.valuesets
    enforced = {(p, e) for p, e, _ in profiles.iter_bindings()}
    required_or_extensible = {(u, e) for u, e, _ in raw_bindings}
    assert required_or_extensible <= enforced


def test_every_valueset_include_resolves(profiles: ProfileSet) -> None:
    for vs in by_type("ValueSet"):
        for inc in vs["compose"]["include"]:
            for ref in inc.get("valueSet", []):
                assert ref in profiles.valuesets
            if "system" in inc and inc["system"].startswith(WOR):
                assert inc["system"] in profiles.codesystems


def test_capability_statement_names_a_profile_per_type(profiles: ProfileSet) -> None:
    assert profiles.default_profiles == {
        t: f"{WOR}/StructureDefinition/{n}"
        for t, n in {
            "ServiceRequest": "WorServiceRequest",
            "Task": "WorTask",
            "CarePlan": "WorCarePlan",
            "Communication": "WorFeedbackCommunication",
            "Consent": "WorConsent",
            "Patient": "WorPatient",
            "Practitioner": "WorPractitioner",
            "Organization": "WorOrganization",
        }.items()
    }


def test_eligible_reasons_expansion(profiles: ProfileSet) -> None:
    vs = profiles.valuesets[f"{WOR}/ValueSet/wor-eligible-reasons"]
    z = {f"Z{n:02d}" for n in range(1, 30)} - {"Z17", "Z26"}
    p = {"P01", "P02", "P03", "P04", "P05", "P06", "P20", "P25", "P27", "P29"}
    assert {c for s, c in vs.pairs if s == ICPC} == z | p
    assert vs.contains(ICPC, "Z12.01") and vs.contains(ICPC, "P03.02")
    assert not vs.contains(ICPC, "Z17") and not vs.contains(ICPC, "P16") and not vs.contains(ICPC, "Z120")
    assert not vs.contains("http://hl7.org/fhir/sid/icd-10", "Z12")
    light = profiles.valuesets[f"{WOR}/ValueSet/wor-light-p-codes"]
    assert {c for _, c in light.pairs} == p


def test_codesystem_valuesets_hold_all_codes(profiles: ProfileSet) -> None:
    for url, cs in profiles.codesystems.items():
        vs = profiles.valuesets[url.replace("/CodeSystem/", "/ValueSet/")]
        assert {c for _, c in vs.pairs} == cs.codes


# ------------------------------------------------------------------ broken directories fail at load


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "profiles"
    shutil.copytree(PROFILES, target)
    return target


def _edit(path: Path, change: Any) -> None:
    res = load(path)
    change(res)
    path.write_text(json.dumps(res), encoding="utf-8")


def test_unknown_bound_valueset_fails_load(tmp_path: Path) -> None:
    d = _copy(tmp_path)

    def change(sd: dict[str, Any]) -> None:
        el = next(e for e in sd["differential"]["element"] if e["id"] == "Task.businessStatus")
        el["binding"]["valueSet"] = f"{WOR}/ValueSet/missing"

    _edit(d / "StructureDefinition-wor-task.json", change)
    with pytest.raises(ProfileError, match="unknown ValueSet"):
        ProfileSet.load(d)


def test_bad_fhirpath_fails_load(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(
        d / "StructureDefinition-wor-task.json",
        lambda sd: sd["differential"]["element"][0]["constraint"][0].update(expression="status.frobnicate()"),
    )
    with pytest.raises(ProfileError, match="wor-task-1"):
        ProfileSet.load(d)


def test_light_p_codes_are_configurable(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(
        d / "ValueSet-wor-light-p-codes.json",
        lambda vs: vs["compose"]["include"].append(
            {"system": ICPC, "filter": [{"property": "concept", "op": "is-a", "value": "P10"}]}
        ),
    )
    vs = ProfileSet.load(d).valuesets[f"{WOR}/ValueSet/wor-eligible-reasons"]
    assert vs.contains(ICPC, "P10") and vs.contains(ICPC, "P10.01")


def test_empty_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        ProfileSet.load(tmp_path)
