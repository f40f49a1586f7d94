"""The municipality report's read model in SQL: narrow rows kept in step with the documents.

Four tables, each row owned by ONE document, so a write touches only its own rows and needs
no other document (a Task update does not read its ServiceRequest; a delivery outcome knows
only its Communication):

  * `report_referrals` — per Task (cascade on its resource row): what the report reads of the
    Task and of its history (`intake_at` the earliest version with intake-held, `ever_accepted`
    or-ed over the versions: the upsert folds them, the same rule as `reports/read_model.merge`);
  * `report_requests` — per ServiceRequest: the indexed `authored` low (range-indexed: the
    report's scan), the authoredOn instant, the ICPC group;
  * `report_scores` — per QuestionnaireResponse: its Positive Health scores;
  * `report_feedback` — per feedback Communication and (Task, kind): pushed / delivered.

What each document contributes is `reports/read_model.py`'s; here are only rows. A transaction's
Task and ServiceRequest rows go out together just before it commits (`write_referrals`: on
PostgreSQL one statement, so a referral costs one round trip more). The report is one range
scan on `report_requests.authored` joined by key (`referrals_in_period`), no JSON documents.
Migration `0011_report_referrals` creates the tables and backfills them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field

from fhir_gateway.store.prepared import Prepared
from fhir_gateway.store.tables import BigId, HistoryRow, JsonDocument, OutboxRow, ResourceRow, SQLModel

R = ResourceRow.__table__
H = HistoryRow.__table__
OUT = OutboxRow.__table__
_CHUNK = 500


def _owner_fk(name: str) -> sa.Column[Any]:
    return sa.Column(name, BigId, sa.ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True)


class ReportReferralRow(SQLModel, table=True):
    """One referral Task as the report reads it (cascade: the Task's resource row owns it)."""

    __tablename__ = "report_referrals"
    __table_args__ = (sa.Index("ix_report_referrals_sr", "sr_id"),)

    task_pk: int = Field(sa_column=_owner_fk("task_pk"))
    task_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    sr_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    requester: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    patient_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    services: list[str] = Field(default_factory=list, sa_column=sa.Column(JsonDocument, nullable=False))
    place: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    status: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    outcome: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    activities: list[str] = Field(default_factory=list, sa_column=sa.Column(JsonDocument, nullable=False))
    intake_qr: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    closure_qr: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    intake_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime()))
    ever_accepted: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    deleted: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))


class ReportRequestRow(SQLModel, table=True):
    """One ServiceRequest: when it was authored (as indexed, and as an instant) and its ICPC group."""

    __tablename__ = "report_requests"
    __table_args__ = (
        sa.Index("ix_report_requests_id", "sr_id", unique=True),
        sa.Index("ix_report_requests_authored", "authored", "sr_id"),
    )

    sr_pk: int = Field(sa_column=_owner_fk("sr_pk"))
    sr_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    authored: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime()))
    authored_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime()))
    icpc_group: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))


class ReportScoresRow(SQLModel, table=True):
    """One QuestionnaireResponse's Positive Health scores (0..10 or null per dimension, in order)."""

    __tablename__ = "report_scores"
    __table_args__ = (sa.Index("ix_report_scores_id", "qr_id", unique=True),)

    qr_pk: int = Field(sa_column=_owner_fk("qr_pk"))
    qr_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    scores: list[float | None] = Field(default_factory=list, sa_column=sa.Column(JsonDocument, nullable=False))


class ReportFeedbackRow(SQLModel, table=True):
    """One feedback Communication per Task it is part of and feedback kind it has."""

    __tablename__ = "report_feedback"
    __table_args__ = (
        sa.Index("ix_report_feedback_comm", "comm_id"),
        sa.Index("ix_report_feedback_task", "task_id"),
    )

    comm_pk: int = Field(sa_column=_owner_fk("comm_pk"))
    task_id: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    comm_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    pushed: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
    delivered: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))


RR = ReportReferralRow.__table__  # type: ignore[attr-defined]
RQ = ReportRequestRow.__table__  # type: ignore[attr-defined]
SC = ReportScoresRow.__table__  # type: ignore[attr-defined]
FB = ReportFeedbackRow.__table__  # type: ignore[attr-defined]
TABLES = (RR, RQ, SC, FB)

REFERRAL_COLUMNS = tuple(c.name for c in RR.columns)
_FOLDED = ("intake_at", "ever_accepted")  # folded over the Task's versions, not replaced


