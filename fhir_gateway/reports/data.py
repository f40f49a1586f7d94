"""What the municipality report reads: the cohort from the read model (`store/report_rows.py`),
narrow rows and no documents — what each document contributes is `reports/read_model.py`'s.

Per referral only tuples are handled (100k of them in ≤ 2 s): JSON columns stay text until a
rule needs them, and the few distinct service lists and activity sets are decoded once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store import report_rows


@dataclass(slots=True)
class Referral:
    """One referral of the cohort: its Task's row with its ServiceRequest's (`COHORT_COLUMNS`)."""

    task_pk: int
    task_id: str
    sr_id: str
    last_updated: datetime
    owner: str | None
    requester: str | None
    services: str  # JSON list of HealthcareService ids, as text
    place: str | None
    status: str | None
    outcome: str | None
    activities: str  # JSON list of activity category codes, as text
    intake_at: datetime | None  # first Task version with businessStatus intake-held (naive UTC)
    ever_accepted: bool
    authored_at: datetime | None  # ServiceRequest.authoredOn (naive UTC)
    icpc_group: str
    intake_scores: str | None  # JSON list in PH_DIMENSIONS order; None: no such questionnaire
    closure_scores: str | None


assert tuple(f for f in Referral.__slots__) == tuple(report_rows.COHORT_COLUMNS)


def cohort(
    session: sa.Connection, start: datetime, end: datetime, owners: Iterable[str]
) -> tuple[dict[str, Referral], set[str]]:
    """Tasks whose referral (ServiceRequest.authoredOn) lies in [start, end), owned by `owners`.

    Keyed by ServiceRequest id; when a referral has several Tasks the most recent one counts.
    With the ids of all the Tasks found (the older ones included)."""
    found: dict[str, Referral] = {}
    task_ids: set[str] = set()
    for row in report_rows.referrals_in_period(session, start, end, sorted(set(owners))):
        r = Referral(*row)
        task_ids.add(r.task_id)
        known = found.get(r.sr_id)
        if known is None or (r.last_updated, r.task_pk) > (known.last_updated, known.task_pk):
            found[r.sr_id] = r
    return found, task_ids


def feedback_counts(
    session: sa.Connection,
    found: set[str],
    kept: list[Referral],
    start: datetime,
    end: datetime,
    owners: Iterable[str],
) -> dict[str, list[int]]:
    """Per feedback kind: [sent, pushed, delivered] over the feedback of the `kept` referrals'
    Tasks. Summed in SQL over all the Tasks `found` for the cohort, then those the report left
    out (another municipality; an older Task of the same referral) are taken off — or, if those
    are the many, the kept ones' are added up instead."""
    kept_ids = {r.task_id for r in kept}
    left_out = found - kept_ids
    counts: dict[str, list[int]] = {}
    if len(left_out) <= len(kept_ids):
        for kind, sent, pushed, delivered in report_rows.feedback_totals(session, start, end, sorted(set(owners))):
            counts[kind] = [sent, pushed, delivered]
        sign, rows = -1, report_rows.feedback_of(session, left_out) if left_out else []
    else:
        sign, rows = 1, report_rows.feedback_of(session, kept_ids)
    for kind, pushed, delivered in rows:
        c = counts.setdefault(kind, [0, 0, 0])
        c[0] += sign
        if pushed:
            c[1] += sign
            c[2] += sign * bool(delivered)
    return {kind: c for kind, c in counts.items() if c[0]}


def patients_of(session: sa.Connection, referrals: Iterable[Referral]) -> dict[int, dict[str, Any]]:
    """Task pk → the Task's Patient (current content; {} when unknown), read in bulk."""
    patient_ids = report_rows.patients_of(session, [r.task_pk for r in referrals])
    patients = report_rows.current_by_id(session, "Patient", {p for p in patient_ids.values() if p})
    return {pk: patients.get(p or "", {}) for pk, p in patient_ids.items()}
