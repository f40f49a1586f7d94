"""The fuzz harness (`benchmarks/fuzz.py`) without atheris: every seed keeps every property of
its target, so a run starts from inputs the gateway handles right and the harness cannot rot
unnoticed (the long runs are manual: benchmarks/README.md, "Coverage-guided fuzzing")."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import fuzz
from fhir_gateway.validation.bsn import is_valid_bsn


@pytest.mark.parametrize("name", fuzz.TARGET_NAMES)
def test_every_seed_keeps_the_properties_of_its_target(name: str, tmp_path: Path) -> None:
    maker = fuzz.MAKERS[name]
    target = maker(tmp_path) if name in ("v2", "bundle") else maker()
    seeds = target.seeds()
    assert seeds
    for seed in seeds:
        finding = fuzz.run_one(target, seed)
        assert finding is None, finding.text


def test_the_mllp_reference_framing() -> None:
    assert fuzz.mllp_reference(b"x\x0ba\x1c\r\x0bb\x1c", 8) == ([b"a", b"b"], False)
    assert fuzz.mllp_reference(b"\x0b" + b"a" * 9, 8) == ([], True)


def test_fresh_bsns_pass_the_11_test_and_differ() -> None:
    values = [fuzz.fresh_bsn(n) for n in range(500)]
    assert all(is_valid_bsn(v) for v in values) and len(set(values)) == 500
