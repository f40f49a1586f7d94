"""PostgreSQL restarted under a referral stream: requests fail cleanly (503 + OperationOutcome,
Retry-After) and the gateway recovers by itself; nothing acknowledged is lost or half-stored.

Restarts the machine's shared PostgreSQL cluster (`pg_ctlcluster … restart`): development machines
only, hence `stress` (not in the default run) and opt-in via GATEWAY_FAULTS_RESTART_POSTGRES=1.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from benchmarks.harness import (
    GP_CLIENT,
    Server,
    fhir_headers,
    gateway_env,
    postgres_available,
    postgres_database,
    prepare_database,
    token,
)
from tests.faults.helpers import Stream, resend, store_audit
from tests.wor import referral_bundle

pytestmark = [pytest.mark.stress, pytest.mark.postgres, pytest.mark.e2e]


def _cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or os.environ.get("GATEWAY_FAULTS_RESTART_POSTGRES") != "1":
        pytest.skip("set GATEWAY_FAULTS_RESTART_POSTGRES=1 on a dev machine with a local cluster")
    if not postgres_available():
        pytest.skip("PostgreSQL not reachable")
    return versions[-1]


def test_postgres_restart_gives_503_and_recovers_without_gateway_restart() -> None:
    version = _cluster()
    with postgres_database("faults") as url:
        env = gateway_env(url)
        prepare_database(env)
        server = Server(env).start()
        try:
            stream = Stream(server.base, token(env, GP_CLIENT), "PGRESTART", threads=3).start()
            time.sleep(2)
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                check=True,
                timeout=120,
            )
            time.sleep(2)
            stream.join()
            # recovery without a gateway restart: the next referral is accepted within a few tries
            recovered = None
            tok = token(env, GP_CLIENT)
            for _ in range(40):
                r = httpx.post(
                    f"{server.base}/fhir",
                    content=httpx.Request("POST", "/", json=referral_bundle()).content,
                    headers=fhir_headers(tok),
                    timeout=30,
                )
                if r.status_code in (200, 201):
                    recovered = r.status_code
                    break
                time.sleep(0.5)
            statuses = Counter(map(str, stream.answers.values()))
            print("stream answers:", dict(statuses))
            assert recovered, "gateway did not recover after PostgreSQL came back"
            bad = [o for o in stream.outcomes if o["status"] != 503]
            assert not bad, f"answers other than 503 while PostgreSQL restarted: {bad[:3]}"
            for o in stream.outcomes:
                assert isinstance(o["body"], dict) and o["body"].get("resourceType") == "OperationOutcome", o
            audit = store_audit(server.base, env)
            acknowledged = stream.ok()
            assert all(audit["by_referral"][rid] == 1 for rid in acknowledged)
            assert all(c == (1, 1) for c in audit["per_sr"].values()), audit["per_sr"]
            again = resend(server.base, tok, stream.bodies)
            assert set(again) <= {200, 201}, again
        finally:
            server.stop()
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
            )
