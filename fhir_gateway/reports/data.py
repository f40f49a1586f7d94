"""What the municipality report reads: the cohort from the read model (`store/report_rows.py`),
narrow rows and no documents — what each document contributes is `reports/read_model.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway.store import report_rows


@dataclass(slots=True)
class Referral:
    """One referral of the cohort: its Task's row with its ServiceRequest's and scores."""

    task_id: str
    owner: str | None
    requester: str | None
    patient_id: str | None
    services: list[str]
    place: str | None
    status: str | None
    outcome: str | None
    activities: list[str]
    intake_at: datetime | None  # first Task version with businessStatus intake-held (naive UTC)
    ever_accepted: bool
    authored_at: datetime | None  # ServiceRequest.authoredOn (naive UTC)
    icpc_group: str
    # Positive Health scores at intake / closure; None when the Task names no such questionnaire
    intake_scores: dict[str, float] | None
    closure_scores: dict[str, float] | None
    feedback: list[tuple[str, bool, bool]] = field(default_factory=list)  # (kind, pushed, delivered)


def _scores(named: str | None, text: str | None) -> dict[str, float] | None:
    if named is None:
        return None
    return orjson.loads(text) if text else {}


def cohort(
    session: sa.Connection, start: datetime, end: datetime, owners: Iterable[str]
) -> dict[str, Referral]:
    """Tasks whose referral (ServiceRequest.authoredOn) lies in [start, end), owned by `owners`.

    Keyed by ServiceRequest id; when a referral has several Tasks the most recent one counts."""
    found: dict[str, Referral] = {}
    for r in report_rows.referrals_in_period(session, start, end, sorted(set(owners))):
        found[r.sr_id] = Referral(
            task_id=r.task_id,
            owner=r.owner,
            requester=r.requester,
            patient_id=r.patient_id,
            services=list(r.services),
            place=r.place,
            status=r.status,
            outcome=r.outcome,
            activities=list(r.activities),
            intake_at=r.intake_at,
            ever_accepted=bool(r.ever_accepted),
            authored_at=r.authored_at,
            icpc_group=r.icpc_group,
            intake_scores=_scores(r.intake_qr, r.intake_scores),
            closure_scores=_scores(r.closure_qr, r.closure_scores),
        )
    return found


def add_feedback(
    session: sa.Connection,
    referrals: dict[str, Referral],
    start: datetime,
    end: datetime,
    owners: Iterable[str],
) -> None:
    """The feedback Communications that are part of the cohort's Tasks."""
    if not referrals:
        return
    by_task = {r.task_id: r for r in referrals.values()}
    for row in report_rows.feedback_in_period(session, start, end, sorted(set(owners))):
        if (ref := by_task.get(row.task_id)) is not None:
            ref.feedback.append((row.kind, bool(row.pushed), bool(row.delivered)))


def resources_by_id(
    session: sa.Connection, resource_type: str, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Current content of many resources of one type, in chunks (no query per resource)."""
    return report_rows.current_by_id(session, resource_type, ids)