def _on_conflict(table: sa.Table, key: Sequence[str], folded: dict[str, str] | None = None) -> str:
    """ON CONFLICT (key) DO UPDATE: the new values, but `folded` columns by their expression."""
    sets = {c.name: f"excluded.{c.name}" for c in table.columns if c.name not in key}
    sets.update(folded or {})
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(f'{n} = {v}' for n, v in sets.items())}"


def _upsert(table: sa.Table, key: Sequence[str], folded: dict[str, str] | None = None) -> Prepared:
    """INSERT … ON CONFLICT (key) DO UPDATE (the same text on PostgreSQL and SQLite)."""
    names = [c.name for c in table.columns]
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)}) "
        + _on_conflict(table, key, folded)
    )
    binds = [sa.bindparam(c.name, type_=c.type) for c in table.columns]
    return Prepared(sa.text(sql).bindparams(*binds))


_t = RR.name
_FOLDS = {  # the earliest intake-held version wins; accepted once, accepted for good
    "intake_at": f"CASE WHEN {_t}.intake_at IS NULL THEN excluded.intake_at "
    f"WHEN excluded.intake_at IS NULL OR {_t}.intake_at <= excluded.intake_at THEN {_t}.intake_at "
    "ELSE excluded.intake_at END",
    "ever_accepted": f"({_t}.ever_accepted OR excluded.ever_accepted)",
}
_UPSERT_REFERRAL = _upsert(RR, ("task_pk",), _FOLDS)


def _pg_type(column: sa.Column[Any]) -> str:
    return str(column.type.compile(dialect=postgresql.dialect()))


def _from_json(table: sa.Table, param: str) -> str:
    """PostgreSQL: INSERT INTO table SELECT … FROM the rows of one JSON array parameter."""
    names = ", ".join(c.name for c in table.columns)
    record = ", ".join(f"{c.name} {_pg_type(c)}" for c in table.columns)
    return f"INSERT INTO {table.name} ({names}) SELECT {names} FROM jsonb_to_recordset(:{param}) AS x({record})"


# PostgreSQL: a transaction's referral and request rows in ONE statement (one round trip for a
# referral, whose ServiceRequest and Task are written in the same transaction).
_WRITE_PG = Prepared(
    sa.text(
        f"""
        WITH q AS ({_from_json(RQ, "requests")} {_on_conflict(RQ, ("sr_pk",))}),
        g AS (
            DELETE FROM {RQ.name} WHERE sr_pk IN (SELECT value::bigint FROM jsonb_array_elements_text(:gone))
        ),
        r AS ({_from_json(RR, "referrals")} {_on_conflict(RR, ("task_pk",), _FOLDS)})
        SELECT 1 AS done
        """
    ).bindparams(*(sa.bindparam(n, type_=JsonDocument) for n in ("requests", "gone", "referrals")))
)
_UPSERT_REQUEST = _upsert(RQ, ("sr_pk",))
_UPSERT_SCORES = _upsert(SC, ("qr_pk",))
_INSERT_FEEDBACK = Prepared(sa.insert(FB), keys=tuple(c.name for c in FB.columns))
_DELETE_REQUEST = Prepared(sa.delete(RQ).where(RQ.c.sr_pk == sa.bindparam("b_pk")))
_DELETE_SCORES = Prepared(sa.delete(SC).where(SC.c.qr_pk == sa.bindparam("b_pk")))
_DELETE_FEEDBACK = Prepared(sa.delete(FB).where(FB.c.comm_pk == sa.bindparam("b_pk")))
_FEEDBACK_FLAGS = Prepared(
    sa.select(sa.func.max(sa.case((FB.c.pushed, 1), else_=0)).label("pushed"))
    .add_columns(sa.func.max(sa.case((FB.c.delivered, 1), else_=0)).label("delivered"))
    .where(FB.c.comm_pk == sa.bindparam("b_pk"))
)
_MARK_PUSHED = Prepared(sa.update(FB).where(FB.c.comm_pk == sa.bindparam("b_pk")).values(pushed=True))
_MARK_DELIVERED = Prepared(sa.update(FB).where(FB.c.comm_id == sa.bindparam("b_id")).values(delivered=True))


# -- writes (one document's rows, in the writer's transaction) -------------------------------------


