"""Store queries behind the municipality report: a fixed, small number of set-based queries.

Nothing here runs per Task: the cohort is one join driven by the ServiceRequest `authored` date
index, history, feedback and outbox are one aggregate query each, and Positive Health
QuestionnaireResponses are fetched in chunks. That keeps a report over 100k Tasks in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway.store.tables import HistoryRow, OutboxRow, ResourceRow, SearchIndexRow
from fhir_gateway.vocabulary import FEEDBACK_KINDS, Milestone

R = ResourceRow.__table__
H = HistoryRow.__table__
IX = SearchIndexRow.__table__
OUT = OutboxRow.__table__

# A Task that reached one of these was accepted by the welfare organisation at some point.
ACCEPTED_STATES = ("accepted", "in-progress", "on-hold", "completed", "failed")
_CHUNK = 500


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
    owners = sorted(set(owners))
    if not owners:
        return {}
    stmt = _cohort_select(start, end, owners).add_columns(_text(R.c.content), _text(_S.c.content))
    found: dict[str, Referral] = {}
    for task_id, _version, task, sr in session.execute(stmt.order_by(R.c.last_updated, R.c.pk)):
        sr_content = orjson.loads(sr)
        found[sr_content["id"]] = Referral(task_id, orjson.loads(task), sr_content)
    return found


def _text(column: Any) -> Any:
    """JSON as text, decoded with orjson: several times faster than the drivers' json.loads."""
    return sa.cast(column, sa.Text)


_S = R.alias("s")  # the ServiceRequest
_AU = IX.alias("au")  # its authored date
_FO = IX.alias("fo")  # Task.focus → the ServiceRequest
_OW = IX.alias("ow")  # Task.owner


def _cohort_select(start: datetime, end: datetime, owners: list[str]) -> sa.Select[Any]:
    """Driven by the date index: authored → ServiceRequest → Task.focus → Task, owner-filtered."""
    return (
        sa.select(R.c.id, R.c.version_id)
        .select_from(
            _AU.join(_S, _S.c.pk == _AU.c.resource_pk)
            .join(
                _FO,
                sa.and_(
                    _FO.c.resource_type == "Task",
                    _FO.c.param == "focus",
                    _FO.c.value == sa.literal("ServiceRequest/") + _S.c.id,
                ),
            )
            .join(R, R.c.pk == _FO.c.resource_pk)
        )
        .where(
            _AU.c.resource_type == "ServiceRequest",
            _AU.c.param == "authored",
            _AU.c.low >= start,
            _AU.c.low < end,
            _S.c.deleted.is_(False),
            R.c.deleted.is_(False),
            sa.exists().where(_OW.c.resource_pk == R.c.pk, _OW.c.param == "owner", _OW.c.value.in_(owners)),
        )
    )


def add_history(session: sa.Connection, referrals: dict[str, Referral]) -> None:
    """One aggregate over `resource_history`: when intake-held was first recorded, and whether the
    Task was ever accepted (a cancelled Task may have been)."""
    if not referrals:
        return
    status = H.c.content["status"].as_string()
    business = H.c.content["businessStatus"].as_string()  # the CodeableConcept as JSON text
    intake = sa.func.min(sa.case((business.like(f'%"{Milestone.INTAKE_HELD}"%'), H.c.last_updated), else_=None))
    accepted = sa.func.max(sa.case((status.in_(ACCEPTED_STATES), 1), else_=0))
    by_task = {r.task_id: r for r in referrals.values()}
    for chunk in _chunks(sorted(by_task)):  # index lookups on (resource_type, id, version_id)
        stmt = (
            sa.select(H.c.id, intake, accepted)
            .where(H.c.resource_type == "Task", H.c.id.in_(chunk))
            .group_by(H.c.id)
        )
        for task_id, intake_at, was_accepted in session.execute(stmt):
            ref = by_task[task_id]
            ref.intake_at = intake_at
            ref.ever_accepted = bool(was_accepted)


def add_feedback(session: sa.Connection, referrals: dict[str, Referral]) -> None:
    """Feedback Communications (category wor-feedback-kinds) that are part of the cohort's Tasks."""
    if not referrals:
        return
    po, cat = IX.alias("po"), IX.alias("cat")
    comm = R.alias("c")
    by_task = {f"Task/{r.task_id}": r for r in referrals.values()}
    base = (
        sa.select(comm.c.id, po.c.value, cat.c.value)
        .select_from(
            po.join(comm, comm.c.pk == po.c.resource_pk).join(
                cat,
                sa.and_(
                    cat.c.resource_pk == po.c.resource_pk,
                    cat.c.param == "category",
                    cat.c.system == FEEDBACK_KINDS,
                ),
            )
        )
        .where(
            po.c.resource_type == "Communication",
            po.c.param == "part-of",
            comm.c.deleted.is_(False),
        )
    )
    for chunk in _chunks(sorted(by_task)):  # index lookups on (resource_type, param, value)
        for comm_id, task_ref, kind in session.execute(base.where(po.c.value.in_(chunk))):
            by_task[task_ref].feedback.append((comm_id, kind))


def outbox_status(session: sa.Connection) -> dict[str, set[str]]:
    """Per feedback Communication ("Communication/<id>"): the statuses of its push rows.

    Practices that poll have no rows; an empty outbox (purged, or delivery not installed) is fine."""
    communication = OUT.c.payload["communication"].as_string()
    stmt = sa.select(communication, OUT.c.status).where(
        OUT.c.kind.in_(("fhir-push", "mllp")), communication.is_not(None)
    )
    found: dict[str, set[str]] = {}
    for ref, status in session.execute(stmt):
        found.setdefault(ref, set()).add(status)
    return found


def resources_by_id(
    session: sa.Connection, resource_type: str, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Current content of many resources of one type, in chunks (no query per resource)."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        stmt = sa.select(R.c.id, _text(R.c.content)).where(
            R.c.resource_type == resource_type, R.c.id.in_(chunk), R.c.deleted.is_(False)
        )
        out.update({rid: orjson.loads(content) for rid, content in session.execute(stmt)})
    return out


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
