"""Peer: fhirstarter (FastAPI FHIR framework) with an in-memory ServiceRequest create provider.

fhirstarter 4.2.0 pins fastapi<0.137, so it lives in its OWN venv: benchmarks/.peer-venv
(gitignored via benchmarks/.gitignore). Created on first use:

    python3 -m venv benchmarks/.peer-venv
    benchmarks/.peer-venv/bin/pip install 'fhirstarter==4.2.0' 'uvicorn>=0.30'
    FHIR_SEQUENCE=R4B benchmarks/.peer-venv/bin/uvicorn peer_app:app --app-dir benchmarks/peer_app

`python -m benchmarks.run --peer` does that and drives it with the same load client (POSTing the
ServiceRequest of each referral to /ServiceRequest).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson

from benchmarks.harness import ROOT, Server, load, referral_body

VENV = ROOT / "benchmarks" / ".peer-venv"
APP_DIR = ROOT / "benchmarks" / "peer_app"


def ensure_venv() -> None:
    if not (VENV / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "fhirstarter==4.2.0", "uvicorn>=0.30"], check=True
        )


def service_request(i: int) -> bytes:
    bundle = orjson.loads(referral_body(i, "PEER"))
    sr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    sr["subject"] = {"reference": "Patient/p1"}
    sr["supportingInfo"] = [{"reference": "Consent/c1"}]
    return orjson.dumps(sr)


def run(concurrencies: list[int], requests: dict[int, int]) -> dict[str, Any]:
    ensure_venv()
    env = {**os.environ, "FHIR_SEQUENCE": "R4B"}
    server = Server(
        env,
        [
            str(VENV / "bin" / "uvicorn"),
            "peer_app:app",
            "--app-dir",
            str(APP_DIR),
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        ready_path="/metadata",
    )
    runs = []
    with server:
        for c in concurrencies:
            runs.append(
                load(
                    server.base,
                    "/ServiceRequest",
                    requests[c],
                    c,
                    service_request,
                    {"content-type": "application/fhir+json"},
                )
            )
    return {"fhirstarter": "4.2.0", "runs": runs}
