"""The outbox as delivery and operators see it; the queue's SQL lives in `store/outbox.py`.

Callers (worker, CLI, admin API, console) keep importing this module: it re-exports the queue
operations and adds what is not SQL — clock conversion and the JSON view of a row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store import outbox as queue
from fhir_gateway.store.outbox import ACTIVE, STATUSES, Claimed, claim, counts, finish, purge, retry

__all__ = [
    "ACTIVE",
    "STATUSES",
    "Claimed",
    "as_dict",
    "claim",
    "counts",
    "finish",
    "list_rows",
    "naive_utc",
    "purge",
    "retry",
]


def naive_utc(moment: datetime) -> datetime:
    """The store keeps naive UTC; `ctx.clock()` gives aware datetimes."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def list_rows(connection: sa.Connection, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest rows (of one status) in the JSON shape of `outbox list` and `GET /admin/outbox`."""
    return [as_dict(r) for r in queue.list_rows(connection, status, limit)]


def as_dict(row: Any) -> dict[str, Any]:
    m = row if isinstance(row, dict) else row._mapping
    return {
        "eventId": m["event_id"],
        "kind": m["kind"],
        "destination": m["destination"],
        "subject": m["subject"],
        "status": m["status"],
        "attempts": m["attempts"],
        "createdAt": m["created_at"].isoformat() + "Z",
        "nextAttemptAt": m["next_attempt_at"].isoformat() + "Z",
        "lastError": m["last_error"],
        "payload": m["payload"],
    }
