"""The whole loop driven by fhirpy, a FHIR client nobody here wrote, against `fhir-gateway serve`.

A practice posts a referral transaction, the welfare system finds it on its worklist, accepts it
with If-Match (fhirpy sends no If-Match on its own: a client made with `extra_headers` does, as
examples/clients-if-match/fhirpy_accept.py shows) and the practice reads the feedback.
"""

from __future__ import annotations

import importlib.util
import subprocess
from types import ModuleType

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.e2e.conftest import bearer
from tests.wor import DE_BRUG, ROOT, referral_bundle

pytestmark = pytest.mark.e2e


def example() -> ModuleType:
    """examples/if-match/fhirpy_accept.py, run as the integrator would."""
    spec = importlib.util.spec_from_file_location(
        "fhirpy_accept", ROOT / "examples" / "if-match" / "fhirpy_accept.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fhir_client(base: str, client_id: str, **headers: str) -> SyncFHIRClient:
    token = bearer(base, client_id)["Authorization"]
    return SyncFHIRClient(f"{base}/fhir", authorization=token, extra_headers=headers or None)


def test_the_loop_through_fhirpy(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _proc = server
    gp = fhir_client(base, "praktijk-de-geinoord-his")
    coach = fhir_client(base, "welzijn-de-brug-cms")

    answer = gp.execute("", method="post", data=referral_bundle("FHIRPY-1"))
    assert answer["type"] == "transaction-response"
    sr_id = answer["entry"][2]["resource"]["id"]

    worklist = coach.resources("Task").search(owner=DE_BRUG, status="requested").fetch()
    [task] = [t for t in worklist if t["focus"]["reference"] == f"ServiceRequest/{sr_id}"]
    assert coach.resources("Task").search(owner=DE_BRUG).count() >= 1

    task["status"] = "accepted"
    with pytest.raises(OperationOutcome) as refused:  # fhirpy's own update sends no If-Match
        task.save()
    assert "If-Match" in str(refused.value)
    token = bearer(base, "welzijn-de-brug-cms")["Authorization"].removeprefix("Bearer ")
    assert example().accept(f"{base}/fhir", token, task["id"])["status"] == "accepted"
    assert coach.get("Task", task["id"])["status"] == "accepted"

    feedback = gp.resources("Communication").search(**{"based-on": f"ServiceRequest/{sr_id}"}).fetch()
    assert [c["category"][0]["coding"][0]["code"] for c in feedback] == ["accepted"]
    assert all(c["recipient"] for c in feedback)
