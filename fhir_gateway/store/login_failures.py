"""Failed sign-in counters (table `login_failures`), shared by every replica through the database.

One row per throttle key (`console:<account>@<address>`, `console-address:<address>`): how many
sign-ins failed in a row, the last failure, and until when the key is locked. The policy (how
many failures are free, how long a lock lasts) lives with its user, `security/login_throttle.py`;
this module only reads and writes rows. Migration: `0008_login_failures`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field

from fhir_gateway.store.tables import SQLModel

PURGE_BATCH = 200  # forgotten rows removed per recorded failure: keeps up, never a long delete


class LoginFailureRow(SQLModel, table=True):
    __tablename__ = "login_failures"
    __table_args__ = (sa.Index("ix_login_failures_last", "last_failure"),)

    key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    failures: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    last_failure: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    locked_until: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))


T = LoginFailureRow.__table__  # type: ignore[attr-defined]


def latest_lock(conn: sa.Connection, keys: Sequence[str], now: datetime) -> datetime | None:
    """The latest `locked_until` after `now` among `keys` (None: none of them is locked)."""
    value = conn.execute(
        sa.select(sa.func.max(T.c.locked_until)).where(T.c.key.in_(list(keys)), T.c.locked_until > now)
    ).scalar()
    return value if isinstance(value, datetime) else None


def record_failure(
    conn: sa.Connection,
    key: str,
    now: datetime,
    lock_for: Callable[[int], float],
    forget_before: datetime,
) -> tuple[int, datetime | None]:
    """Count one more failure of `key` (atomically: INSERT … ON CONFLICT DO UPDATE, so replicas
    failing at once each add one) and set its lock from `lock_for(failures)` seconds (0: none).
    A row idle since before `forget_before` starts again from one. Returns (failures, locked_until)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stale = T.c.last_failure < forget_before
    insert = dialect.insert(T).values(key=key, failures=1, last_failure=now, locked_until=None)
    upsert = insert.on_conflict_do_update(
        index_elements=[T.c.key],
        set_={"failures": sa.case((stale, 1), else_=T.c.failures + 1), "last_failure": now},
    ).returning(T.c.failures)
    failures = int(conn.execute(upsert).scalar_one())
    seconds = lock_for(failures)
    locked_until = None
    if seconds > 0:
        locked_until = now + timedelta(seconds=seconds)
        conn.execute(sa.update(T).where(T.c.key == key).values(locked_until=locked_until))
    _purge(conn, forget_before)
    return failures, locked_until


def clear(conn: sa.Connection, keys: Sequence[str]) -> None:
    conn.execute(sa.delete(T).where(T.c.key.in_(list(keys))))


def _purge(conn: sa.Connection, forget_before: datetime) -> None:
    old = sa.select(T.c.key).where(T.c.last_failure < forget_before).limit(PURGE_BATCH)
    if conn.dialect.name == "postgresql":
        old = old.with_for_update(skip_locked=True)
    conn.execute(sa.delete(T).where(T.c.key.in_(old)))
