"""The operator console's read model: referral Tasks by filter, their versions, feedback and
pushes, overdue candidates, refused creates. Driven by the search index; callers pass plain
values (references, statuses, cut-off moments) and never see the index's layout.

Contents come back as stored, deleted resources included where the console always showed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store.tables import HistoryRow, OutboxRow, ResourceRow, SearchIndexRow, V2MessageRow

R = ResourceRow.__table__
H = HistoryRow.__table__
IX = SearchIndexRow.__table__
OUT = OutboxRow.__table__
V2 = V2MessageRow.__table__
_CHUNK = 500
_SR_PREFIX = "ServiceRequest/"


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _index_has(param: str, values: Iterable[str]) -> sa.ColumnElement[bool]:
    return sa.exists().where(IX.c.resource_pk == R.c.pk, IX.c.param == param, IX.c.value.in_(list(values)))


def _referred(cutoff: datetime, *, before: bool) -> sa.ColumnElement[bool]:
    """The Task's referral (ServiceRequest.authoredOn, via Task.focus) was made before/after `cutoff`.

    Not correlated: the ServiceRequests authored in range come from the date index
    (ix_search_date), each one's Tasks from the focus value (ix_search_value), and the Task is
    in that set. As a correlated EXISTS, SQLite drove the subquery from the date range once per
    Task — every ServiceRequest for every Task: ≈ 40 s to minutes at 3,000 referrals
    (`benchmarks/console_referrals.py`)."""
    fo, au, sr = IX.alias("fo"), IX.alias("au"), R.alias("sr")
    tasks = (
        sa.select(fo.c.resource_pk)
        .select_from(au.join(sr, sr.c.pk == au.c.resource_pk))
        .join(fo, fo.c.value == sa.literal(_SR_PREFIX) + sr.c.id)
        .where(
            au.c.resource_type == "ServiceRequest",
            au.c.param == "authored",
            au.c.low <= cutoff if before else au.c.low >= cutoff,
            sr.c.resource_type == "ServiceRequest",
            fo.c.resource_type == "Task",
            fo.c.param == "focus",
        )
    )
    return R.c.pk.in_(tasks)


def referral_tasks(
    connection: sa.Connection,
    *,
    owners: Sequence[Sequence[str]] = (),
    requesters: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    referred_until: datetime | None = None,
    referred_since: datetime | None = None,
    with_content: bool = True,
) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of current Tasks that focus on a ServiceRequest, newest first. Each entry
    of `owners` is one condition (the owner is one of those references); `requesters`,
    `statuses`: the Task's requester / status is one of them; `referred_until` / `_since`:
    the ServiceRequest was authored at or before / at or after that naive UTC moment."""
    content = R.c.content if with_content else sa.null()  # without: ids only, {} as content
    stmt = sa.select(R.c.id, content).where(R.c.resource_type == "Task", R.c.deleted.is_(False))
    stmt = stmt.where(
        sa.exists().where(
            IX.c.resource_pk == R.c.pk, IX.c.param == "focus", IX.c.value.like("ServiceRequest/%")
        )
    )
    for refs in owners:
        stmt = stmt.where(_index_has("owner", refs))
    if requesters is not None:
        stmt = stmt.where(_index_has("requester", requesters))
    if statuses is not None:
        stmt = stmt.where(_index_has("status", statuses))
    if referred_until is not None:
        stmt = stmt.where(_referred(referred_until, before=True))
    if referred_since is not None:
        stmt = stmt.where(_referred(referred_since, before=False))
    return [(rid, found or {}) for rid, found in connection.execute(stmt.order_by(R.c.pk.desc()))]


