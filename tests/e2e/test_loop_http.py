"""The whole WoR loop over real HTTP against `fhir-gateway serve`, each party with its own token."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.e2e.conftest import bearer
from tests.wor import FHIR_JSON, GP_ROLE, milestone, referral_bundle

pytestmark = pytest.mark.e2e


def test_referral_to_feedback_over_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = server
    gp = httpx.Client(base_url=f"{base}/fhir", timeout=10, headers=bearer(base, "praktijk-de-geinoord-his"))
    coach = httpx.Client(base_url=f"{base}/fhir", timeout=10, headers=bearer(base, "welzijn-de-brug-cms"))
    other = httpx.Client(
        base_url=f"{base}/fhir", timeout=10, headers=bearer(base, "welzijn-ijsselstein-samen-cms")
    )
    with gp, coach, other:
        resp = gp.post("", json=referral_bundle("E2E-1"), headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        sr = resp.json()["entry"][2]["resource"]
        worklist = coach.get(
            "/Task", params={"owner": "Organization/welzijn-de-brug", "status": "requested"}
        ).json()
        task = worklist["entry"][0]["resource"]
        assert task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
        # another welfare organisation sees nothing of it, not even that it exists
        assert other.get("/Task", params={"_summary": "count"}).json()["total"] == 0
        assert other.get(f"/Task/{task['id']}").status_code == 404
        # the coach sees the consented minimum of the patient: no BSN
        patient = coach.get(f"/{sr['subject']['reference']}").json()
        assert "identifier" not in patient and patient["name"]
        for change in (
            {"status": "accepted"},
            {"status": "in-progress", "businessStatus": milestone("intake-held")},
            {"status": "completed", "businessStatus": milestone("closed-other")},
        ):
            resp = coach.put(
                f"/Task/{task['id']}",
                json={**task, **change},
                headers={**FHIR_JSON, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
            )
            assert resp.status_code == 200, resp.text
            task = resp.json()
        feedback = gp.get(
            "/Communication", params={"recipient": GP_ROLE, "_lastUpdated": "gt2000-01-01"}
        ).json()
        kinds = sorted(e["resource"]["category"][0]["coding"][0]["code"] for e in feedback["entry"])
        assert kinds == ["accepted", "completed", "intake-held"]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'gateway_referrals_total{outcome="accepted"} 1.0' in metrics
        # the practice can ask who looked at its patient's data (NEN 7513), through an admin
        admin = httpx.Client(base_url=f"{base}/fhir", timeout=10, headers=bearer(base))
        with admin:
            audit = admin.get("/AuditEvent", params={"patient": sr["subject"]["reference"]}).json()
            readers = {a["resource"]["agent"][0]["name"] for a in audit["entry"]}
            assert {"praktijk-de-geinoord-his", "welzijn-de-brug-cms"} <= readers
    proc.terminate()
    proc.wait(timeout=30)
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert '"route":"/fhir/Task/{id}"' in log  # the log did record the loop ...
    for secret in ("999911120", "Jansen", "Anna", "Dorpsstraat", "06-12345678", "3431 AB"):
        assert secret not in log, secret  # ... but no BSN, name, address or phone number
