"""`fhir-gateway demo` end to end: it starts its own gateway, plays the loop, exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

STEPS = (
    "gateway",
    "tokens",
    "referral",
    "worklist",
    "accept",
    "intake",
    "positive-health",
    "complete",
    "feedback",
    "v2",
    "unroutable",
)

pytestmark = pytest.mark.e2e


def _command() -> list[str]:
    """`fhir-gateway demo` once the lead registered it; the module itself until then."""
    from fhir_gateway.cli import main

    if "demo" in getattr(main, "commands", {}):
        return [sys.executable, "-m", "fhir_gateway.cli", "demo"]
    return [sys.executable, "-m", "fhir_gateway.demo"]


def test_demo_plays_the_whole_loop() -> None:
    done = subprocess.run(_command(), capture_output=True, text=True, timeout=90)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for step in STEPS:
        assert f"✓ {step}" in out, (step, out)
        assert f"ok {step}" in out, (step, out)  # and in the summary table
    assert "MSA|AA" in out  # the v2 ACK is shown
    assert "422 business-rule" in out
    assert "all 11 steps answered as expected" in out


def test_demo_fails_against_a_gateway_that_is_not_there() -> None:
    done = subprocess.run(
        [*_command(), "--base-url", "http://127.0.0.1:9/fhir"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "FAILED gateway" in done.stdout
