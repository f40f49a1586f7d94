"""The municipality report's read model: a fixed, small number of set-based queries.

Nothing here runs per Task: the cohort is one join driven by the ServiceRequest `authored` date
index, history, feedback and outbox are one aggregate query each (per chunk of Tasks: on
PostgreSQL one chunk, the ids as one array parameter), and resources are fetched in chunks. On
PostgreSQL the cohort carries only the elements the report reads. Cost grows linearly with the
cohort (benchmarks/report.py: ≈ 0.6 s at 2,400 referrals on a loaded box; 100k is tens of
seconds — see benchmarks/README.md for the per-referral read model that would fix that). The report's
rules (what counts as accepted, which milestone is the intake) are `reports/`'; these functions
take plain values and return rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

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
    connection: sa.Connection,
    start: datetime,
    end: datetime,
    owners: Sequence[str],
    *,
    task_keys: Sequence[str] = (),
    sr_keys: Sequence[str] = (),
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(Task id, Task, ServiceRequest) for every current Task owned by one of `owners` whose
    referral (ServiceRequest.authoredOn) lies in [start, end), oldest Task change first.

    `task_keys` / `sr_keys`: only these top-level elements are needed. PostgreSQL then sends
    just them (built in the database): at 100k referrals the whole documents were most of the
    report's time (sorted on disk, sent, parsed). SQLite, in-process, reads the documents."""
    if not owners:
        return []
    pairs = (
        sa.select(R.c.pk.label("task_pk"), _S.c.pk.label("sr_pk"), R.c.last_updated)
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
    )
    # The pairs first, narrow (Task pk, referral pk, when), then the documents by pk, sorted
    # here: on PostgreSQL, sorting and merge-joining whole documents spilled to disk at 16k
    # referrals. PostgreSQL builds the cut-down documents; SQLite reads them whole.
    if connection.dialect.name == "postgresql":
        stmt = _document_pairs(pairs, _only, (task_keys, sr_keys), materialized=True)
    else:
        stmt = _document_pairs(pairs, lambda column, _keys: _text(column), ((), ()))
    rows = sorted(connection.execute(stmt).all(), key=lambda r: (r.last_updated, r.task_pk))
    return [(r.id, orjson.loads(r.task), orjson.loads(r.sr)) for r in rows]


def _document_pairs(
    pairs: sa.Select[Any], project: Any, keys: Sequence[Sequence[str]], *, materialized: bool = False
) -> sa.Select[Any]:
    """The Task id and the two documents (`project(column, keys)`) of each pair."""
    cohort = pairs.cte("cohort")
    if materialized:
        cohort = cohort.prefix_with("MATERIALIZED")
    task, sr = R.alias("t"), R.alias("sr")
    task_doc, sr_doc = project(task.c.content, keys[0]), project(sr.c.content, keys[1])
    return sa.select(
        task.c.id, task_doc.label("task"), sr_doc.label("sr"), cohort.c.last_updated, cohort.c.task_pk
    ).select_from(cohort.join(task, task.c.pk == cohort.c.task_pk).join(sr, sr.c.pk == cohort.c.sr_pk))


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
    for chunk in _chunks(connection, sorted(set(task_ids))):  # index lookups on (type, id, version)
        stmt = (
            sa.select(H.c.id, business, sa.func.min(H.c.last_updated), had_status)
            .where(H.c.resource_type == "Task", _among(connection, H.c.id, chunk))
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
    for chunk in _chunks(connection, sorted(set(task_refs))):  # index lookups on (type, param, value)
        yield from connection.execute(base.where(_among(connection, po.c.value, chunk)))  # type: ignore[misc]


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
    for chunk in _chunks(connection, sorted(set(ids))):
        stmt = sa.select(R.c.id, _text(R.c.content)).where(
            R.c.resource_type == resource_type, _among(connection, R.c.id, chunk), R.c.deleted.is_(False)
        )
        out.update({rid: orjson.loads(content) for rid, content in connection.execute(stmt)})
    return out


def _only(column: Any, keys: Sequence[str]) -> Any:
    """PostgreSQL: the document cut to `keys` (absent ones left out), as text."""
    if not keys:
        return _text(column)
    pairs = [part for key in keys for part in (sa.literal(key), column.op("->")(sa.literal(key)))]
    return _text(sa.func.jsonb_strip_nulls(sa.func.jsonb_build_object(*pairs)))


def _text(column: Any) -> Any:
    """JSON as text, decoded with orjson: several times faster than the drivers' json.loads."""
    return sa.cast(column, sa.Text)


def _chunks(connection: sa.Connection, items: list[str]) -> Iterator[list[str]]:
    """PostgreSQL: all at once (one array parameter, `_among`); SQLite: 500 at a time (its
    limit on bound parameters). At 100k referrals 200 statements per step were most of the time."""
    if connection.dialect.name == "postgresql":
        if items:
            yield items
        return
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _among(connection: sa.Connection, column: Any, values: list[str]) -> Any:
    """`column IN values`; on PostgreSQL `= ANY(array)`, one bound parameter however many
    values (the statement is cached and planned alike for 10 or 100k values)."""
    if connection.dialect.name != "postgresql":
        return column.in_(values)
    return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(sa.String), unique=True))
