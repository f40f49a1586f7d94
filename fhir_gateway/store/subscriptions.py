"""Subscription state in SQL: the durable event counter, the event log, heartbeats, the list.

What a Subscription means (criteria, channel, content mode, when a heartbeat is due) is decided
in `workflow/subscriptions.py`; these functions take plain values. Tables: `delivery_tables`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fhir_gateway.store.delivery_tables import SubscriptionEventRow, SubscriptionStateRow
from fhir_gateway.store.prepared import Prepared
from fhir_gateway.store.tables import ResourceRow

STATE = SubscriptionStateRow.__table__
EVENTS = SubscriptionEventRow.__table__

# Every write asks for the Subscriptions (once per transaction): a prepared statement.
_SUBSCRIPTIONS = Prepared(
    sa.select(ResourceRow.content).where(
        ResourceRow.resource_type == "Subscription", ResourceRow.deleted.is_(False)
    )
)


def subscription_contents(connection: sa.Connection) -> list[dict[str, Any]]:
    """The content of every Subscription that is not deleted."""
    return [row["content"] for row in _SUBSCRIPTIONS.rows(connection, {})]


def ensure_state(
    connection: sa.Connection, subscription_id: str, heartbeat: int | None, heartbeat_due: datetime | None
) -> None:
    """Create the counter row once (insert-or-ignore works on both dialects) and keep the
    heartbeat settings current."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(STATE).values(
        subscription_id=subscription_id, events_since_start=0, heartbeat_seconds=heartbeat
    )
    connection.execute(insert.on_conflict_do_nothing(index_elements=["subscription_id"]))
    connection.execute(
        sa.update(STATE)
        .where(STATE.c.subscription_id == subscription_id)
        .values(heartbeat_seconds=heartbeat, heartbeat_due_at=heartbeat_due)
    )


def count_event(
    connection: sa.Connection, subscription_id: str, now: datetime, heartbeat_due: datetime | None
) -> int | None:
    """Add one to the counter and return the new number (None: no counter row yet). The UPDATE
    locks the row until commit, so numbers follow commit order on any number of replicas."""
    number = connection.execute(
        sa.update(STATE)
        .where(STATE.c.subscription_id == subscription_id)
        .values(
            events_since_start=STATE.c.events_since_start + 1,
            last_event_at=now,
            heartbeat_due_at=heartbeat_due,
        )
        .returning(STATE.c.events_since_start)
    ).scalar()
    return None if number is None else int(number)


def record_event(
    connection: sa.Connection,
    subscription_id: str,
    number: int,
    event_id: str,
    focus: str,
    version: int,
    now: datetime,
) -> None:
    connection.execute(
        sa.insert(EVENTS).values(
            subscription_id=subscription_id,
            event_number=number,
            event_id=event_id,
            focus=focus,
            focus_version=version,
            occurred_at=now,
        )
    )


def events_since_start(connection: sa.Connection, subscription_id: str) -> int:
    value = connection.execute(
        sa.select(STATE.c.events_since_start).where(STATE.c.subscription_id == subscription_id)
    ).scalar()
    return int(value or 0)


def state_error(connection: sa.Connection, subscription_id: str) -> str | None:
    return connection.execute(
        sa.select(STATE.c.last_error).where(STATE.c.subscription_id == subscription_id)
    ).scalar()


def set_state_error(connection: sa.Connection, subscription_id: str, error: str | None) -> None:
    connection.execute(
        sa.update(STATE).where(STATE.c.subscription_id == subscription_id).values(last_error=error)
    )


def stored_events(
    connection: sa.Connection, subscription_id: str, since: int, until: int | None
) -> list[Any]:
    """The event log from `since` (to `until`), in event-number order."""
    stmt = (
        sa.select(EVENTS)
        .where(EVENTS.c.subscription_id == subscription_id, EVENTS.c.event_number >= since)
        .order_by(EVENTS.c.event_number)
    )
    if until is not None:
        stmt = stmt.where(EVENTS.c.event_number <= until)
    return list(connection.execute(stmt).all())


def claim_due_heartbeats(connection: sa.Connection, now: datetime, limit: int = 100) -> list[str]:
    """Ids of subscriptions whose heartbeat is due, locked for this transaction (other workers
    skip them)."""
    return list(
        connection.execute(
            sa.select(STATE.c.subscription_id)
            .where(STATE.c.heartbeat_due_at.is_not(None), STATE.c.heartbeat_due_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )


def set_heartbeat_due(connection: sa.Connection, subscription_id: str, due: datetime | None) -> None:
    connection.execute(
        sa.update(STATE).where(STATE.c.subscription_id == subscription_id).values(heartbeat_due_at=due)
    )