def write_referrals(
    connection: sa.Connection, referrals: list[dict[str, Any]], requests: list[dict[str, Any]], gone: list[int]
) -> None:
    """A transaction's referral rows (one per Task: each folds with what is stored), request
    rows, and the pks of deleted requests; on PostgreSQL in one statement."""
    if connection.dialect.name == "postgresql":
        _WRITE_PG.rows(connection, {"referrals": referrals, "requests": requests, "gone": gone})
        return
    for row in requests:
        _UPSERT_REQUEST.rows(connection, row)
    for pk in gone:
        _DELETE_REQUEST.rows(connection, {"b_pk": pk})
    for row in referrals:
        _UPSERT_REFERRAL.rows(connection, row)


def upsert_scores(connection: sa.Connection, row: dict[str, Any]) -> None:
    _UPSERT_SCORES.rows(connection, row)


def delete_scores(connection: sa.Connection, pk: int) -> None:
    _DELETE_SCORES.rows(connection, {"b_pk": pk})


def replace_feedback(
    connection: sa.Connection, comm_pk: int, rows: list[dict[str, Any]], *, new: bool
) -> None:
    """The rows of one Communication; an updated one keeps its pushed / delivered flags (they
    come from the outbox, which its first version filled)."""
    if not new:
        flags = _FEEDBACK_FLAGS.first(connection, {"b_pk": comm_pk}) or {}
        _DELETE_FEEDBACK.rows(connection, {"b_pk": comm_pk})
        rows = [
            {**r, "pushed": bool(flags.get("pushed")), "delivered": bool(flags.get("delivered"))}
            for r in rows
        ]
    if rows:
        _INSERT_FEEDBACK.many(connection, rows)


def mark_pushed(connection: sa.Connection, comm_pk: int) -> None:
    _MARK_PUSHED.rows(connection, {"b_pk": comm_pk})


def mark_delivered(connection: sa.Connection, comm_id: str) -> None:
    _MARK_DELIVERED.rows(connection, {"b_id": comm_id})


# -- rebuild (the backfill) --------------------------------------------------------------------------


def clear(connection: sa.Connection) -> None:
    for table in TABLES:
        connection.execute(sa.delete(table))


