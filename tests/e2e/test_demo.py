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


def test_demo_twice_against_one_gateway(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Repeatable: a second run against the same (real, uvicorn-served) gateway plays every step
    again with new referral numbers, and neither run leaves a referral open in a worklist."""
    import httpx

    from tests.e2e.conftest import bearer

    base, _ = server
    for run in (1, 2):
        done = subprocess.run(
            [*_command(), "--base-url", f"{base}/fhir"], capture_output=True, text=True, timeout=120
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, (run, out)
        assert "all 11 steps answered as expected" in out, (run, out)
        assert "withdrew this run's open referral(s)" in out, (run, out)
    admin = bearer(base)
    tasks = httpx.get(f"{base}/fhir/Task", params={"_count": 100}, headers=admin).json()
    statuses = sorted(e["resource"]["status"] for e in tasks.get("entry", []))
    assert statuses == ["cancelled", "cancelled", "completed", "completed"], statuses  # 2 FHIR, 2 v2
    referrals = httpx.get(f"{base}/fhir/ServiceRequest", params={"_count": 100}, headers=admin).json()
    numbers = [i["value"] for e in referrals["entry"] for i in e["resource"].get("identifier", [])]
    assert len(numbers) == len(set(numbers)) == 4, numbers  # a fresh referral number per run
