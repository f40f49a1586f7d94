"""The outbox queue in SQL: claim due rows safely across workers, record outcomes, ops queries.

Row states: pending → delivering (claimed; `next_attempt_at` is then the lease expiry) →
delivered | pending (retry, with backoff) | dead (dead letter) | cancelled (nothing to deliver
any more, e.g. the subscription was switched off).

Order: rows with the same `subject` (a subscription, a practice) are delivered in `pk` order.
A row is only claimable while no earlier row of its subject is pending or delivering (a dead
letter does not block its successors). One worker claims the head of a subject together with
the rows queued behind it and delivers them in order; a failure releases the rest.

Concurrency: PostgreSQL claims with `FOR UPDATE SKIP LOCKED`; SQLite write transactions are
BEGIN IMMEDIATE, so the claim (select + update) is serialised there. The lease expiry doubles
as the claim token: finishing a row checks it, so a worker whose lease ran out (and whose row
someone else re-claimed) cannot overwrite the newer outcome.

Times are naive UTC (as stored). What a row means to a receiver lives in `delivery/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store.delivery_tables import OUTBOX_SUBJECT_INDEX  # noqa: F401  (index on metadata)
from fhir_gateway.store.tables import OutboxRow

OUT = OutboxRow.__table__
ACTIVE = ("pending", "delivering")
STATUSES = ("pending", "delivering", "delivered", "dead", "cancelled")


@dataclass(slots=True)
class Claimed:
    """A row this worker holds until `lease`; finishing it checks the lease is still ours."""

    pk: int
    event_id: str
    kind: str
    destination: str
    subject: str | None
    payload: dict[str, Any]
    attempts: int  # including this one
    lease: datetime  # claim token


def claim(
    connection: sa.Connection, now: datetime, *, batch: int, lease: float, follow: int = 50
) -> list[Claimed]:
    """Claim up to `batch` subject heads (plus up to `follow` queued rows behind each) in the
    caller's write transaction. Returns rows in delivery order, grouped by subject."""
    earlier = OUT.alias("earlier")
    blocked = (
        sa.select(earlier.c.pk)
        .where(earlier.c.subject == OUT.c.subject, earlier.c.pk < OUT.c.pk, earlier.c.status.in_(ACTIVE))
        .exists()
    )
    due = sa.or_(
        sa.and_(OUT.c.status == "pending", OUT.c.next_attempt_at <= now),
        sa.and_(OUT.c.status == "delivering", OUT.c.next_attempt_at <= now),  # lease expired
    )
    heads_stmt = (
        sa.select(OUT).where(due, ~blocked).order_by(OUT.c.pk).limit(batch).with_for_update(skip_locked=True)
    )
    heads = connection.execute(heads_stmt).all()
    if not heads:
        return []
    until = now + timedelta(seconds=lease)
    rows: list[Any] = []
    for head in heads:
        rows.append(head)
        if head.subject is None or follow <= 0:
            continue
        # Rows behind a head we hold cannot be claimed by anyone else (the head blocks them).
        rows.extend(
            connection.execute(
                sa.select(OUT)
                .where(
                    OUT.c.subject == head.subject,
                    OUT.c.pk > head.pk,
                    OUT.c.status.in_(ACTIVE),  # pending, or delivering with an expired lease
                    OUT.c.next_attempt_at <= now,
                )
                .order_by(OUT.c.pk)
                .limit(follow)
                .with_for_update(skip_locked=True)
            ).all()
        )
    connection.execute(
        sa.update(OUT)
        .where(OUT.c.pk.in_([r.pk for r in rows]))
        .values(status="delivering", next_attempt_at=until, attempts=OUT.c.attempts + 1)
    )
    return [
        Claimed(r.pk, r.event_id, r.kind, r.destination, r.subject, r.payload, r.attempts + 1, until)
        for r in rows
    ]


def finish(
    connection: sa.Connection,
    row: Claimed,
    status: str,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
    count_attempt: bool = True,
) -> bool:
    """Record an outcome if we still hold the claim. `count_attempt=False` releases a row that
    was claimed but never tried (its predecessor failed)."""
    values: dict[str, Any] = {"status": status, "last_error": error}
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    if not count_attempt:
        values["attempts"] = OUT.c.attempts - 1
        values.pop("last_error")
    result = connection.execute(
        sa.update(OUT)
        .where(OUT.c.pk == row.pk, OUT.c.status == "delivering", OUT.c.next_attempt_at == row.lease)
        .values(**values)
    )
    return result.rowcount == 1


def counts(connection: sa.Connection) -> dict[str, int]:
    """Rows per status (the ops view and the outbox-depth metrics)."""
    rows = connection.execute(sa.select(OUT.c.status, sa.func.count()).group_by(OUT.c.status)).all()
    return {status: int(n) for status, n in rows}


def depth(connection: sa.Connection) -> tuple[dict[str, int], datetime | None]:
    """Rows per status and the creation time of the oldest row still to deliver (the metrics an
    operator alerts on: a stuck outbox grows and ages)."""
    oldest = connection.execute(sa.select(sa.func.min(OUT.c.created_at)).where(OUT.c.status.in_(ACTIVE)))
    return counts(connection), oldest.scalar()


def list_rows(connection: sa.Connection, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest rows (of one status), every column, newest first."""
    stmt = sa.select(OUT).order_by(OUT.c.pk.desc()).limit(limit)
    if status:
        stmt = stmt.where(OUT.c.status == status)
    return [dict(r._mapping) for r in connection.execute(stmt).all()]


def retry(
    connection: sa.Connection, now: datetime, *, event_id: str | None = None, all_dead: bool = False
) -> int:
    """Put dead letters (or one cancelled/dead row) back in the queue with a fresh attempt budget."""
    stmt = sa.update(OUT).values(status="pending", attempts=0, next_attempt_at=now)
    if event_id is not None:
        stmt = stmt.where(OUT.c.event_id == event_id, OUT.c.status.in_(("dead", "cancelled")))
    elif all_dead:
        stmt = stmt.where(OUT.c.status == "dead")
    else:
        return 0
    return int(connection.execute(stmt).rowcount)


def purge(connection: sa.Connection, older_than: datetime) -> int:
    """Delete delivered (and cancelled) rows created before `older_than`; the event log stays."""
    return int(
        connection.execute(
            sa.delete(OUT).where(OUT.c.status.in_(("delivered", "cancelled")), OUT.c.created_at < older_than)
        ).rowcount
    )
