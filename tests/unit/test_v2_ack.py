"""ACK and RRI^I12 builders: layouts per version, escaping, and hl7apy reading them back."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from fhir_gateway.v2.ack import AckError, ack_code_of, build_ack, header_guess
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.mapping import Loc
from fhir_gateway.v2.mllp import FrameReader, frame
from fhir_gateway.v2.outbound import rri_for
from fhir_gateway.vocabulary import AMSTERDAM

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "v2"
NOW = datetime(2026, 11, 5, 10, 31, tzinfo=AMSTERDAM)


def _reparse(er7: str):
    message = parse_message(er7, find_groups=True, validation_level=VALIDATION_LEVEL.TOLERANT)
    message.validate()
    return message


def test_aa_for_v25_swaps_sender_and_receiver() -> None:
    inbound = parse((EXAMPLES / "ref-i12-v25.hl7").read_bytes())
    ack = build_ack(inbound, "AA", control_id="ACK1", now=NOW)
    assert ack.split("\r")[0] == (
        "MSH|^~\\&|WORGW|WOR|HIS-BATAU|01053417|20261105103100+0100||ACK^I12^ACK|ACK1|P|2.5"
    )
    parsed = _reparse(ack)
    assert parsed.msa.msa_1.value == "AA" and parsed.msa.msa_2.value == "BATAU-000123"
    assert ack_code_of(ack) == "AA"


def test_ae_for_v25_has_erl_location_code_severity_and_text() -> None:
    inbound = parse((EXAMPLES / "ref-i12-v25.hl7").read_bytes())
    err = AckError(
        102, "'999911121' is not a valid BSN | check", Loc("PID", 1, 3, 1, 1), application_code="value"
    )
    ack = build_ack(inbound, "AE", [err], now=NOW)
    line = ack.split("\r")[2]
    assert line == (
        "ERR||PID^1^3^1^1|102^Data type error^HL70357|E|value^^http://hl7.org/fhir/issue-type|||"
        "'999911121' is not a valid BSN \\F\\ check"
    )
    parsed = _reparse(ack)
    assert parsed.err.err_3.cwe_1.value == "102"
    assert parsed.err.err_2.erl_1.value == "PID" and parsed.err.err_2.erl_3.value == "3"
    assert parsed.err.err_4.value == "E"


def test_ae_for_v24_uses_err1_and_msa3() -> None:
    inbound = parse((EXAMPLES / "ref-i12-v24.hl7").read_bytes())
    ack = build_ack(inbound, "AE", [AckError(103, "Code A04 is not eligible", Loc("DG1", 1, 3))], now=NOW)
    lines = ack.rstrip("\r").split("\r")
    assert lines[0].endswith("|P|2.4") and lines[0].split("|")[8] == "ACK^I12^ACK"
    assert lines[1] == "MSA|AE|HHIJ-20261105-0042|Code A04 is not eligible"
    assert lines[2] == "ERR|DG1^1^3^103&Table value not found&HL70357"
    parsed = _reparse(ack)
    assert parsed.err.err_1.to_er7().startswith("DG1^1^3^103")


def test_ar_without_any_header_still_parses() -> None:
    ack = build_ack(header_guess(b"\x00\xffnot hl7"), "AR", [AckError(100, "no MSH")], now=NOW)
    # MSA-2 stays empty when there is no control id to echo (hl7apy's validate() calls it required)
    parsed = parse_message(ack, find_groups=True)
    assert parsed.msa.msa_1.value == "AR" and parsed.msh.msh_12.value == "2.5"
    assert parsed.msh.msh_9.to_er7() == "ACK^^ACK"


def test_unsupported_version_is_answered_in_25() -> None:
    raw = (EXAMPLES / "ref-i12-v25.hl7").read_text().replace("|2.5\n", "|2.3\n")
    ack = build_ack(
        header_guess(raw), "AR", [AckError(203, "Version 2.3 is not supported", Loc("MSH", 1, 12))]
    )
    assert ack.split("\r")[0].endswith("|2.5") and "MSH^1^12|203^" in ack


def _communication() -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "sent": "2026-11-12T09:00:00+01:00",
        "topic": {"coding": [{"system": "x", "code": "intake-held", "display": "Intakegesprek gevoerd"}]},
        "payload": [
            {"contentString": "Intake gehouden op 12-11.\nMevrouw start bij de wandelgroep | dinsdag."}
        ],
    }


@pytest.mark.parametrize("version", ["2.4", "2.5"])
def test_rri_i12_for_feedback(version: str) -> None:
    original = {"sender": "HIS-BATAU^01053417", "control_id": "BATAU-000123", "message_type": "REF^I12"}
    task = {"id": "t1", "status": "in-progress", "owner": {"display": "Stichting De Brug Welzijn"}}
    patient = {
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
        "name": [{"family": "Jansen", "given": ["Marieke"]}],
        "birthDate": "1972-03-14",
        "gender": "female",
    }
    requester = {
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01023456"}],
        "name": [{"family": "El Amrani", "given": ["Youssef"]}],
    }
    sr = {"identifier": [{"system": "s", "value": "REF-2026-0001"}]}
    er7 = rri_for(
        _communication(),
        task,
        original,
        patient=patient,
        service_request=sr,
        requester=requester,
        version=version,
        control_id="RRI1",
        now=NOW,
    )
    lines = er7.rstrip("\r").split("\r")
    assert (
        lines[0]
        == f"MSH|^~\\&|WORGW|WOR|HIS-BATAU|01053417|20261105103100+0100||RRI^I12^RRI_I12|RRI1|P|{version}"
    )
    assert lines[1] == "MSA|AA|BATAU-000123"
    assert lines[2].startswith("RF1|A^Accepted^HL70283|||||REF-2026-0001|20261112090000+0100")
    assert lines[-1] == (
        "NTE|1|L|Intake gehouden op 12-11.~Mevrouw start bij de wandelgroep \\F\\ dinsdag."
        "|intake-held^Intakegesprek gevoerd^WOR-MILESTONE"
    )
    parsed = _reparse(er7)
    assert parsed.pid.pid_3.cx_1.value == "999911120"
    ours = parse(er7)
    assert ours.all("NTE")[0].value(3, repetition=2) == "Mevrouw start bij de wandelgroep | dinsdag."
    assert ours.all("PRD")[0].value(7) == "01023456"


def test_frame_reader_handles_garbage_splits_and_several_frames() -> None:
    reader = FrameReader(max_bytes=100)
    data = b"noise" + frame("MSH|one") + frame("MSH|two") + b"\x0bMSH|thr"
    got = []
    for i in range(0, len(data), 3):
        got += reader.feed(data[i : i + 3])
    assert got == [b"MSH|one", b"MSH|two"] and reader.partial == b"MSH|thr"
    assert reader.feed(b"ee\x1c\r") == [b"MSH|three"]
    big = FrameReader(max_bytes=10)
    big.feed(b"\x0b" + b"x" * 11)
    assert big.overflow
