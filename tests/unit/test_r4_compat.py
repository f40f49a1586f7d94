"""R4 (4.0.1) wire compatibility of the R4B models.

The gateway models FHIR with ``fhir.resources.R4B`` but speaks R4 4.0.1 on the wire.
These tests read R4 example JSON (official spec examples where we could get them,
see ``tests/data/r4/SOURCES.md``), parse each with the R4B model class, dump it back
and require the output to mean the same as the input.

Only representation-level noise is normalised away (see ``normalise``).  Any real
R4/R4B difference must be listed in ``KNOWN_DIFFERENCES`` with a reason; nothing is
dropped silently, and a listed difference that no longer occurs fails the test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "r4"

SUPPORTED_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "HealthcareService",
    "Location",
    "Endpoint",
    "Consent",
    "ServiceRequest",
    "Task",
    "CarePlan",
    "Communication",
    "QuestionnaireResponse",
    "Provenance",
    "AuditEvent",
    "Subscription",
    "Bundle",
)


# --------------------------------------------------------------------------- normaliser

# FHIR instant / dateTime with a time part: "2015-08-27T08:39:24+10:00", "...24.123Z".
_DATETIME_WITH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class _Instant:
    """A moment (to the second, in UTC), its fraction of a second, and the offset it was
    written in (the offset is kept: it is data, ``+10:00`` is not ``Z``)."""

    utc: datetime
    fraction: Decimal
    offset_seconds: float


def _parse_instant(value: str) -> _Instant:
    # R4B re-serialises fractions as microseconds (".123" -> ".123000", ".000" -> none)
    # and "+00:00" as "Z"; compare the value, not the digits.  The fraction is kept as an
    # exact decimal, so digits beyond microseconds (which the model would truncate) still
    # make the comparison fail.
    text = value.replace("Z", "+00:00")
    fraction = Decimal(0)
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", text)
    if match:
        head, digits, tail = match.groups()
        text, fraction = head + tail, Decimal("0." + digits).normalize()
    parsed = datetime.fromisoformat(text)
    offset = parsed.utcoffset()
    assert offset is not None, value
    return _Instant(parsed.astimezone(UTC), fraction, offset.total_seconds())


def normalise(value: Any) -> Any:
    """Reduce FHIR JSON to a form where equal meaning gives equal values.

    * numbers: ``1``, ``1.0`` and ``1.00`` compare equal (decimal value, not spelling);
    * instants / dateTimes with a time: same moment, same offset, any spelling of the
      fraction and of UTC (``Z`` vs ``+00:00``);
    * objects: key order is irrelevant (dicts compare unordered anyway);
    * arrays keep their order: order is significant in FHIR.
    """
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value)).normalize()
    if isinstance(value, str) and _DATETIME_WITH_TIME.match(value):
        return _parse_instant(value)
    return value


# ------------------------------------------------------------------ known differences


@dataclass(frozen=True)
class KnownDifference:
    """A real R4 vs R4B difference seen for one element of one example file.

    ``path`` is a tuple of keys / list indexes into the resource.  ``r4`` is the value in
    the R4 input, ``r4b`` the value the R4B round trip produces (``MISSING`` if absent).
    """

    name: str
    path: tuple[str | int, ...]
    r4: Any
    r4b: Any
    reason: str


MISSING = object()

# None of the example files currently shows an R4/R4B difference: every element of
# every example survives the R4B round trip with the same meaning.  If a new example
# does differ, list it here, e.g.
#   "Foo-example.json": [KnownDifference("foo-bar-renamed", ("bar",), "x", MISSING, "...")]
KNOWN_DIFFERENCES: dict[str, list[KnownDifference]] = {}


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(doc, dict):
            if step not in doc:
                return MISSING
            doc = doc[step]
        elif isinstance(doc, list) and isinstance(step, int) and step < len(doc):
            doc = doc[step]
        else:
            return MISSING
    return doc


def _remove(doc: Any, path: tuple[str | int, ...]) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _apply_known_differences(name: str, original: dict, dumped: dict) -> None:
    """Check each listed difference really occurs, then take exactly that element out."""
    for diff in KNOWN_DIFFERENCES.get(name, []):
        in_r4, in_r4b = _get(original, diff.path), _get(dumped, diff.path)
        assert in_r4 == diff.r4 and in_r4b == diff.r4b, (
            f"known difference {diff.name!r} at {diff.path} no longer holds: "
            f"R4={in_r4!r} R4B={in_r4b!r}; update KNOWN_DIFFERENCES"
        )
        _remove(original, diff.path)
        _remove(dumped, diff.path)


# ----------------------------------------------------------------------------- helpers


def _example_files() -> list[Path]:
    return sorted(DATA_DIR.glob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _round_trip(data: dict) -> dict:
    model = get_fhir_model_class(data["resourceType"]).model_validate(data)
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                return f"{path}.{key}: only in R4B output ({b[key]!r})"
            if key not in b:
                return f"{path}.{key}: dropped by R4B ({a[key]!r})"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: list length {len(a)} vs {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------- tests


def test_every_supported_type_has_an_example() -> None:
    found = {_load(path)["resourceType"] for path in _example_files()}
    missing = sorted(set(SUPPORTED_TYPES) - found)
    assert not missing, f"no R4 example file for: {missing}"


def test_bundle_example_is_a_transaction() -> None:
    types = {_load(p).get("type") for p in _example_files() if _load(p)["resourceType"] == "Bundle"}
    assert "transaction" in types


def test_sources_lists_every_example_file() -> None:
    sources = (DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in _example_files() if p.name not in sources]
    assert not unlisted, f"add to SOURCES.md: {unlisted}"


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=f"{_load(p)['resourceType']}-{p.stem}") for p in _example_files()],
)
def test_r4_example_round_trips_through_r4b(path: Path) -> None:
    original = _load(path)
    assert original["resourceType"] in SUPPORTED_TYPES

    dumped = _round_trip(original)
    _apply_known_differences(path.name, original, dumped)

    expected, actual = normalise(original), normalise(dumped)
    assert actual == expected, _first_difference(expected, actual)


def test_known_differences_refer_to_existing_files() -> None:
    names = {p.name for p in _example_files()}
    assert set(KNOWN_DIFFERENCES) <= names


# ---------------------------------------------- pinned behaviours the lead asked about


def test_unknown_elements_are_rejected_not_dropped() -> None:
    """An element R4B does not know (here an R5-only Task element) is an error, never lost."""
    task = _load(DATA_DIR / "Task-example2.json")
    task["requestedPerformer"] = [{"concept": {"text": "Performer"}}]
    with pytest.raises(ValidationError, match="requestedPerformer"):
        get_fhir_model_class("Task").model_validate(task)


def test_instant_spelling_changes_but_meaning_does_not() -> None:
    """R4B rewrites instant spellings; the normaliser must treat these as equal."""
    provenance = _load(DATA_DIR / "Provenance-signature.json")
    for written, reserialised in [
        ("2015-08-27T08:39:24.123+10:00", "2015-08-27T08:39:24.123000+10:00"),
        ("2015-08-27T08:39:24.000Z", "2015-08-27T08:39:24Z"),
        ("2015-08-27T08:39:24+00:00", "2015-08-27T08:39:24Z"),
    ]:
        provenance["recorded"] = written
        dumped = _round_trip(provenance)
        assert dumped["recorded"] == reserialised
        assert normalise(dumped) == normalise(provenance)


def test_normaliser_does_not_hide_real_changes() -> None:
    assert normalise({"a": "2015-08-27T08:39:24+10:00"}) != normalise({"a": "2015-08-27T08:39:24Z"})
    assert normalise({"a": "2015-08-27T08:39:24.1+10:00"}) != normalise({"a": "2015-08-27T08:39:24+10:00"})
    assert normalise({"a": 1.5}) != normalise({"a": 1.05})
    assert normalise({"a": [1, 2]}) != normalise({"a": [2, 1]})
    assert normalise({"a": 1.0, "b": 0}) == normalise({"b": 0.0, "a": 1})


# Extension.value[x] is the one element-level R4/R4B difference in the model classes
# these resources use (checked element by element against fhir.resources 6.1.0, which
# was generated from R4 4.0.1):
#   R4 only : Extension.valueMeta
#   R4B only: Extension.valueCodeableReference, Extension.valueRatioRange
EXTENSION_VALUE_META_R4_ONLY = KnownDifference(
    name="extension-valueMeta-r4-only",
    path=("extension", 0, "valueMeta"),
    r4={"versionId": "1"},
    r4b=MISSING,
    reason="R4 allows Meta as an extension value; R4B dropped it, so the R4B model rejects it.",
)
EXTENSION_R4B_ONLY_VALUE_TYPES = ("valueCodeableReference", "valueRatioRange")


def test_known_difference_extension_value_meta_is_rejected_by_r4b() -> None:
    patient = _load(DATA_DIR / "Patient-pat1.json")
    patient["extension"] = [
        {"url": "http://example.org/fhir/StructureDefinition/x", "valueMeta": {"versionId": "1"}}
    ]
    assert _get(patient, EXTENSION_VALUE_META_R4_ONLY.path) == EXTENSION_VALUE_META_R4_ONLY.r4
    with pytest.raises(ValidationError, match="valueMeta"):
        get_fhir_model_class("Patient").model_validate(patient)


def test_known_difference_extension_r4b_only_value_types_exist() -> None:
    """R4B accepts these; they are not valid R4, so the gateway must not emit them on the wire."""
    fields = {field.alias or name for name, field in get_fhir_model_class("Extension").model_fields.items()}
    for element in EXTENSION_R4B_ONLY_VALUE_TYPES:
        assert element in fields
    assert "valueMeta" not in fields