def insert_rows(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(sa.insert(table), rows)


def task_versions(connection: sa.Connection) -> Iterator[tuple[int, bool, datetime, dict[str, Any]]]:
    """Every Task version (resource pk, deleted now, when written, content), by Task then version."""
    stmt = (
        sa.select(R.c.pk, R.c.deleted, H.c.last_updated, sa.cast(H.c.content, sa.Text))
        .select_from(H.join(R, sa.and_(R.c.resource_type == H.c.resource_type, R.c.id == H.c.id)))
        .where(H.c.resource_type == "Task")
        .order_by(H.c.id, H.c.version_id)
    )
    for pk, deleted, at, content in connection.execute(stmt.execution_options(yield_per=2000)):
        yield pk, bool(deleted), at, orjson.loads(content)


def current_documents(connection: sa.Connection, resource_type: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pk, content) of every current, not deleted resource of a type."""
    stmt = sa.select(R.c.pk, sa.cast(R.c.content, sa.Text)).where(
        R.c.resource_type == resource_type, R.c.deleted.is_(False)
    )
    for pk, content in connection.execute(stmt.execution_options(yield_per=2000)):
        yield pk, orjson.loads(content)


def pushed_communications(connection: sa.Connection, kinds: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(Communication reference, outbox status) of every outbox row of `kinds` that pushes one."""
    communication = OUT.c.payload["communication"].as_string()
    stmt = sa.select(communication, OUT.c.status).where(
        OUT.c.kind.in_(list(kinds)), communication.is_not(None)
    )
    yield from connection.execute(stmt)  # type: ignore[misc]


# -- the report's reads ---------------------------------------------------------------------------


def _cohort(start: datetime, end: datetime, owners: Sequence[str]) -> tuple[Any, Any]:
    """The FROM and WHERE of the cohort: ServiceRequests authored in [start, end) (the range
    index), their Tasks (by `sr_id`) owned by one of `owners`, neither deleted."""
    joined = RQ.join(RR, RR.c.sr_id == RQ.c.sr_id)
    where = sa.and_(
        RQ.c.authored >= start, RQ.c.authored < end, RR.c.owner.in_(list(owners)), RR.c.deleted.is_(False)
    )
    return joined, where


def _text(column: Any) -> Any:
    """JSON as text: the caller decodes it with orjson, or keys a cache on it (a few distinct
    service lists among 100k rows), several times cheaper than the driver's json.loads."""
    return sa.cast(column, sa.Text)


def referrals_in_period(
    connection: sa.Connection, start: datetime, end: datetime, owners: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The cohort's rows, unordered, as tuples of `COHORT_COLUMNS` (JSON as text; the scores
    of the Task's intake and closure questionnaires, None where it names none or it is gone)."""
    if not owners:
        return []
    joined, where = _cohort(start, end, owners)
    si, sc = SC.alias("si"), SC.alias("sc")
    stmt = (
        sa.select(
            RR.c.task_pk,
            RR.c.task_id,
            RR.c.sr_id,
            RR.c.last_updated,
            RR.c.owner,
            RR.c.requester,
            _text(RR.c.services),
            RR.c.place,
            RR.c.status,
            RR.c.outcome,
            _text(RR.c.activities),
            RR.c.intake_at,
            RR.c.ever_accepted,
            RQ.c.authored_at,
            RQ.c.icpc_group,
            _text(si.c.scores),
            _text(sc.c.scores),
        )
        .select_from(
            joined.outerjoin(si, si.c.qr_id == RR.c.intake_qr).outerjoin(sc, sc.c.qr_id == RR.c.closure_qr)
        )
        .where(where)
    )
    return list(connection.execute(stmt).all())


COHORT_COLUMNS = ["task_pk", "task_id", "sr_id", "last_updated", "owner", "requester", "services", "place", "status", "outcome", "activities", "intake_at", "ever_accepted", "authored_at", "icpc_group", "intake_scores", "closure_scores"]


def patients_of(connection: sa.Connection, task_pks: Iterable[int]) -> dict[int, str | None]:
    """Task pk → patient id, for the few Tasks whose municipality needs the patient's district."""
    out: dict[int, str | None] = {}
    items = sorted(set(task_pks))
    for i in range(0, len(items), _CHUNK):
        stmt = sa.select(RR.c.task_pk, RR.c.patient_id).where(RR.c.task_pk.in_(items[i : i + _CHUNK]))
        out.update(dict(connection.execute(stmt).all()))
    return out


def feedback_totals(
    connection: sa.Connection, start: datetime, end: datetime, owners: Sequence[str]
) -> list[tuple[str, int, int, int]]:
    """(kind, sent, pushed, delivered) summed over the feedback of the cohort's Tasks."""
    if not owners:
        return []
    joined, where = _cohort(start, end, owners)
    pushed = sa.case((FB.c.pushed, 1), else_=0)
    delivered = sa.case((sa.and_(FB.c.pushed, FB.c.delivered), 1), else_=0)
    stmt = (
        sa.select(FB.c.kind, sa.func.count(), sa.func.sum(pushed), sa.func.sum(delivered))
        .select_from(joined.join(FB, FB.c.task_id == RR.c.task_id))
        .where(where)
        .group_by(FB.c.kind)
    )
    return [(k, int(n), int(p or 0), int(d or 0)) for k, n, p, d in connection.execute(stmt)]


def feedback_of(connection: sa.Connection, task_ids: Iterable[str]) -> list[tuple[str, bool, bool]]:
    """(kind, pushed, delivered) of the feedback of these Tasks (by the task_id index)."""
    out: list[tuple[str, bool, bool]] = []
    items = sorted(set(task_ids))
    is_pg = connection.dialect.name == "postgresql"
    step = (len(items) or 1) if is_pg else _CHUNK
    for i in range(0, len(items), step):
        stmt = sa.select(FB.c.kind, FB.c.pushed, FB.c.delivered).where(_among(is_pg, FB.c.task_id, items[i : i + step]))
        out.extend(connection.execute(stmt).all())
    return out


def _among(is_pg: bool, column: Any, values: list[str]) -> Any:
    """`column IN values`; on PostgreSQL `= ANY(array)`: one parameter however many values."""
    if not is_pg:
        return column.in_(values)
    return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(sa.String), unique=True))


def current_by_id(connection: sa.Connection, resource_type: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Current content of many resources of one type (deleted ones left out), in chunks."""
    out: dict[str, dict[str, Any]] = {}
    items = sorted(set(ids))
    is_pg = connection.dialect.name == "postgresql"
    step = (len(items) or 1) if is_pg else _CHUNK
    for i in range(0, len(items), step):
        stmt = sa.select(R.c.id, sa.cast(R.c.content, sa.Text)).where(
            R.c.resource_type == resource_type, _among(is_pg, R.c.id, items[i : i + step]), R.c.deleted.is_(False)
        )
        out.update({rid: orjson.loads(content) for rid, content in connection.execute(stmt)})
    return out
