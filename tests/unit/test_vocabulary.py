"""The vocabulary module against `profiles/`, and no code-system URL written anywhere else.

Why: the same code system used to be spelled out in five modules; these checks keep it in one
place and keep that place true to the published CodeSystems.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fhir_gateway import vocabulary as v

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fhir_gateway"
PROFILES = ROOT / "profiles"

# A string literal that names a code system, naming system, extension, profile or value set.
URL_LITERAL = re.compile(
    r"https?://\S*/(CodeSystem|NamingSystem|StructureDefinition|ValueSet|Measure|sid)/"
    r"|https?://(wor\.example\.nl|terminology\.hl7\.org|fhir\.nl|nictiz\.nl|unitsofmeasure\.org|dicom\.nema\.org)\b"
    r"|https?://hl7\.org/fhir/[a-z-]+$"
    r"|^urn:wor$"
)


def _concepts(concepts: list[dict[str, Any]]) -> set[str]:
    return {c["code"] for c in concepts} | {code for c in concepts for code in _concepts(c.get("concept", []))}


def _published(resource_type: str) -> dict[str, dict[str, Any]]:
    out = {}
    for path in PROFILES.glob(f"{resource_type}-*.json"):
        resource = json.loads(path.read_text())
        out[resource["url"]] = resource
    return out


CODE_SYSTEMS = {url: _concepts(cs.get("concept", [])) for url, cs in _published("CodeSystem").items()}


def _wor_urls(kind: str) -> set[str]:
    prefix = f"{v.WOR}/{kind}/"
    return {value for value in vars(v).values() if isinstance(value, str) and value.startswith(prefix)}


def test_every_wor_code_system_is_published_or_declared_unpublished() -> None:
    wor_systems = _wor_urls("CodeSystem") | {v.POSITIVE_HEALTH_DIMENSIONS}
    assert wor_systems - v.UNPUBLISHED_CODE_SYSTEMS <= set(CODE_SYSTEMS)
    assert not v.UNPUBLISHED_CODE_SYSTEMS & set(CODE_SYSTEMS), "published now: drop it from UNPUBLISHED"
    assert set(v.CODES) == wor_systems - v.UNPUBLISHED_CODE_SYSTEMS
    assert set(CODE_SYSTEMS) <= wor_systems, "a CodeSystem in profiles/ the vocabulary does not name"


@pytest.mark.parametrize("system", sorted(v.CODES))
def test_code_constants_are_the_codes_of_their_code_system(system: str) -> None:
    constants = v.codes_of(v.CODES[system])
    assert constants, system
    assert set(constants.values()) == CODE_SYSTEMS[system]
    for name, code in constants.items():
        assert name == code.upper().replace("-", "_"), f"{name} = {code!r}: name the constant after its code"


def test_milestone_order_covers_every_milestone_once() -> None:
    assert len(v.MILESTONE_ORDER) == len(set(v.MILESTONE_ORDER))
    assert set(v.MILESTONE_ORDER) == CODE_SYSTEMS[v.MILESTONES]


def test_wor_structure_definitions_are_published_or_declared_unpublished() -> None:
    published = set(_published("StructureDefinition"))
    assert _wor_urls("StructureDefinition") - v.UNPUBLISHED_STRUCTURE_DEFINITIONS <= published
    assert not v.UNPUBLISHED_STRUCTURE_DEFINITIONS & published


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant (f-string parts included) except docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_code_system_url_outside_the_vocabulary() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "vocabulary.py" or path.parent != PACKAGE
        for line, text in _string_literals(ast.parse(path.read_text(), str(path)))
        if URL_LITERAL.search(text)
    ]
    assert not found, "move these to fhir_gateway/vocabulary.py:\n" + "\n".join(found)


def test_the_scan_recognises_what_it_must() -> None:
    hits = [
        "https://wor.example.nl/fhir/CodeSystem/wor-milestones",
        "http://fhir.nl/fhir/NamingSystem/bsn",
        "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
        "{x}^^http://hl7.org/fhir/issue-type",
        "http://unitsofmeasure.org",
    ]
    misses = ["http://127.0.0.1:8080/fhir", "http://www.w3.org/2000/svg", "https://host/fhir/Task/1"]
    assert all(URL_LITERAL.search(s) for s in hits)
    assert not any(URL_LITERAL.search(s) for s in misses)
