"""Golden output of the v2 mapping: Bundles, CLI text and source maps stay byte-identical.

The files under tests/data/v2-golden/ were written by the mapping engine as it was before the
v2 mapping moved onto the shared template core; any change in what a message maps to, or in the
v2 location an ERR segment would name, shows up here. Besides the examples, a few hundred seeded
mutations of them (fields emptied, repeated, swapped, set to the values the mapping selects on)
cover the corners the examples do not reach; those are kept as digests.

Regenerate (only when an output change is intended): `python -m tests.unit.test_v2_golden`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fhir_gateway.cli import main
from fhir_gateway.v2.inbound import V2ContentError, V2Rejected, accept, load_mappings, parse
from fhir_gateway.v2.mapping import Loc, MappingResult, V2Mapping
from fhir_gateway.v2.message import V2ParseError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
GOLDEN = ROOT / "tests" / "data" / "v2-golden"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.hl7"))
MUTATIONS = 60  # per example
# values the mapping selects or converts on, so mutations reach its branches
_POOL = (
    "", "NLMINBIZA", "NNNLD", "Internet", "NET", "PRN", "WOR-CONSENT", "PI", "RP", "AGB", "UZI",
    "ICPC", "ICD10", "20261105", "202611051030+0100", "1990", "3431ab", "F", "H", "M", "x&y", "a~b",
    "\\T\\", "contact-details~social-question",
)  # fmt: skip


def _loc(loc: Loc) -> list[Any]:
    return list(dataclasses.astuple(loc))


def cli_text(bundle: dict[str, Any]) -> str:
    """What `fhir-gateway v2 map FILE` prints."""
    return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"


def source_map(result: MappingResult) -> list[dict[str, Any]]:
    """Every entry's v2 origins, in the order `locate` searches them."""
    return [
        {
            "name": e.name,
            "index": e.index,
            "resourceType": e.resource_type,
            "segment": _loc(e.segment),
            "sources": [[path, _loc(loc)] for path, loc in e.sources.items()],
            "errors": [[path, _loc(loc)] for path, loc in e.errors.items()],
        }
        for e in result.entries
    ]


def mutate(er7: str, rng: random.Random) -> str:
    """One to three edits at segment / field / repetition / component level."""
    segments = [s for s in er7.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(1, len(segments))  # MSH stays readable
        fields = segments[i].split("|")
        kind = rng.choice(("set", "empty", "repeat", "component", "drop", "copy", "swap"))
        f = rng.randrange(1, max(len(fields), 2))
        while len(fields) <= f:
            fields.append("")
        if kind == "set":
            parts = fields[f].split("^")
            parts[rng.randrange(len(parts))] = rng.choice(_POOL)
            fields[f] = "^".join(parts)
        elif kind == "empty":
            fields[f] = ""
        elif kind == "repeat":
            fields[f] = "~".join([fields[f]] * rng.randint(2, 3))
        elif kind == "component":
            fields[f] = "^" * rng.randint(0, 9) + rng.choice(_POOL)
        elif kind == "drop":
            segments.pop(i)
            continue
        elif kind == "copy":
            segments.insert(rng.randrange(1, len(segments) + 1), segments[i])
            continue
        else:
            j = rng.randrange(1, max(len(fields), 2))
            while len(fields) <= j:
                fields.append("")
            fields[f], fields[j] = fields[j], fields[f]
        segments[i] = "|".join(fields)
    return "\r".join(segments)


def outcome(raw: str | bytes, mappings: dict[str, V2Mapping]) -> str:
    """The mapped Bundle and source map as text, or what stopped the message before mapping."""
    try:
        message = parse(raw)
        mapping = accept(message, mappings)
    except (V2ParseError, V2Rejected, V2ContentError) as exc:
        return f"{type(exc).__name__}: {exc}"
    result = mapping.apply(message)
    return cli_text(result.bundle) + json.dumps(source_map(result), ensure_ascii=False)


def digests(name: str, mappings: dict[str, V2Mapping]) -> list[str]:
    rng = random.Random(f"v2-golden|{name}")
    er7 = (EXAMPLES / f"{name}.hl7").read_text(encoding="utf-8")
    return [
        hashlib.sha256(outcome(mutate(er7, rng), mappings).encode()).hexdigest()[:16]
        for _ in range(MUTATIONS)
    ]


@pytest.fixture(scope="module")
def mappings() -> dict[str, V2Mapping]:
    return load_mappings(ROOT / "mappings")


@pytest.mark.parametrize("name", NAMES)
def test_bundle_and_sources_are_unchanged(name: str, mappings: dict[str, V2Mapping]) -> None:
    message = parse((EXAMPLES / f"{name}.hl7").read_bytes())
    result = accept(message, mappings).apply(message)
    assert cli_text(result.bundle) == (GOLDEN / f"{name}.json").read_text(encoding="utf-8")
    expected = json.loads((GOLDEN / f"{name}.sources.json").read_text(encoding="utf-8"))
    assert source_map(result) == expected


@pytest.mark.parametrize("name", NAMES)
def test_cli_prints_the_golden_bundle(name: str) -> None:
    result = CliRunner().invoke(main, ["v2", "map", str(EXAMPLES / f"{name}.hl7")], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output == (GOLDEN / f"{name}.json").read_text(encoding="utf-8")


def test_mutations_map_as_before(mappings: dict[str, V2Mapping]) -> None:
    expected = json.loads((GOLDEN / "mutations.json").read_text(encoding="utf-8"))
    found = {name: digests(name, mappings) for name in NAMES}
    changed = {
        n: [i for i, (a, b) in enumerate(zip(found[n], expected[n], strict=True)) if a != b] for n in NAMES
    }
    assert {n: c for n, c in changed.items() if c} == {}


def write() -> None:
    """Record the current engine's output as the golden files."""
    mappings = load_mappings(ROOT / "mappings")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        message = parse((EXAMPLES / f"{name}.hl7").read_bytes())
        result = accept(message, mappings).apply(message)
        (GOLDEN / f"{name}.json").write_text(cli_text(result.bundle), encoding="utf-8")
        sources = json.dumps(source_map(result), indent=1, ensure_ascii=False) + "\n"
        (GOLDEN / f"{name}.sources.json").write_text(sources, encoding="utf-8")
    table = {name: digests(name, mappings) for name in NAMES}
    (GOLDEN / "mutations.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write()