def tasks_with_status(connection: sa.Connection, statuses: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of current Tasks whose status is one of `statuses`, oldest first."""
    stmt = (
        sa.select(R.c.id, R.c.content)
        .where(R.c.resource_type == "Task", R.c.deleted.is_(False), _index_has("status", statuses))
        .order_by(R.c.pk)
    )
    return [(rid, content) for rid, content in connection.execute(stmt)]


def contents(connection: sa.Connection, resource_type: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Current content by id (deleted ones too: the console shows what was there)."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        stmt = sa.select(R.c.id, R.c.content).where(R.c.resource_type == resource_type, R.c.id.in_(chunk))
        out.update({rid: content for rid, content in connection.execute(stmt)})
    return out


def task_versions(
    connection: sa.Connection, task_ids: list[str]
) -> dict[str, list[tuple[datetime, dict[str, Any]]]]:
    """Every version of each Task in `resource_history`, in version order: (naive UTC time, content)."""
    out: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    for chunk in _chunks(task_ids):
        stmt = (
            sa.select(H.c.id, H.c.last_updated, H.c.content)
            .where(H.c.resource_type == "Task", H.c.id.in_(chunk))
            .order_by(H.c.id, H.c.version_id)
        )
        for rid, updated, content in connection.execute(stmt):
            out.setdefault(rid, []).append((updated, content))
    return out


def communications_part_of(
    connection: sa.Connection, task_refs: list[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(Task reference, Communication id, content) of current Communications `partOf` one of
    `task_refs` ("Task/<id>"), oldest first."""
    part_of = IX.alias("po")
    found: list[tuple[str, str, dict[str, Any]]] = []
    for chunk in _chunks(task_refs):
        stmt = (
            sa.select(part_of.c.value, R.c.id, R.c.content)
            .select_from(part_of.join(R, R.c.pk == part_of.c.resource_pk))
            .where(
                part_of.c.resource_type == "Communication",
                part_of.c.param == "part-of",
                part_of.c.value.in_(chunk),
                R.c.deleted.is_(False),
            )
            .order_by(R.c.pk)
        )
        found.extend((task_ref, cid, content) for task_ref, cid, content in connection.execute(stmt))
    return found


def push_statuses(connection: sa.Connection, communication_refs: list[str]) -> dict[str, list[str]]:
    """Per Communication reference: the statuses of the outbox rows that push it, oldest first."""
    pushes: dict[str, list[str]] = {}
    communication = OUT.c.payload["communication"].as_string()
    for chunk in _chunks(communication_refs):
        for ref, status in connection.execute(
            sa.select(communication, OUT.c.status).where(communication.in_(chunk)).order_by(OUT.c.pk)
        ):
            pushes.setdefault(ref, []).append(status)
    return pushes


def failed_create_audits(connection: sa.Connection) -> list[dict[str, Any]]:
    """AuditEvents of creates that failed (outcome 4), newest first."""
    outcome, subtype = IX.alias("oc"), IX.alias("st")
    stmt = (
        sa.select(R.c.content)
        .select_from(
            R.join(outcome, outcome.c.resource_pk == R.c.pk).join(subtype, subtype.c.resource_pk == R.c.pk)
        )
        .where(
            R.c.resource_type == "AuditEvent",
            outcome.c.param == "outcome",
            outcome.c.value == "4",
            subtype.c.param == "subtype",
            subtype.c.value == "create",
        )
        .order_by(R.c.pk.desc())
    )
    return [event for (event,) in connection.execute(stmt)]


# -- one referral: everything that belongs to its loop -------------------------------------------
def referencing(
    connection: sa.Connection,
    resource_type: str,
    params: Sequence[str],
    refs: Sequence[str],
    limit: int = 500,
    *,
    newest_first: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of current `resource_type` resources whose index `params` point at one of
    `refs` ("Type/id"), oldest first (or newest first), each once, at most `limit`."""
    if not refs:
        return []
    ix = IX.alias("rx")
    pks = sa.select(ix.c.resource_pk).where(
        ix.c.resource_type == resource_type, ix.c.param.in_(list(params)), ix.c.value.in_(list(refs))
    )
    stmt = (
        sa.select(R.c.id, R.c.content)
        .where(R.c.resource_type == resource_type, R.c.deleted.is_(False), R.c.pk.in_(pks))
        .order_by(R.c.pk.desc() if newest_first else R.c.pk)
        .limit(limit)
    )
    return [(rid, content) for rid, content in connection.execute(stmt)]


def with_identifier(
    connection: sa.Connection, resource_type: str, value: str, system: str | None = None
) -> list[str]:
    """Ids of current resources with an identifier of that value (and system, when given)."""
    cond = [IX.c.resource_type == resource_type, IX.c.param == "identifier", IX.c.value == value]
    if system is not None:
        cond.append(IX.c.system == system)
    stmt = (
        sa.select(R.c.id)
        .where(R.c.resource_type == resource_type, R.c.deleted.is_(False))
        .where(R.c.pk.in_(sa.select(IX.c.resource_pk).where(*cond)))
        .order_by(R.c.pk.desc())
        .limit(200)
    )
    return [rid for (rid,) in connection.execute(stmt)]


def v2_messages_about(connection: sa.Connection, refs: Sequence[str]) -> list[dict[str, Any]]:
    """The HL7 v2 journal rows (in and out) whose focus is one of `refs`, oldest first; the ACK
    text is left out (it may echo personal data), its code kept."""
    if not refs:
        return []
    stmt = (
        sa.select(
            V2.c.direction, V2.c.sender, V2.c.control_id, V2.c.message_type, V2.c.received_at, V2.c.ack_code
        )
        .where(V2.c.focus.in_(list(refs)))
        .order_by(V2.c.pk)
    )
    return [dict(row._mapping) for row in connection.execute(stmt)]


def outbox_about(connection: sa.Connection, communication_refs: Sequence[str]) -> list[dict[str, Any]]:
    """Outbox rows pushing one of these Communications (no payload), oldest first."""
    if not communication_refs:
        return []
    communication = OUT.c.payload["communication"].as_string()
    stmt = (
        sa.select(
            communication.label("communication"),
            OUT.c.event_id,
            OUT.c.kind,
            OUT.c.destination,
            OUT.c.status,
            OUT.c.attempts,
            OUT.c.created_at,
            OUT.c.last_error,
        )
        .where(communication.in_(list(communication_refs)))
        .order_by(OUT.c.pk)
    )
    return [dict(row._mapping) for row in connection.execute(stmt)]


def refused_v2(connection: sa.Connection) -> list[tuple[datetime, str, str, str | None, str, str | None]]:
    """Inbound HL7 v2 messages answered AE or AR, newest first: (received_at, sender, message
    type, ACK code, control id, ACK text — its ERR segment says why)."""
    stmt = (
        sa.select(V2.c.received_at, V2.c.sender, V2.c.message_type, V2.c.ack_code, V2.c.control_id, V2.c.ack)
        .where(V2.c.direction == "in", V2.c.ack_code.in_(("AE", "AR")))
        .order_by(V2.c.pk.desc())
    )
    return [tuple(row) for row in connection.execute(stmt)]  # type: ignore[misc]
