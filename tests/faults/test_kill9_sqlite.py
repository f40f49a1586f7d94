"""kill -9 the gateway (SQLite) in the middle of a referral stream: nothing acknowledged is lost,
nothing is half-stored, and every referral can be resent safely (exactly one Task per referral)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.harness import GP_CLIENT, Server, gateway_env, token
from tests.faults.helpers import Stream, resend, store_audit

pytestmark = pytest.mark.e2e


def test_kill9_mid_stream_loses_nothing_acknowledged_and_resend_is_idempotent(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite:///{tmp_path / 'gw.db'}")
    server = Server(env).start()
    try:
        stream = Stream(server.base, token(env, GP_CLIENT), "KILL9", threads=3).start()
        deadline = time.monotonic() + 30
        while len(stream.ok()) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill9()  # SIGKILL with requests in flight
        stream.join()
    finally:
        server.stop()
    acknowledged = set(stream.ok())
    unanswered = set(stream.answers) - acknowledged
    assert len(acknowledged) >= 15, stream.answers
    assert set(map(str, stream.answers.values())) <= {"200", "201"} | {
        a for a in map(str, stream.answers.values()) if not a.isdigit()
    }, stream.outcomes  # no 4xx/5xx before the kill

    restarted = Server(env).start()
    try:
        audit = store_audit(restarted.base, env)
        missing = [rid for rid in acknowledged if audit["by_referral"][rid] != 1]
        assert not missing, f"acknowledged referrals lost or duplicated: {missing}"
        half = {sr: counts for sr, counts in audit["per_sr"].items() if counts != (1, 1)}
        assert not half, f"ServiceRequests without exactly one Task and one CarePlan: {half}"

        statuses = resend(restarted.base, token(env, GP_CLIENT), stream.bodies)
        assert set(statuses) <= {200, 201}, statuses
        after = store_audit(restarted.base, env)
        assert all(after["by_referral"][rid] == 1 for rid in stream.bodies), after["by_referral"]
        assert all(counts == (1, 1) for counts in after["per_sr"].values()), after["per_sr"]
        assert after["tasks"] == len(stream.bodies) == after["careplans"]
        print(
            f"acknowledged {len(acknowledged)}, unanswered at kill {len(unanswered)}, resent {dict(statuses)}"
        )
    finally:
        restarted.stop()
