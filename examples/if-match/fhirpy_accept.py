"""Accept a Task with fhirpy (Python): its `save()` sends no If-Match, so make a client that does.

    pip install fhirpy
    python fhirpy_accept.py http://127.0.0.1:8080/fhir "$(fhir-gateway token welzijn-de-brug-cms)" <task-id>

The gateway refuses a Task update without If-Match (428): two coaches must not overwrite each
other's step. tests/e2e/test_fhirpy_client.py runs `accept` against a real gateway.
"""

from __future__ import annotations

import sys

from fhirpy import SyncFHIRClient


def accept(base: str, token: str, task_id: str) -> dict:
    reader = SyncFHIRClient(base, authorization=f"Bearer {token}")
    task = reader.get("Task", task_id)
    version = task["meta"]["versionId"]
    writer = SyncFHIRClient(  # extra_headers: the only way to send If-Match with fhirpy
        base, authorization=f"Bearer {token}", extra_headers={"If-Match": f'W/"{version}"'}
    )
    changed = writer.resource("Task", **{**task, "status": "accepted"})
    changed.save()
    return changed.serialize()


if __name__ == "__main__":
    print(accept(*sys.argv[1:4])["status"])
