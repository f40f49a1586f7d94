"""The authorisation matrix: every role, resource type and interaction, and what each must get.

One loop is played (practice A refers to welfare organisation 1, which accepts and records
Positive Health, so feedback goes back). Then every principal probes every cell; the outcome is
compared with `MATRIX`. Outcomes: a status code, with `found` / `none` where a 200 search or
include tells whether A's record came back, and `own` / `theirs` where a conditional create
or update answers with the caller's own record or with A's. `docs/authorisation-matrix.md` is
rendered from this module (`python -m tests.api.authorisation`) and a test keeps it current.

Coverage: `ROUTE_CELLS` names the interactions that test each route of the FHIR router,
`OPERATION_CELLS` each registered operation, and `APP_ROUTES` every HTTP route outside `/fhir`;
a route or operation missing from them fails `test_every_route_has_its_cells`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import authorize
from tests.wor import BSN, FHIR_JSON, fresh_bsn, put_task, referral_bundle, task_for

ADMIN, GP_A, GP_B, W1, W2 = (
    "gateway-admin",
    "praktijk-de-geinoord-his",
    "praktijk-batau-his",
    "welzijn-de-brug-cms",
    "welzijn-ijsselstein-samen-cms",
)
PRINCIPALS = (ADMIN, GP_A, GP_B, W1, W2)
HEADINGS = ("admin", "practice A", "practice B", "welfare 1", "welfare 2")
GP_B_ROLE = "PractitionerRole/huisarts-el-amrani-praktijk-batau"
DOC = Path(__file__).resolve().parents[2] / "docs" / "authorisation-matrix.md"

PERSONAL = (
    "Patient",
    "Consent",
    "ServiceRequest",
    "Task",
    "CarePlan",
    "Communication",
    "QuestionnaireResponse",
)
ALL_TYPES = (*PERSONAL, "Provenance", "AuditEvent", "Organization")

Cells = dict[str, tuple[str, ...]]  # resource type (or "-") → outcome per principal

# fmt: off
MATRIX: dict[str, Cells] = {
    "metadata": {
        "-":                    ("200", "200", "200", "200", "200"),
    },
    "operation-definition": {
        "-":                    ("200", "200", "200", "200", "200"),
    },
    "read": {
        "Patient":              ("200", "200", "404", "200", "404"),
        "Consent":              ("200", "200", "404", "403", "403"),
        "ServiceRequest":       ("200", "200", "404", "200", "404"),
        "Task":                 ("200", "200", "404", "200", "404"),
        "CarePlan":             ("200", "200", "404", "200", "404"),
        "Communication":        ("200", "200", "404", "200", "404"),
        "QuestionnaireResponse": ("200", "403", "403", "200", "404"),
        "Provenance":           ("200", "403", "403", "403", "403"),
        "AuditEvent":           ("200", "403", "403", "403", "403"),
        "Organization":         ("200", "200", "200", "200", "200"),
        "Subscription":         ("200", "404", "404", "200", "404"),
    },
    "vread": {
        "Patient":              ("200", "200", "404", "200", "404"),
        "Consent":              ("200", "200", "404", "403", "403"),
        "ServiceRequest":       ("200", "200", "404", "200", "404"),
        "Task":                 ("200", "200", "404", "200", "404"),
        "CarePlan":             ("200", "200", "404", "200", "404"),
        "Communication":        ("200", "200", "404", "200", "404"),
        "QuestionnaireResponse": ("200", "403", "403", "200", "404"),
        "Provenance":           ("200", "403", "403", "403", "403"),
        "AuditEvent":           ("200", "403", "403", "403", "403"),
        "Organization":         ("200", "200", "200", "200", "200"),
    },
    "history-instance": {
        "Patient":              ("200", "200", "404", "200", "404"),
        "Consent":              ("200", "200", "404", "403", "403"),
        "ServiceRequest":       ("200", "200", "404", "200", "404"),
        "Task":                 ("200", "200", "404", "200", "404"),
        "CarePlan":             ("200", "200", "404", "200", "404"),
        "Communication":        ("200", "200", "404", "200", "404"),
        "QuestionnaireResponse": ("200", "403", "403", "200", "404"),
        "Provenance":           ("200", "403", "403", "403", "403"),
        "AuditEvent":           ("200", "403", "403", "403", "403"),
        "Organization":         ("200", "200", "200", "200", "200"),
    },
    "search": {
        "Patient":              ("200 found", "200 found", "200 none", "403", "403"),
        "Consent":              ("200 found", "403", "403", "403", "403"),
        "ServiceRequest":       ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "Task":                 ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "CarePlan":             ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "Communication":        ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "QuestionnaireResponse": ("200 found", "403", "403", "200 found", "200 none"),
        "Provenance":           ("200 found", "403", "403", "403", "403"),
        "AuditEvent":           ("200 found", "403", "403", "403", "403"),
        "Organization":         ("200 found", "200 found", "200 found", "200 found", "200 found"),
        "Subscription":         ("200 found", "200 none", "200 none", "200 found", "200 none"),
    },
    "search-post": {
        "Patient":              ("200 found", "200 found", "200 none", "403", "403"),
        "Consent":              ("200 found", "403", "403", "403", "403"),
        "ServiceRequest":       ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "Task":                 ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "CarePlan":             ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "Communication":        ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "QuestionnaireResponse": ("200 found", "403", "403", "200 found", "200 none"),
    },
    "include": {
        "Task":                 ("200 Organization+Patient+ServiceRequest+Task", "200 Organization+Patient+ServiceRequest+Task", "200 none", "200 Organization+Patient+ServiceRequest+Task", "200 none"),
    },
    "revinclude": {
        "ServiceRequest":       ("200 CarePlan+ServiceRequest+Task", "200 CarePlan+ServiceRequest+Task", "200 none", "200 CarePlan+ServiceRequest+Task", "200 none"),
    },
    "chain-has": {
        "Task":                 ("200 found", "200 found", "200 none", "200 found", "200 none"),
        "Patient":              ("200 found", "200 found", "200 none", "403", "403"),
    },
    "history-type": {
        "Patient":              ("200", "403", "403", "403", "403"),
        "Task":                 ("200", "403", "403", "403", "403"),
    },
    "history-system": {
        "-":                    ("200", "403", "403", "403", "403"),
    },
    "create": {
        "Patient":              ("201", "201", "201", "403", "403"),
        "Consent":              ("201", "201", "422", "403", "403"),
        "ServiceRequest":       ("201", "201", "422", "403", "403"),
        "Task":                 ("201", "403", "403", "403", "403"),
        "CarePlan":             ("201", "403", "403", "403", "403"),
        "Communication":        ("201", "403", "403", "201", "422"),
        "QuestionnaireResponse": ("201", "403", "403", "201", "422"),
        "Provenance":           ("405", "403", "403", "403", "403"),
        "AuditEvent":           ("405", "403", "403", "403", "403"),
        "Organization":         ("201", "403", "403", "403", "403"),
        "Subscription":         ("201", "201", "201", "201", "201"),
    },
    "conditional-create": {
        "Patient":              ("200 theirs", "200 theirs", "201 own", "403", "403"),
        "Consent":              ("200 theirs", "200 theirs", "422", "403", "403"),
        "ServiceRequest":       ("200 theirs", "200 theirs", "422", "403", "403"),
        "Task":                 ("200 theirs", "403", "403", "403", "403"),
        "CarePlan":             ("200 theirs", "403", "403", "403", "403"),
        "Communication":        ("200 theirs", "403", "403", "200 theirs", "422"),
        "QuestionnaireResponse": ("200 theirs", "403", "403", "200 theirs", "422"),
    },
    "update": {
        "Patient":              ("200", "200", "404", "403", "403"),
        "Consent":              ("200", "200", "404", "403", "403"),
        "ServiceRequest":       ("200", "403", "403", "403", "403"),
        "Task":                 ("200", "409", "404", "200", "404"),
        "CarePlan":             ("200", "403", "403", "200", "404"),
        "Communication":        ("200", "403", "403", "403", "403"),
        "QuestionnaireResponse": ("200", "403", "403", "403", "403"),
        "Provenance":           ("405", "403", "403", "403", "403"),
        "AuditEvent":           ("405", "403", "403", "403", "403"),
        "Organization":         ("200", "403", "403", "403", "403"),
        "Subscription":         ("200", "404", "404", "200", "404"),
    },
    "patch": {
        "Patient":              ("200", "200", "404", "403", "403"),
        "Consent":              ("200", "200", "404", "403", "403"),
        "Task":                 ("200", "409", "404", "200", "404"),
        "CarePlan":             ("200", "403", "403", "200", "404"),
    },
    "transaction": {
        "Patient":              ("200 theirs", "200 theirs", "200 own", "403", "403"),
    },
    "batch": {
        "Patient":              ("200", "200", "404", "200", "404"),
        "Task":                 ("200", "200", "404", "200", "404"),
        "AuditEvent":           ("200", "403", "403", "403", "403"),
    },
    "$process-message": {
        "-":                    ("412", "200", "200", "403", "403"),
    },
    "$validate": {
        "ServiceRequest":       ("200", "200", "200", "200", "200"),
    },
    "$wor-report": {
        "-":                    ("200", "403", "403", "403", "403"),
    },
    "Subscription/$status": {
        "Subscription":         ("200", "404", "404", "200", "404"),
    },
    "Subscription/$events": {
        "Subscription":         ("200", "404", "404", "200", "404"),
    },
    # late: practice B's conditional update makes a second Patient with A's patient's BSN (its
    # own), and the administrator's conditional delete removes A's Patient. A Task needs If-Match
    # (428); creating one by a conditional update is refused like any other create of a Task.
    "conditional-update": {
        "Patient":              ("200 theirs", "200 theirs", "201 own", "403", "403"),
        "Task":                 ("428", "428", "403", "428", "403"),
    },
    "conditional-delete": {
        "Patient":              ("204", "403", "403", "403", "403"),
        "Task":                 ("409", "403", "403", "403", "403"),
    },
}
# fmt: on


@dataclass
class Loop:
    client: TestClient
    ids: dict[str, str]  # resource type → A's record
    bsn: str
    who: str = ADMIN  # the principal probing now


def play(client: TestClient) -> Loop:
    """Practice A's referral, accepted by welfare 1, with Positive Health recorded."""
    authorize(client, GP_A)
    resp = client.post("/fhir", json=referral_bundle(), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    patient, consent, sr = (e["resource"] for e in resp.json()["entry"])
    authorize(client, W1)
    task = put_task(client, task_for(client, sr["id"]), status="accepted").json()
    qr = client.post(
        "/fhir/QuestionnaireResponse",
        headers=FHIR_JSON,
        json={
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "subject": {"reference": f"Patient/{patient['id']}"},
            "item": [{"linkId": "zingeving", "answer": [{"valueInteger": 6}]}],
        },
    ).json()
    authorize(client, ADMIN)

    def first(query: str) -> str:
        return str(client.get(f"/fhir/{query}").json()["entry"][0]["resource"]["id"])

    ids = {
        "Patient": patient["id"],
        "Consent": consent["id"],
        "ServiceRequest": sr["id"],
        "Task": task["id"],
        "CarePlan": first(f"CarePlan?supporting-info=ServiceRequest/{sr['id']}"),
        "Communication": first(f"Communication?based-on=ServiceRequest/{sr['id']}"),
        "QuestionnaireResponse": qr["id"],
        "Provenance": first("Provenance?_count=1"),
        "AuditEvent": first("AuditEvent?_count=1"),
        "Organization": "welzijn-de-brug",
        "Subscription": _subscription(client, "Organization/welzijn-de-brug"),
    }
    return Loop(client, ids, patient["identifier"][0]["value"])


def _subscription(client: TestClient, owner: str) -> str:
    """A worklist Subscription of welfare 1, set up by the administrator."""
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "worklist",
        "criteria": "Task?status=requested",
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/hook",
            "payload": "application/fhir+json",
        },
        "extension": [
            {
                "url": "https://wor.example.nl/fhir/StructureDefinition/subscription-owner",
                "valueReference": {"reference": owner},
            }
        ],
    }
    resp = client.post("/fhir/Subscription", json=body, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def observe(loop: Loop) -> dict[str, Cells]:
    """Every cell of the matrix as it is now: interaction → type → outcome per principal."""
    seen: dict[str, Cells] = {}
    for interaction, cells in MATRIX.items():
        probe = PROBES[interaction]
        for rtype in cells:
            outcomes = []
            for who in PRINCIPALS:
                loop.who = who
                authorize(loop.client, who)
                outcomes.append(probe(loop, rtype))
            seen.setdefault(interaction, {})[rtype] = tuple(outcomes)
    return seen


def current(loop: Loop, rtype: str) -> dict[str, Any]:
    """A's record as the administrator reads it; the probing principal's token is put back."""
    authorize(loop.client, ADMIN)
    found: dict[str, Any] = loop.client.get(f"/fhir/{rtype}/{loop.ids[rtype]}").json()
    authorize(loop.client, loop.who)
    return found


# -- probes: one request (or a few) per cell, answered as an outcome string ----------------------
def _status(resp: Any) -> str:
    return str(resp.status_code)


def _found(resp: Any, rid: str) -> str:
    if resp.status_code != 200:
        return _status(resp)
    entries = resp.json().get("entry", [])
    return "200 found" if any(e.get("resource", {}).get("id") == rid for e in entries) else "200 none"


def _types(resp: Any) -> str:
    if resp.status_code != 200:
        return _status(resp)
    types = sorted({e["resource"]["resourceType"] for e in resp.json().get("entry", [])})
    return "200 " + ("+".join(types) if types else "none")


def _match(resp: Any, rid: str) -> str:
    """A conditional create or update: with A's record (`theirs`) or a record of the caller's own."""
    if resp.status_code not in (200, 201):
        return _status(resp)
    return f"{resp.status_code} {'theirs' if resp.json().get('id') == rid else 'own'}"


def _body(loop: Loop, rtype: str) -> dict[str, Any]:
    """A's record as a new one (no id, no meta); a referral with an identifier of its own."""
    body = {k: v for k, v in current(loop, rtype).items() if k not in ("id", "meta")}
    if rtype == "ServiceRequest":
        body["identifier"] = [{"system": "https://his.example.nl/verwijzing", "value": uuid.uuid4().hex}]
    if rtype == "Patient":  # another person: A keeps one patient with the BSN the probes ask for
        body["identifier"] = [{"system": BSN, "value": fresh_bsn()}]
    return body


def probe_read(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/{rtype}/{loop.ids[rtype]}"))


def probe_vread(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/{rtype}/{loop.ids[rtype]}/_history/1"))


def probe_history_instance(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/{rtype}/{loop.ids[rtype]}/_history"))


def probe_search(loop: Loop, rtype: str) -> str:
    return _found(loop.client.get(f"/fhir/{rtype}", params={"_id": loop.ids[rtype]}), loop.ids[rtype])


def probe_search_post(loop: Loop, rtype: str) -> str:
    resp = loop.client.post(f"/fhir/{rtype}/_search", data={"_id": loop.ids[rtype]})
    return _found(resp, loop.ids[rtype])


def probe_include(loop: Loop, rtype: str) -> str:
    params = {"_id": loop.ids["Task"], "_include": ["Task:focus", "Task:patient", "Task:owner"]}
    return _types(loop.client.get("/fhir/Task", params=params))


def probe_revinclude(loop: Loop, rtype: str) -> str:
    params = {"_id": loop.ids["ServiceRequest"], "_revinclude": ["Task:focus", "CarePlan:supporting-info"]}
    return _types(loop.client.get("/fhir/ServiceRequest", params=params))


def probe_chain_has(loop: Loop, rtype: str) -> str:
    """One level of chaining / _has: the linked search runs as the caller (its scope, view and
    compartment), so A's record is found only by those who may see it."""
    if rtype == "Task":
        resp = loop.client.get("/fhir/Task", params={"focus:ServiceRequest._id": loop.ids["ServiceRequest"]})
    else:
        resp = loop.client.get("/fhir/Patient", params={"_has:Task:patient:_id": loop.ids["Task"]})
    return _found(resp, loop.ids[rtype])


def probe_history_type(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/{rtype}/_history"))


def probe_history_system(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get("/fhir/_history"))


def probe_create(loop: Loop, rtype: str) -> str:
    return _status(loop.client.post(f"/fhir/{rtype}", json=_body(loop, rtype), headers=FHIR_JSON))


def probe_conditional_create(loop: Loop, rtype: str) -> str:
    """A's record as the If-None-Exist criteria: answered with the caller's own records only."""
    criteria = f"identifier={BSN}|{loop.bsn}" if rtype == "Patient" else f"_id={loop.ids[rtype]}"
    headers = {**FHIR_JSON, "If-None-Exist": criteria}
    return _match(
        loop.client.post(f"/fhir/{rtype}", json=_body(loop, rtype), headers=headers), loop.ids[rtype]
    )


def probe_conditional_update(loop: Loop, rtype: str) -> str:
    """A's record put back unchanged (its id in the body) with A's id as the criteria: updated
    for those who may see it, a record of the caller's own for those who may not."""
    body = current(loop, rtype)
    resp = loop.client.put(f"/fhir/{rtype}?_id={loop.ids[rtype]}", json=body, headers=FHIR_JSON)
    return _match(resp, loop.ids[rtype])


def probe_conditional_delete(loop: Loop, rtype: str) -> str:
    return _status(loop.client.delete(f"/fhir/{rtype}?_id={loop.ids[rtype]}"))


def probe_update(loop: Loop, rtype: str) -> str:
    """The current version put back unchanged, with If-Match."""
    body = current(loop, rtype)
    headers = {**FHIR_JSON, "If-Match": f'W/"{body["meta"]["versionId"]}"'}
    return _status(loop.client.put(f"/fhir/{rtype}/{loop.ids[rtype]}", json=body, headers=headers))


def probe_patch(loop: Loop, rtype: str) -> str:
    version = current(loop, rtype)["meta"]["versionId"]
    patch = [{"op": "test", "path": "/id", "value": loop.ids[rtype]}]
    headers = {"content-type": "application/json-patch+json", "If-Match": f'W/"{version}"'}
    return _status(loop.client.patch(f"/fhir/{rtype}/{loop.ids[rtype]}", json=patch, headers=headers))


def _referral(loop: Loop, who: str) -> dict[str, Any]:
    """A new referral of A's patient (same BSN), by the caller's own GP where it has one."""
    bundle = referral_bundle(bsn=loop.bsn)
    if who == GP_B:
        bundle["entry"][2]["resource"]["requester"] = {"reference": GP_B_ROLE}
    return bundle


def probe_transaction(loop: Loop, rtype: str) -> str:
    """The Patient entry carries ifNoneExist on A's patient's BSN: whose record does it get?"""
    resp = loop.client.post("/fhir", json=_referral(loop, loop.who), headers=FHIR_JSON)
    if resp.status_code != 200:
        return _status(resp)
    patient = resp.json()["entry"][0]["resource"]["id"]
    return f"200 {'theirs' if patient == loop.ids['Patient'] else 'own'}"


def probe_batch(loop: Loop, rtype: str) -> str:
    entry = {"request": {"method": "GET", "url": f"{rtype}/{loop.ids[rtype]}"}}
    resp = loop.client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    if resp.status_code != 200:
        return _status(resp)
    return str(resp.json()["entry"][0]["response"]["status"]).split()[0]


def probe_process_message(loop: Loop, rtype: str) -> str:
    from tests.api.test_messages import message

    msg = message(uuid.uuid4().hex[:12])
    if loop.who == GP_B:
        msg["entry"][3]["resource"]["requester"] = {"reference": GP_B_ROLE}
    return _status(loop.client.post("/fhir/$process-message", json=msg, headers=FHIR_JSON))


def probe_validate(loop: Loop, rtype: str) -> str:
    resp = loop.client.post(f"/fhir/{rtype}/$validate", json=_body(loop, rtype), headers=FHIR_JSON)
    return _status(resp)


def probe_report(loop: Loop, rtype: str) -> str:
    params = {"municipality": "Nieuwegein", "period": "2026"}
    return _status(loop.client.get("/fhir/$wor-report", params=params))


def probe_subscription_status(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/Subscription/{loop.ids['Subscription']}/$status"))


def probe_subscription_events(loop: Loop, rtype: str) -> str:
    return _status(loop.client.get(f"/fhir/Subscription/{loop.ids['Subscription']}/$events"))


Probe = Callable[[Loop, str], str]
PROBES: dict[str, Probe] = {
    "metadata": lambda loop, _rtype: _status(loop.client.get("/fhir/metadata")),
    "operation-definition": lambda loop, _rtype: _status(
        loop.client.get("/fhir/OperationDefinition/wor-report")
    ),
    "read": probe_read,
    "vread": probe_vread,
    "history-instance": probe_history_instance,
    "search": probe_search,
    "search-post": probe_search_post,
    "include": probe_include,
    "revinclude": probe_revinclude,
    "chain-has": probe_chain_has,
    "history-type": probe_history_type,
    "history-system": probe_history_system,
    "create": probe_create,
    "conditional-create": probe_conditional_create,
    "conditional-update": probe_conditional_update,
    "conditional-delete": probe_conditional_delete,
    "update": probe_update,
    "patch": probe_patch,
    "transaction": probe_transaction,
    "batch": probe_batch,
    "$process-message": probe_process_message,
    "$validate": probe_validate,
    "$wor-report": probe_report,
    "Subscription/$status": probe_subscription_status,
    "Subscription/$events": probe_subscription_events,
}

# DELETE runs last, on its own: the administrator's succeeds (welfare 1 deletes its own
# Subscription just before; a delete of what is gone is 204 again, as FHIR has it). Task and ServiceRequest are never
# deleted (cancel the Task); the audit trail is never changed.
# fmt: off
DELETE: Cells = {
    "Task":                 ("409", "403", "403", "403", "403"),
    "ServiceRequest":       ("409", "403", "403", "403", "403"),
    "AuditEvent":           ("405", "403", "403", "403", "403"),
    "Provenance":           ("405", "403", "403", "403", "403"),
    "Communication":        ("204", "403", "403", "403", "403"),
    "Subscription":         ("204", "404", "404", "204", "404"),
}
# fmt: on


def probe_delete(loop: Loop, rtype: str) -> str:
    return _status(loop.client.delete(f"/fhir/{rtype}/{loop.ids[rtype]}"))


# -- coverage -------------------------------------------------------------------------------------
# Which matrix rows test each handler of the FHIR router (fhir_gateway/rest/router.py).
ROUTE_CELLS: dict[str, tuple[str, ...]] = {
    "_metadata": ("metadata",),
    "_operation_definition": ("operation-definition",),
    "_bundle": ("transaction", "batch"),
    "_history": ("history-system", "history-type", "history-instance"),
    "_search": ("search", "search-post", "include", "revinclude", "chain-has"),
    "_create": ("create", "conditional-create"),
    "_operation": (
        "$process-message",
        "$validate",
        "$wor-report",
        "Subscription/$status",
        "Subscription/$events",
    ),
    "_read": ("read",),
    "_update": ("update",),
    "_conditional_update": ("conditional-update",),
    "_conditional_delete": ("conditional-delete",),
    "_patch": ("patch",),
    "_delete": ("delete",),
    "_vread": ("vread",),
}
# Which row tests each registered operation, keyed as the router registers it.
OPERATION_CELLS: dict[tuple[str | None, str], str] = {
    (None, "$validate"): "$validate",
    (None, "$process-message"): "$process-message",
    (None, "$wor-report"): "$wor-report",
    ("Subscription", "$status"): "Subscription/$status",
    ("Subscription", "$events"): "Subscription/$events",
}
# Every HTTP route outside the FHIR router: outcome for (no token, practice A's token, admin's
# token), or the test module that owns the route's cells.
ANONYMOUS, PRACTICE = "anonymous", "practice A"
# fmt: off
APP_ROUTES: dict[tuple[str, str], tuple[str, str, str] | str] = {
    ("GET", "/openapi.json"):                     ("200", "200", "200"),
    ("GET", "/docs"):                             ("200", "200", "200"),
    ("GET", "/docs/oauth2-redirect"):             ("200", "200", "200"),
    ("GET", "/redoc"):                            ("200", "200", "200"),
    ("GET", "/docs/assets/{name}"):               "tests/api/test_docs_offline.py",
    ("GET", "/healthz"):                          ("200", "200", "200"),
    ("GET", "/readyz"):                           ("200", "200", "200"),
    ("GET", "/metrics"):                          ("200", "200", "200"),
    ("GET", "/.well-known/smart-configuration"):  ("200", "200", "200"),
    ("GET", "/fhir/.well-known/smart-configuration"): ("200", "200", "200"),
    ("GET", "/admin/outbox"):                     ("401", "403", "200"),
    ("POST", "/admin/outbox/{event_id}/retry"):   ("401", "403", "404"),
    ("GET", "/console"):                          ("303", "303", "303"),  # a bearer token is no session
    ("GET", "/console/"):                         ("303", "303", "303"),
    ("GET", "/console/referrals"):                ("303", "303", "303"),
    ("GET", "/console/referrals/{sr_id}"):        ("303", "303", "303"),
    ("GET", "/console/search"):                   ("303", "303", "303"),
    ("POST", "/console/search"):                  ("401", "401", "401"),  # BSN search: session + CSRF
    ("GET", "/console/stuck"):                    ("303", "303", "303"),
    ("GET", "/console/reports"):                  ("303", "303", "303"),
    ("GET", "/console/login"):                    ("200", "200", "200"),
    ("GET", "/console/static/console.css"):       ("200", "200", "200"),
    ("POST", "/console/login"):                   "tests/api/test_console.py",
    ("POST", "/console/logout"):                  ("401", "401", "401"),
    ("POST", "/console/outbox/{event_id}/requeue"): ("401", "401", "401"),
    ("POST", "/auth/token"):                      "tests/api/test_auth.py",
    ("POST", "/v2"):                              "tests/api/test_v2_authorisation.py",
    ("*", "/fhir"):                               "the matrix above",
    ("*", "/fhir/{path:path}"):                   "the matrix above",
}
# fmt: on

# CORS preflights (OPTIONS with Origin and Access-Control-Request-Method), on any path: a browser
# never sends a token with one; an origin not listed meets authentication like any request (405
# on a public path: no OPTIONS route). tests/api/test_transport.py asserts these cells.
PREFLIGHT: dict[str, str] = {
    "`GATEWAY_CORS_ORIGINS` empty (the default)": "401",
    "origin listed": "200 allowed",
    "origin listed, a request header not allowed": "400",
    "origin not listed": "401 no CORS headers",
}


# Endpoints of the processes without the HTTP API: `fhir-gateway worker` and `fhir-gateway mllp`
# with `--metrics-port PORT` serve Prometheus text on 127.0.0.1 only, without a token, like the
# app's /metrics. tests/e2e/test_deployment.py scrapes both.
PROCESS_ENDPOINTS: dict[str, str] = {
    "`worker --metrics-port` GET /metrics (127.0.0.1)": "200, no token",
    "`mllp --metrics-port` GET /metrics (127.0.0.1)": "200, no token",
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route the application serves; the FHIR mount as `*`."""
    found: set[tuple[str, str]] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            if not hasattr(route, "path"):
                walk(route.original_router.routes)  # an included router
                continue
            methods = set(getattr(route, "methods", None) or ()) - {"HEAD"}
            if route.path in ("/fhir", "/fhir/{path:path}"):
                found.add(("*", route.path))
            else:
                found.update((m, route.path) for m in methods)

    walk(app.routes)
    return found


# -- the document ---------------------------------------------------------------------------------
LEGEND = """\
Outcomes: the HTTP status; for a 200 search or include, `found` / `none` says whether practice A's
record came back, or which types did; for a conditional create or update, `theirs` means the
answer was practice A's record (for practice A its own) and `own` a record of the caller's own
(created: a match never reaches outside the caller's compartment). 404 is the
answer outside a compartment (existence is not revealed); 403 a missing scope or an admin-only
type; 405 an interaction the gateway does not offer; 409/412/422 the workflow or the data."""


V2Cells = dict[str, dict[str, dict[str, tuple[str, str | None, str | None]]]]


def _v2_rows(v2_cells: V2Cells) -> dict[str, tuple[str, ...]]:
    """Per route (`POST /v2`, `MLLP`) and MSH-4 practice: the ACK per principal (MSA-1, ERR-3, ERR-5)."""
    rows = {}
    for route, by_practice in v2_cells.items():
        for practice, by_who in by_practice.items():
            cells = [" ".join(p for p in by_who[who] if p) if who in by_who else "-" for who in PRINCIPALS]
            rows[f"{route}, MSH-4 of practice {practice}"] = tuple(cells)
    return rows


def render(v2_cells: V2Cells | None = None) -> str:
    """The matrix as Markdown (docs/authorisation-matrix.md)."""
    out = [
        "# Authorisation matrix",
        "",
        "Generated by `python -m tests.api.authorisation` from the cells that "
        "`tests/api/test_authorisation_matrix.py` asserts on SQLite and PostgreSQL. Do not edit.",
        "",
        "The scene: practice A (De Geinoord) referred a patient to welfare organisation 1 (De Brug), "
        "which accepted and recorded Positive Health; practice B (Batau) and welfare organisation 2 "
        "(IJsselstein Samen) take no part in that referral.",
        "",
        LEGEND,
        "",
    ]
    header = "| interaction | type | " + " | ".join(HEADINGS) + " |"
    rule = "|---|---|" + "---|" * len(HEADINGS)
    out += [header, rule]
    for interaction, cells in {**MATRIX, "delete": DELETE}.items():
        for rtype, outcomes in cells.items():
            out.append(f"| {interaction} | {rtype} | " + " | ".join(outcomes) + " |")
    if v2_cells:
        out += ["", "## HTTP v2 and MLLP", "", "| case | " + " | ".join(HEADINGS) + " |", rule[4:]]
        out += [f"| {case} | " + " | ".join(o) + " |" for case, o in _v2_rows(v2_cells).items()]
    out += [
        "",
        "## Routes outside the FHIR API",
        "",
        f"| route | {ANONYMOUS} | {PRACTICE} | admin |",
        "|---|---|---|---|",
    ]
    for (method, path), expected in APP_ROUTES.items():
        cells = " | ".join(expected) if isinstance(expected, tuple) else f"see `{expected}` | |"
        out.append(f"| {method} {path} | {cells} |")
    out += ["", "## CORS preflights", "", "| OPTIONS preflight, no token | outcome |", "|---|---|"]
    out += [f"| {case} | {outcome} |" for case, outcome in PREFLIGHT.items()]
    out += ["", "## Other processes", "", "| endpoint | outcome |", "|---|---|"]
    out += [f"| {case} | {outcome} |" for case, outcome in PROCESS_ENDPOINTS.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from tests.api.test_v2_authorisation import V2_CELLS

    DOC.write_text(render(V2_CELLS), encoding="utf-8")
    print(f"wrote {DOC}")
