"""`fhir-gateway serve` as a real subprocess on a free port, spoken to over real HTTP."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest

from tests.e2e.conftest import bearer
from tests.wor import patient

pytestmark = pytest.mark.e2e


def test_serve_answers_over_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = server
    with httpx.Client(base_url=base, timeout=10, headers=bearer(base)) as http:
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
