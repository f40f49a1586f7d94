"""Each fuzz target for 20 s under libFuzzer (benchmarks/fuzz.py): no finding, no libFuzzer crash.
`stress`: skipped unless selected (`pytest -m stress tests/faults/test_fuzz_stress.py`, ≈ 2 min)
and without atheris (`pip install -e '.[fuzz]'`); the long runs are in benchmarks/README.md."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from benchmarks import fuzz

pytestmark = pytest.mark.stress


@pytest.mark.parametrize("target", fuzz.TARGET_NAMES)
def test_twenty_seconds_of_fuzzing_find_nothing(
    request: pytest.FixtureRequest, target: str, tmp_path: Path
) -> None:
    expr = request.config.getoption("markexpr") or ""
    if "stress" not in expr or "not stress" in expr:
        pytest.skip("stress: select with -m stress")
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install -e '.[fuzz]')")
    args = argparse.Namespace(
        target=target, seconds=20, instrument="gateway", out=str(tmp_path), libfuzzer=[]
    )
    summary = fuzz.parent(args)
    assert summary["executions"] > 0
    assert summary["findings"] == [] and summary["libfuzzer_crashes"] == [], summary
