"""Workflow timers in SQL (table `timers`): schedule, find the due ones, lock one, record outcomes.

What a timer does when it fires, and the retry policy, are `workflow/timers.py`'s. Locking: a
due timer is selected `FOR UPDATE SKIP LOCKED` (SQLite: the write transaction is BEGIN
IMMEDIATE), so a second worker skips it or, once committed, sees it done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhir_gateway.store.delivery_tables import TimerRow
from fhir_gateway.store.prepared import Prepared

T = TimerRow.__table__

_TIMER_KEYS = ("key", "kind", "target", "due_at", "status", "attempts", "created_at")
# insert-or-ignore on the unique key; the ON CONFLICT clause is each dialect's own construct
_ADD_TIMER = {
    "postgresql": Prepared(pg_insert(T).on_conflict_do_nothing(index_elements=["key"]), _TIMER_KEYS),
    "sqlite": Prepared(sqlite_insert(T).on_conflict_do_nothing(index_elements=["key"]), _TIMER_KEYS),
}


def add(connection: sa.Connection, kind: str, target: str, due: datetime, now: datetime) -> None:
    """Insert-or-ignore on the unique key (kind + target): runs for every Task write, prepared."""
    _ADD_TIMER[connection.dialect.name].rows(
        connection,
        {
            "key": f"{kind}:{target}"[:160],
            "kind": kind,
            "target": target,
            "due_at": due,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
        },
    )


def due_pks(connection: sa.Connection, now: datetime, limit: int) -> list[int]:
    """Pending timers due by `now`, earliest first."""
    return list(
        connection.execute(
            sa.select(T.c.pk)
            .where(T.c.status == "pending", T.c.due_at <= now)
            .order_by(T.c.due_at)
            .limit(limit)
        )
        .scalars()
        .all()
    )


def lock_due(connection: sa.Connection, pk: int, now: datetime) -> sa.Row[Any] | None:
    """The timer row if it is still pending and due, locked for this transaction; None when
    another worker holds it or fired it."""
    return connection.execute(
        sa.select(T)
        .where(T.c.pk == pk, T.c.status == "pending", T.c.due_at <= now)
        .with_for_update(skip_locked=True)
    ).first()


def record_outcome(
    connection: sa.Connection,
    pk: int,
    status: str,
    *,
    due_at: datetime | None = None,
    fired_at: datetime | None = None,
) -> None:
    """Count the attempt and store its outcome: fired/obsolete (with `fired_at`) or pending
    again (with a new `due_at`)."""
    values: dict[str, Any] = {"status": status, "attempts": T.c.attempts + 1, "last_error": None}
    if due_at is not None:
        values["due_at"] = due_at
    if fired_at is not None:
        values["fired_at"] = fired_at
    connection.execute(sa.update(T).where(T.c.pk == pk).values(**values))


def attempts(connection: sa.Connection, pk: int) -> int:
    return int(connection.execute(sa.select(T.c.attempts).where(T.c.pk == pk)).scalar() or 0)


def record_failure(
    connection: sa.Connection, pk: int, *, attempts: int, error: str, due_at: datetime, status: str
) -> None:
    """A failed firing (its effects rolled back): the attempt count, the error, when to retry."""
    connection.execute(
        sa.update(T)
        .where(T.c.pk == pk, T.c.status == "pending")
        .values(attempts=attempts, last_error=error, due_at=due_at, status=status)
    )
