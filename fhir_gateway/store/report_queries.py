"""The municipality report's read model: a fixed, small number of set-based queries.

Nothing here runs per Task: the cohort is one join driven by the ServiceRequest `authored` date
index, history, feedback and outbox are one aggregate query each (per chunk of Tasks), and
resources are fetched in chunks. That keeps a report over 100k Tasks in seconds. The report's
rules (what counts as accepted, which milestone is the intake) are `reports/`'; these functions
take plain values and return rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway.store.tables import HistoryRow, OutboxRow, ResourceRow, SearchIndexRow

R = ResourceRow.__table__
H = HistoryRow.__table__
IX = SearchIndexRow.__table__
OUT = OutboxRow.__table__
_CHUNK = 500

_S = R.alias("s")  # the ServiceRequest
_AU = IX.alias("au")  # its authored date
_FO = IX.alias("fo")  # Task.focus → the ServiceRequest
_OW = IX.alias("ow")  # Task.owner


def referrals_in_period(
    connection: sa.Connection, start: datetime, end: datetime, owners: Sequence[str]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(Task id, Task, ServiceRequest) for every current Task owned by one of `owners` whose
    referral (ServiceRequest.authoredOn) lies in [start, end), oldest Task change first."""
    if not owners:
        return []
    stmt = (
        sa.select(R.c.id, _text(R.c.content), _text(_S.c.content))
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
            sa.exists().where(
                _OW.c.resource_pk == R.c.pk, _OW.c.param == "owner", _OW.c.value.in_(list(owners))
            ),
        )
        .order_by(R.c.last_updated, R.c.pk)
    )
    return [(task_id, orjson.loads(task), orjson.loads(sr)) for task_id, task, sr in connection.execute(stmt)]


def task_business_statuses(
    connection: sa.Connection, task_ids: Iterable[str], statuses: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any] | None, datetime, bool]]:
    """Per Task and distinct `businessStatus` in its history: (Task id, the businessStatus
    CodeableConcept or None, when that value was first written, whether any version with it had
    a status in `statuses`). One aggregate per chunk: a Task has a handful of distinct values,
    and the caller decides which codes count (no text matching on JSON here)."""
    business = H.c.content["businessStatus"].as_string()  # the CodeableConcept as JSON text
    status = H.c.content["status"].as_string()
    had_status = sa.func.max(sa.case((status.in_(list(statuses)), 1), else_=0))
    for chunk in _chunks(sorted(set(task_ids))):  # index lookups on (resource_type, id, version_id)
        stmt = (
            sa.select(H.c.id, business, sa.func.min(H.c.last_updated), had_status)
            .where(H.c.resource_type == "Task", H.c.id.in_(chunk))
            .group_by(H.c.id, business)
        )
        for task_id, concept, first_at, with_status in connection.execute(stmt):
            yield task_id, _concept(concept), first_at, bool(with_status)


def _concept(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def communications_part_of(
    connection: sa.Connection, task_refs: Iterable[str], category_system: str
) -> Iterator[tuple[str, str, str]]:
    """(Communication id, Task reference, category code) of Communications that are `partOf`
    one of `task_refs` ("Task/<id>") and have a category from `category_system`."""
    po, cat = IX.alias("po"), IX.alias("cat")
    comm = R.alias("c")
    base = (
        sa.select(comm.c.id, po.c.value, cat.c.value)
        .select_from(
            po.join(comm, comm.c.pk == po.c.resource_pk).join(
                cat,
                sa.and_(
                    cat.c.resource_pk == po.c.resource_pk,
                    cat.c.param == "category",
                    cat.c.system == category_system,
                ),
            )
        )
        .where(
            po.c.resource_type == "Communication",
            po.c.param == "part-of",
            comm.c.deleted.is_(False),
        )
    )
    for chunk in _chunks(sorted(set(task_refs))):  # index lookups on (resource_type, param, value)
        yield from connection.execute(base.where(po.c.value.in_(chunk)))  # type: ignore[misc]


def pushed_communications(connection: sa.Connection, kinds: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(Communication reference, outbox status) of every outbox row of `kinds` that pushes one."""
    communication = OUT.c.payload["communication"].as_string()
    stmt = sa.select(communication, OUT.c.status).where(
        OUT.c.kind.in_(list(kinds)), communication.is_not(None)
    )
    yield from connection.execute(stmt)  # type: ignore[misc]


def current_by_id(
    connection: sa.Connection, resource_type: str, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Current content of many resources of one type (deleted ones left out), in chunks."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        stmt = sa.select(R.c.id, _text(R.c.content)).where(
            R.c.resource_type == resource_type, R.c.id.in_(chunk), R.c.deleted.is_(False)
        )
        out.update({rid: orjson.loads(content) for rid, content in connection.execute(stmt)})
    return out


def _text(column: Any) -> Any:
    """JSON as text, decoded with orjson: several times faster than the drivers' json.loads."""
    return sa.cast(column, sa.Text)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
