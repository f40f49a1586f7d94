"""v2 size caps: segments per message and repetitions per field, counted before parsing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.limits import DEFAULT_MAX_REPETITIONS, DEFAULT_MAX_SEGMENTS, check_limits

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
GOOD = (EXAMPLES / "ref-i12-v25.hl7").read_text().replace("\n", "\r")
PID3 = "999911120^^^NLMINBIZA^NNNLD~P-4711^^^01053417^PI"


def with_pid3_repetitions(n: int) -> str:
    extra = "~".join(f"X{i}^^^01053417^PI" for i in range(n - 2))
    return GOOD.replace(PID3, f"{PID3}~{extra}")


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.hl7")))
def test_every_example_keeps_to_the_default_caps(name: str) -> None:
    data = (EXAMPLES / name).read_bytes()
    assert check_limits(data, DEFAULT_MAX_SEGMENTS, DEFAULT_MAX_REPETITIONS) is None


def test_repetitions_over_the_cap_name_the_field() -> None:
    assert check_limits(with_pid3_repetitions(50), 200, 50) is None
    error = check_limits(with_pid3_repetitions(51), 200, 50)
    assert error is not None
    assert (error.code, error.loc.erl() if error.loc else None) == (102, ["PID", "1", "3"])
    assert error.text == "PID-3 has 51 repetitions; at most 50 per field are accepted"
    assert error.application_code == "too-costly"


def test_msh2_encoding_characters_are_not_repetitions() -> None:
    assert check_limits(GOOD, 200, 1) is not None  # PID-3 has 2: the cap applies ...
    only_msh = GOOD.split("\r")[0]
    assert check_limits(only_msh, 200, 1) is None  # ... but MSH-2 '^~\\&' is not a repeated field


def test_msh_fields_are_numbered_as_hl7_numbers_them() -> None:
    msh = GOOD.split("\r")[0].split("|")
    msh[4] = "~".join(["01053417"] * 3)  # MSH-5 (index 4: MSH-1 is the separator itself)
    error = check_limits("|".join(msh) + "\r" + "\r".join(GOOD.split("\r")[1:]), 200, 2)
    assert error is not None and error.loc is not None and error.loc.erl() == ["MSH", "1", "5"]


def test_segments_over_the_cap_name_the_first_segment_beyond_it() -> None:
    nte = "NTE|9|P|x"
    segments = [s for s in GOOD.split("\r") if s]
    at_cap = "\r".join(segments + [nte] * (20 - len(segments)))
    assert check_limits(at_cap + "\r\r\n", 20, 50) is None  # blank lines are not segments
    error = check_limits(at_cap + "\r" + nte, 20, 50)
    assert error is not None and error.code == 100
    nte_before = sum(1 for s in segments if s.startswith("NTE"))
    assert error.loc is not None and error.loc.erl() == ["NTE", str(20 - len(segments) + nte_before + 1)]
    assert error.text == "The message has 21 segments; at most 20 are accepted"


def test_a_cap_of_zero_is_off() -> None:
    assert check_limits(with_pid3_repetitions(500), 0, 0) is None


def test_other_delimiters_are_honoured() -> None:
    custom = GOOD.replace("|", "#").replace("^~\\&", "^*\\&", 1).replace("~", "*")
    assert parse(custom).segment("PID") is not None
    error = check_limits(
        custom.replace(PID3.replace("|", "#").replace("~", "*"), "*".join(["a"] * 5)), 200, 4
    )
    assert error is not None and error.loc is not None and error.loc.erl() == ["PID", "1", "3"]


def test_100k_repetitions_are_refused_in_milliseconds() -> None:
    data = with_pid3_repetitions(100_000).encode()
    started = time.perf_counter()
    error = check_limits(data, DEFAULT_MAX_SEGMENTS, DEFAULT_MAX_REPETITIONS)
    elapsed = time.perf_counter() - started
    assert error is not None and error.text.startswith("PID-3 has 100000 repetitions")
    assert elapsed < 0.5, elapsed
