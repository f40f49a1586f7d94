"""`fhir-gateway serve` as a real subprocess on a free port, spoken to over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.wor import patient

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"server exited early: {proc.stdout.read().decode() if proc.stdout else ''}")
    else:
        proc.kill()
        pytest.fail("server did not become ready in 60 s")
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_serve_answers_over_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = server
    with httpx.Client(base_url=base, timeout=10) as http:
        cap = http.get("/fhir/metadata")
        assert cap.status_code == 200 and cap.json()["fhirVersion"] == "4.0.1"
        # the example directory was loaded into the empty embedded database
        orgs = http.get("/fhir/Organization", params={"_summary": "count"}).json()
        assert orgs["total"] > 0
        created = http.post(
            "/fhir/Patient",
            json={**patient(), "name": [{"family": "Visser"}]},
            headers={"content-type": "application/fhir+json"},
        )
        assert created.status_code == 201
        found = http.get("/fhir/Patient", params={"family": "visser"}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert "Finished server process" in log
    assert '"route":"/fhir/Patient"' in log  # structured request lines
    assert "Visser" not in log and "visser" not in log  # never patient data in logs
