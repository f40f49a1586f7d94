"""Search parameter parsing and index value extraction (pure)."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.fhir.search import decode_cursor, encode_cursor, parse_search
from fhir_gateway.fhir.searchparams import normalise_reference, parse_date_range
from fhir_gateway.store.index import index_rows


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2026", datetime(2026, 1, 1), datetime(2026, 12, 31, 23, 59, 59, 999999)),
        ("2026-02", datetime(2026, 2, 1), datetime(2026, 2, 28, 23, 59, 59, 999999)),
        ("2026-12-31", datetime(2026, 12, 31), datetime(2026, 12, 31, 23, 59, 59, 999999)),
        ("2026-03-02T10:00:00+01:00", datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 9, 0, 0, 999999)),
        (
            "2026-03-02T10:00:00.5Z",
            datetime(2026, 3, 2, 10, 0, 0, 500000),
            datetime(2026, 3, 2, 10, 0, 0, 500000),
        ),
    ],
)
def test_date_ranges(text: str, low: datetime, high: datetime) -> None:
    r = parse_date_range(text)
    assert (r.low, r.high) == (low, high)


@pytest.mark.parametrize("bad", ["2026-13", "yesterday", "26-01-01", ""])
def test_bad_dates_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_date_range(bad)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Task/1", "Task/1"),
        ("Task/1/_history/3", "Task/1"),
        ("http://gw/fhir/Task/1", "Task/1"),
        ("http://elsewhere/fhir/Task/1", "http://elsewhere/fhir/Task/1"),
        ("#contained", None),
        ("urn:uuid:abc", "urn:uuid:abc"),
    ],
)
def test_reference_normalisation(ref: str, expected: str | None) -> None:
    assert normalise_reference(ref, "http://gw/fhir") == expected


def test_index_rows_cover_each_parameter_type() -> None:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "identifier": [{"system": "urn:s", "value": "7"}],
        "owner": {"reference": "Organization/w"},
        "authoredOn": "2026-01-05",
        "businessStatus": {"coding": [{"system": "urn:m", "code": "received"}]},
    }
    rows = {(param, system, value) for param, system, value, *_ in index_rows("Task", task)}
    assert ("status", None, "requested") in rows
    assert ("identifier", "urn:s", "7") in rows
    assert ("owner", None, "Organization/w") in rows
    assert ("business-status", "urn:m", "received") in rows
    dates = [low for param, _s, _v, _t, low, _h in index_rows("Task", task) if param == "authored-on"]
    assert dates[0] == datetime(2026, 1, 5)
    names = index_rows("Patient", {"resourceType": "Patient", "name": [{"family": "Ölçer"}]})
    assert {value for param, _s, value, *_ in names if param == "family"} == {"olcer"}


def test_search_parsing() -> None:
    params = [("owner", "Organization/w1"), ("status", "a,b"), ("_count", "5"), ("_sort", "-_lastUpdated")]
    q = parse_search("Task", params)
    assert q.count == 5 and q.sort_desc and q.sort_by == "_lastUpdated"
    assert q.conditions[0].values == ("Organization/w1",)
    assert len(q.conditions[1].values) == 2
    assert parse_search("Task", [("patient", "p1")]).conditions[0].values == ("Patient/p1",)
    with pytest.raises(FhirError):
        parse_search("Task", [("owner", "w1")])  # owner may be several types: must say which
    q = parse_search("Task", [("_sort", "-authored-on,status")])
    assert q.sort_by == "_keys" and [(k.name, k.desc) for k in q.sort_keys] == [
        ("authored-on", True),
        ("status", False),
    ]
    for bad in ("owner", "bogus", "status,status", "a,b,c,d"):  # a reference, unknown, twice, too many
        with pytest.raises(FhirError) as err:
            parse_search("Task", [("_sort", bad)])
        assert err.value.status == 400
    with pytest.raises(FhirError):
        parse_search("Task", [("_include", "Task:status")])
    q = parse_search("Task", [("nope", "1")])
    assert q.warnings and q.warnings[0].severity == "warning"


def test_cursor_round_trip_and_tamper() -> None:
    assert decode_cursor(encode_cursor("2026-01-01T00:00:00", 42)) == ("2026-01-01T00:00:00", 42, False)
    assert decode_cursor(encode_cursor("x", 7, backward=True)) == ("x", 7, True)
    with pytest.raises(FhirError):
        decode_cursor("not-a-cursor!")


def _reference_walk(node: object, path: tuple[str, ...]) -> list[object]:
    """The index's element walk, written the plain recursive way (the oracle for the fast one)."""
    if not path:
        return list(node) if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [x for item in node for x in _reference_walk(item, path)]
    if isinstance(node, dict) and path[0] in node:
        return _reference_walk(node[path[0]], path[1:])
    return []


def _corpus() -> list[dict]:
    import json
    from pathlib import Path

    from tests.wor import referral_bundle

    root = Path(__file__).resolve().parents[2]
    resources = [e["resource"] for e in referral_bundle("WALK-1")["entry"]]
    resources += [
        e["resource"] for e in json.loads((root / "examples/directory/directory.json").read_text())["entry"]
    ]
    resources += [json.loads(p.read_text()) for p in sorted((root / "tests/data/r4").glob("*.json"))]
    return resources


def test_fast_element_walk_matches_the_recursive_one() -> None:
    from fhir_gateway.fhir.searchparams import load_search_params
    from fhir_gateway.store.index import _values

    corpus = _corpus()
    checked = 0
    for resource in corpus:
        for param in load_search_params().get(resource["resourceType"], {}).values():
            expected = [x for path in param.paths for x in _reference_walk(resource, path)]
            assert _values(resource, param.paths) == expected, (resource["resourceType"], param.name)
            checked += bool(expected)
    assert checked > 50  # the corpus exercises the parameters, not just empty walks
    nested = {"resourceType": "Task", "input": [[{"valueString": "a"}], {"valueString": "b"}]}
    assert _values(nested, (("input", "valueString"),)) == ["a", "b"]
