"""What the municipality report reads from the store, shaped for it: the cohort of referrals
with what their history tells (intake, ever accepted), their feedback and its delivery.

The SQL is `store/report_queries.py`; here are the report's rules: which states count as
accepted, and that the intake is the first Task version whose businessStatus carries the WoR
milestone `intake-held` (read from the coding, not by matching JSON text).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store import report_queries
from fhir_gateway.vocabulary import FEEDBACK_KINDS, MILESTONES, Milestone

INTAKE_HELD = Milestone.INTAKE_HELD
# A Task that reached one of these was accepted by the welfare organisation at some point.
ACCEPTED_STATES = ("accepted", "in-progress", "on-hold", "completed", "failed")
PUSH_KINDS = ("fhir-push", "mllp")
# The elements of the Task and the ServiceRequest the report reads (reports/municipality.py):
# the store needs to send no more (see `report_queries.referrals_in_period`).
TASK_ELEMENTS = (
    "id",
    "status",
    "businessStatus",
    "requester",
    "owner",
    "input",
    "description",
    "for",
    "output",
)
SR_ELEMENTS = ("id", "authoredOn", "reasonCode")


@dataclass(slots=True)
class Referral:
    """One referral of the cohort: the ServiceRequest, its Task, and what history tells."""

    task_id: str
    task: dict[str, Any]
    service_request: dict[str, Any]
    intake_at: datetime | None = None  # first Task version with businessStatus intake-held (UTC)
    ever_accepted: bool = False
    feedback: list[tuple[str, str]] = field(default_factory=list)  # (Communication id, kind)


def cohort(
    session: sa.Connection, start: datetime, end: datetime, owners: Iterable[str]
) -> dict[str, Referral]:
    """Tasks whose referral (ServiceRequest.authoredOn) lies in [start, end), owned by `owners`.

    Keyed by ServiceRequest id; when a referral has several Tasks the most recent one counts."""
    found: dict[str, Referral] = {}
    for task_id, task, sr in report_queries.referrals_in_period(
        session, start, end, sorted(set(owners)), task_keys=TASK_ELEMENTS, sr_keys=SR_ELEMENTS
    ):
        found[sr["id"]] = Referral(task_id, task, sr)
    return found


def add_history(session: sa.Connection, referrals: dict[str, Referral]) -> None:
    """From `resource_history`: when intake-held was first recorded, and whether the Task was
    ever accepted (a cancelled Task may have been)."""
    if not referrals:
        return
    by_task = {r.task_id: r for r in referrals.values()}
    for task_id, business, first_at, accepted in report_queries.task_business_statuses(
        session, by_task, ACCEPTED_STATES
    ):
        ref = by_task[task_id]
        ref.ever_accepted = ref.ever_accepted or accepted
        if _has_code(business, MILESTONES, INTAKE_HELD) and (
            ref.intake_at is None or first_at < ref.intake_at
        ):
            ref.intake_at = first_at


def _has_code(concept: dict[str, Any] | None, system: str, code: str) -> bool:
    return any(
        c.get("system") == system and c.get("code") == code
        for c in (concept or {}).get("coding", [])
        if isinstance(c, dict)
    )


def add_feedback(session: sa.Connection, referrals: dict[str, Referral]) -> None:
    """Feedback Communications (category wor-feedback-kinds) that are part of the cohort's Tasks."""
    if not referrals:
        return
    by_task = {f"Task/{r.task_id}": r for r in referrals.values()}
    for comm_id, task_ref, kind in report_queries.communications_part_of(session, by_task, FEEDBACK_KINDS):
        by_task[task_ref].feedback.append((comm_id, kind))


def outbox_status(session: sa.Connection) -> dict[str, set[str]]:
    """Per feedback Communication ("Communication/<id>"): the statuses of its push rows.

    Practices that poll have no rows; an empty outbox (purged, or delivery not installed) is fine."""
    found: dict[str, set[str]] = {}
    for ref, status in report_queries.pushed_communications(session, PUSH_KINDS):
        found.setdefault(ref, set()).add(status)
    return found


def resources_by_id(
    session: sa.Connection, resource_type: str, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Current content of many resources of one type, in chunks (no query per resource)."""
    return report_queries.current_by_id(session, resource_type, ids)
