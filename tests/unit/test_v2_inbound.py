"""v2 parsing and the declarative REF^I12 mapping: examples, escapes, field locations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from fhir_gateway.v2.inbound import V2ContentError, V2Rejected, accept, check_structure, load_mappings, parse
from fhir_gateway.v2.mapping import Loc, V2Mapping, V2MappingError, to_fhir_datetime
from fhir_gateway.v2.message import V2ParseError, escape, unescape
from fhir_gateway.validation.validator import Validator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
MAPPING_FILE = ROOT / "mappings" / "v2-ref-i12.yaml"
GOOD = [
    "ref-i12-v25.hl7",
    "ref-i12-v25-cr.hl7",
    "ref-i12-v24.hl7",
    "ref-i12-v24-crlf.hl7",
    "ref-i12-escapes.hl7",
]


@pytest.fixture(scope="module")
def mappings() -> dict[str, V2Mapping]:
    return load_mappings(ROOT / "mappings")


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.from_directory(ROOT / "profiles")


def test_separators_cr_lf_crlf_give_the_same_message() -> None:
    lf = (EXAMPLES / "ref-i12-v25.hl7").read_text()
    variants = [lf, lf.replace("\n", "\r"), lf.replace("\n", "\r\n")]
    parsed = [parse(v) for v in variants]
    assert {tuple(s.raw for s in m.segments) for m in parsed} == {tuple(s.raw for s in parsed[0].segments)}
    assert [s.name for s in parsed[0].segments][-1] == "ZWR"  # Z-segment kept


def test_escape_sequences_and_repetitions() -> None:
    m = parse((EXAMPLES / "ref-i12-escapes.hl7").read_bytes())
    nte = m.all("NTE")[0]
    assert (
        nte.value(3)
        == "Schulden & werkloosheid| zoekt hulp bij ^budgetteren^.\nEerste gesprek liefst met tolk."
    )
    assert nte.value(3, repetition=2) == "Tweede regel als herhaling."
    assert m.all("NTE")[1].value(3) == "Bel na 10:00 uur\\niet eerder."
    pid = m.segment("PID")
    assert pid is not None and len(pid.field(3)) == 2 and pid.value(5, 1, 1, repetition=2) == "Ozturk"
    assert m.segment("ZWR").value(3) == "route-hint^De Brug"  # type: ignore[union-attr]  # \\S\\ is text
    assert m.all("PRD")[1].sequence == 2


def test_escape_round_trip_and_hex() -> None:
    text = "a|b^c&d~e\\f\nline"
    assert unescape(escape(text)) == text
    assert unescape("\\X4F7A\\") == "Oz" and unescape("\\H\\bold\\N\\") == "bold"
    assert unescape("lone \\ backslash") == "lone \\ backslash"


def test_latin1_bytes_are_read() -> None:
    raw = (EXAMPLES / "ref-i12-v24.hl7").read_text().replace("van den Berg&", "Müller&").encode("latin-1")
    assert parse(raw).segment("PID").value(5) == "Müller"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", b"PID|1||x", b"MSH|", b"MSH|^~\\&|A\rP!D|1"],
)
def test_unreadable_messages_raise_parse_error(raw: bytes) -> None:
    with pytest.raises(V2ParseError):
        parse(raw)


@pytest.mark.parametrize("name", GOOD)
def test_examples_map_to_their_expected_bundle_and_validate(
    name: str, mappings: dict[str, V2Mapping], validator: Validator
) -> None:
    message = parse((EXAMPLES / name).read_bytes())
    bundle = accept(message, mappings).apply(message).bundle
    expected = json.loads((EXAMPLES / name).with_suffix(".json").read_text())
    assert bundle == expected
    assert [i for i in validator.validate(bundle) if i.is_error] == []
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types == ["Patient", "Practitioner", "Organization", "Consent", "ServiceRequest"]
    sr = bundle["entry"][-1]["resource"]
    assert sr["supportingInfo"] == [{"reference": bundle["entry"][3]["fullUrl"], "type": "Consent"}]
    assert bundle["entry"][0]["request"]["ifNoneExist"].startswith(
        "identifier=http://fhir.nl/fhir/NamingSystem/bsn|"
    )
    assert bundle["entry"][1]["request"]["ifNoneExist"].startswith(
        "identifier=http://fhir.nl/fhir/NamingSystem/agb-z|"
    )


def test_hl7apy_accepts_the_examples_structure() -> None:
    for name in ("ref-i12-v25.hl7", "ref-i12-v24.hl7", "ref-i12-escapes.hl7"):
        assert check_structure(parse((EXAMPLES / name).read_bytes())) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ref-i12-invalid-bsn.hl7", {("value", Loc("PID", 1, 3, 1, 1))}),
        (
            "ref-i12-unknown-icpc.hl7",
            {("code-invalid", Loc("DG1", 1, 3, 1, 1)), ("code-invalid", Loc("DG1", 2, 3, 1, 1))},
        ),
        ("ref-i12-no-consent.hl7", {("required", Loc("NTE", 1, 4)), ("invariant", Loc("RF1", 1))}),
    ],
)
def test_validation_errors_point_at_the_v2_field(
    name: str, expected: set[tuple[str, Loc]], mappings: dict[str, V2Mapping], validator: Validator
) -> None:
    message = parse((EXAMPLES / name).read_bytes())
    result = accept(message, mappings).apply(message)
    errors = [i for i in validator.validate(result.bundle) if i.is_error]
    assert {(i.code, result.locate(i.expression)) for i in errors} == expected


def test_locate_handles_resource_rooted_and_parent_expressions(mappings: dict[str, V2Mapping]) -> None:
    message = parse((EXAMPLES / "ref-i12-postcode-not-covered.hl7").read_bytes())
    result = accept(message, mappings).apply(message)
    assert result.locate("Patient.address[0].postalCode") == Loc("PID", 1, 11, 1, 5)
    assert result.locate("Patient.address") == Loc("PID", 1, 11, 1, 7)  # some field of PID-11
    assert result.locate("Bundle.entry[1].resource.identifier[0]") == Loc("PRD", 1, 7, 1, 2)
    assert result.locate("ServiceRequest.performer[0]") == Loc("RF1", 1)
    assert result.locate("Bundle.entry[4].resource.identifier.value") == Loc("RF1", 1, 6, 1)
    assert result.locate("Bundle.entry[9].resource") is None
    assert Loc("PID", 1, 11, 1, 5).erl() == ["PID", "1", "11", "1", "5"]


def test_header_checks(mappings: dict[str, V2Mapping]) -> None:
    good = (EXAMPLES / "ref-i12-v25.hl7").read_text()
    for change, code in [
        (("|2.5\n", "|2.3\n"), 203),
        (("REF^I12^REF_I12", "ADT^A01"), 200),
        (("REF^I12^REF_I12", "REF^I13"), 201),
        (("|P|2.5", "|X|2.5"), 202),
        (("|BATAU-000123|", "||"), 101),
    ]:
        with pytest.raises(V2Rejected) as exc:
            accept(parse(good.replace(*change)), mappings)
        assert exc.value.error.code == code
    no_pid = "\n".join(line for line in good.splitlines() if not line.startswith("PID"))
    with pytest.raises(V2ContentError) as content:
        accept(parse(no_pid), mappings)
    assert [(e.code, e.loc) for e in content.value.errors] == [(100, Loc("PID", 1))]


def test_a_mapping_change_needs_no_code_change() -> None:
    document = yaml.safe_load(MAPPING_FILE.read_text())
    changed = copy.deepcopy(document)
    changed["variables"]["referralSystem"] = "urn:oid:2.16.528.1.{=MSH-4}"
    changed["tables"]["coding_system"]["ICD10"] = "http://hl7.org/fhir/sid/icd-10"
    mapping = V2Mapping("v2-test", changed)
    message = parse((EXAMPLES / "ref-i12-unknown-icpc.hl7").read_bytes())
    sr = mapping.apply(message).bundle["entry"][-1]["resource"]
    assert sr["identifier"] == [{"system": "urn:oid:2.16.528.1.01053417", "value": "REF-2026-0102"}]
    assert sr["reasonCode"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"message": "REF"}, "'message'"),
        ({"versions": []}, "versions"),
        ({"variables": {"x": "=PID-3[.4 = ]"}}, "variables.x"),
        ({"variables": {"x": "=PID-3 | nosuchfilter"}}, "unknown filter"),
        ({"variables": {"x": "=PID-3 | map:nosuchtable"}}, "names no table"),
        ({"entries": [{"name": "a", "resource": {"x": 1}}]}, "resourceType"),
        # the template rules are the FHIR mappings': placeholders and directives start with '='
        ({"variables": {"x": "urn:oid:{MSH-4}"}}, r"placeholders are written \{=expr\}"),
        (
            {"entries": [{"name": "a", "$when": "NTE", "resource": {"resourceType": "Basic"}}]},
            r"entries\[0\]\.\$when must be a v2 expression starting with '='",
        ),
        ({"variables": {"x": {"$each": "PID-3", "v": "=.1"}}}, r"variables\.x\.\$each must be"),
    ],
)
def test_broken_mappings_fail_at_load(patch: dict[str, object], message: str) -> None:
    document = yaml.safe_load(MAPPING_FILE.read_text())
    document.update(patch)
    with pytest.raises(V2MappingError, match=message):
        V2Mapping("v2-broken", document)


def test_dates() -> None:
    assert to_fhir_datetime("20261105103000") == "2026-11-05T10:30:00+01:00"  # Amsterdam winter time
    assert to_fhir_datetime("20260705103000") == "2026-07-05T10:30:00+02:00"
    assert to_fhir_datetime("202611051030+0000") == "2026-11-05T10:30:00+00:00"
    assert to_fhir_datetime("20261105") == "2026-11-05"
    assert to_fhir_datetime("2026-11-05") is None
