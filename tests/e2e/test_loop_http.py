"""The whole WoR loop over real HTTP against `fhir-gateway serve` with its example directory."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.wor import FHIR_JSON, GP_ROLE, milestone, referral_bundle

pytestmark = pytest.mark.e2e


def test_referral_to_feedback_over_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _ = server
    with httpx.Client(base_url=f"{base}/fhir", timeout=10) as http:
        resp = http.post("", json=referral_bundle("E2E-1"), headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        sr = resp.json()["entry"][2]["resource"]
        worklist = http.get(
            "/Task", params={"owner": "Organization/welzijn-de-brug", "status": "requested"}
        ).json()
        task = worklist["entry"][0]["resource"]
        assert task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
        for change in (
            {"status": "accepted"},
            {"status": "in-progress", "businessStatus": milestone("intake-held")},
            {"status": "completed", "businessStatus": milestone("closed-other")},
        ):
            resp = http.put(
                f"/Task/{task['id']}",
                json={**task, **change},
                headers={**FHIR_JSON, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
            )
            assert resp.status_code == 200, resp.text
            task = resp.json()
        feedback = http.get(
            "/Communication", params={"recipient": GP_ROLE, "_lastUpdated": "gt2000-01-01"}
        ).json()
        kinds = sorted(e["resource"]["category"][0]["coding"][0]["code"] for e in feedback["entry"])
        assert kinds == ["accepted", "completed", "intake-held"]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'gateway_referrals_total{outcome="accepted"} 1.0' in metrics
