"""The WoR Task state machine: who may move a Task where, and what follows from each move.

FHIR Workflow states: requested → (received) → accepted | rejected; accepted → in-progress →
completed | failed; in-progress ↔ on-hold; the requester may cancel any non-final Task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import parse_search
from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import ACTIVITY_CATEGORIES, MILESTONES, WOR

# Codings are recognised by the path of their system, whatever the canonical base.
_MILESTONES_PATH = MILESTONES.removeprefix(WOR)
_ACTIVITY_CATEGORIES_PATH = ACTIVITY_CATEGORIES.removeprefix(WOR)
FINAL = frozenset({"rejected", "completed", "cancelled", "failed"})
FORWARD: dict[str, frozenset[str]] = {  # moves the owner (welfare organisation) makes
    "requested": frozenset({"received", "accepted", "rejected"}),
    "received": frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"in-progress", "failed"}),
    "in-progress": frozenset({"on-hold", "completed", "failed"}),
    "on-hold": frozenset({"in-progress", "failed"}),
}
NEEDS_REASON = frozenset({"rejected", "cancelled", "failed"})
# What a Task update may change; anything else is fixed by the referral.
MUTABLE = frozenset(
    {
        "status",
        "businessStatus",
        "statusReason",
        "note",
        "output",
        "executionPeriod",
        "lastModified",
        "meta",
        "text",
    }
)
CAREPLAN_STATUS = {
    "completed": "completed",
    "cancelled": "revoked",
    "rejected": "revoked",
    "failed": "revoked",
    "in-progress": "active",
    "on-hold": "on-hold",
}
SERVICEREQUEST_STATUS = {"completed": "completed", "cancelled": "revoked"}


@dataclass(frozen=True)
class Change:
    """What a Task update did, for feedback and follow-ups."""

    old_status: str
    new_status: str
    old_milestone: str | None
    new_milestone: str | None

    @property
    def status_changed(self) -> bool:
        return self.old_status != self.new_status

    @property
    def milestone_changed(self) -> bool:
        return self.old_milestone != self.new_milestone


def allowed_next(status: str, *, as_owner: bool, as_requester: bool) -> list[str]:
    moves: set[str] = set()
    if as_owner:
        moves |= FORWARD.get(status, frozenset())
    if as_requester and status not in FINAL:
        moves.add("cancelled")
    return sorted(moves)


def check_update(
    current: dict[str, Any],
    proposed: dict[str, Any],
    principal: Principal,
    if_match: int | None,
    requester_org: str | None,
) -> Change:
    """Raise the right FhirError for an update the workflow forbids; else describe the change."""
    if if_match is None:
        raise FhirError(
            428,
            [
                error(
                    "required",
                    'Task updates need If-Match with the version you read (W/"<versionId>")',
                    "If-Match",
                )
            ],
        )
    changed = sorted(
        k for k in set(current) | set(proposed) if k not in MUTABLE and current.get(k) != proposed.get(k)
    )
    if changed:
        raise FhirError(
            422,
            [
                error(
                    "business-rule",
                    f"A Task update may only change {', '.join(sorted(MUTABLE - {'meta', 'text', 'lastModified'}))}; "
                    f"it changed {', '.join(changed)}",
                    f"Task.{changed[0]}",
                )
            ],
        )
    old, new = current["status"], proposed.get("status", current["status"])
    owner = normalise_reference(current.get("owner", {}).get("reference", "")) or ""
    as_owner, as_requester = _roles(principal, owner, requester_org)
    if new != old:
        allowed = allowed_next(old, as_owner=as_owner, as_requester=as_requester)
        if new not in allowed:
            who = "" if (as_owner or as_requester) else " (you are neither owner nor requester)"
            raise FhirError(
                409,
                [
                    error(
                        "business-rule",
                        f"Task cannot go from '{old}' to '{new}'{who}; allowed: "
                        f"{', '.join(allowed) or 'none'}",
                        "Task.status",
                    )
                ],
            )
        if new in NEEDS_REASON and not proposed.get("statusReason"):
            raise FhirError(
                422, [error("required", f"A Task that is {new} needs a statusReason", "Task.statusReason")]
            )
    elif old in FINAL:
        raise FhirError(
            409, [error("business-rule", f"The Task is {old}; it can no longer change", "Task.status")]
        )
    elif not as_owner:
        raise FhirError(
            409,
            [error("business-rule", "Only the owner may record progress on a Task", "Task.businessStatus")],
        )
    return Change(old, new, milestone_of(current), milestone_of(proposed))


def _roles(principal: Principal, owner: str, requester_org: str | None) -> tuple[bool, bool]:
    """An organisation acts as owner or requester; the gateway itself and admins act as both."""
    if principal.organization is None:
        return True, True
    return principal.organization == owner, principal.organization == requester_org


def milestone_of(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding", []):
        if coding.get("system", "").endswith(_MILESTONES_PATH):
            return coding.get("code")
    return None


def follow_up(repo: Repository, task: Stored, change: Change) -> None:
    """Keep the CarePlan and the ServiceRequest in step with the Task (same transaction)."""
    if not change.status_changed:
        return
    focus = normalise_reference(task.content.get("focus", {}).get("reference", ""), repo.base_url) or ""
    _, _, sr_id = focus.partition("/")
    sr = repo.find("ServiceRequest", sr_id) if focus.startswith("ServiceRequest/") else None
    new_sr_status = SERVICEREQUEST_STATUS.get(change.new_status)
    if sr is not None and new_sr_status and sr.content.get("status") != new_sr_status:
        repo.update({**sr.content, "status": new_sr_status}, method="PUT")
    plan_status = CAREPLAN_STATUS.get(change.new_status)
    if plan_status is None or sr is None:
        return
    for plan in care_plans_for(repo, sr):
        updated = {**plan.content, "status": plan_status}
        if change.new_status == "completed":
            updated = _with_activities(updated, task.content)
        if updated != plan.content:
            repo.update(updated, method="PUT")


def care_plans_for(repo: Repository, sr: Stored) -> list[Stored]:
    return repo.search(parse_search("CarePlan", [("supporting-info", sr.reference)])).matches


def _with_activities(plan: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """Record the activities the coach found (Task.output typed with an activity category)."""
    found = [
        (o, coding)
        for o in task.get("output", [])
        for coding in (o.get("type") or {}).get("coding", [])
        if coding.get("system", "").endswith(_ACTIVITY_CATEGORIES_PATH)
    ]
    if not found:
        return plan
    activities = [a for a in plan.get("activity", []) if "detail" not in a or a.get("reference")]
    seen: set[int] = set()
    for out, coding in found:
        if id(out) in seen:  # one activity per output, typed by its first activity coding
            continue
        seen.add(id(out))
        # the activity coding, not coding[0]: that may be another system's, without a code
        # (Coding.code is 0..1), which was a KeyError 500 on completing the Task
        detail: dict[str, Any] = {
            "kind": "Task",
            "status": "completed",
            "code": {"coding": [coding]},
            "description": out.get("valueString")
            or coding.get("display")
            or coding.get("code")
            or "activiteit",
        }
        activities.append({"detail": detail})
    return {**plan, "activity": activities}
