"""Tables for durable delivery: subscription state and event log, workflow timers.

Kept apart from `tables.py` (another team owns it) but on the same `SQLModel.metadata`, so the
migration test compares them too. Migration: `0003_delivery`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from fhir_gateway.store.tables import BigId, OutboxRow, SQLModel

# Delivery order is per `subject` (a subscription or a practice): the worker asks "is there an
# earlier undelivered row of this subject?" for every candidate, so that must be an index lookup.
OUTBOX_SUBJECT_INDEX = sa.Index("ix_outbox_subject", OutboxRow.__table__.c.subject, OutboxRow.__table__.c.pk)


class SubscriptionStateRow(SQLModel, table=True):
    """Per Subscription: the durable event counter (eventsSinceSubscriptionStart) and heartbeat.

    The counter row is locked while an event is numbered, so event numbers of one subscription
    follow commit order on every replica."""

    __tablename__ = "subscription_state"
    __table_args__ = (sa.Index("ix_subscription_state_heartbeat", "heartbeat_due_at"),)

    subscription_id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    events_since_start: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    heartbeat_seconds: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    heartbeat_due_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    last_event_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class SubscriptionEventRow(SQLModel, table=True):
    """Every numbered event of a subscription: what `$events` replays after the outbox is purged."""

    __tablename__ = "subscription_events"

    subscription_id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    event_number: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    event_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    focus: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))  # Type/id
    focus_version: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    occurred_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))


class TimerRow(SQLModel, table=True):
    """A workflow deadline (intake overdue, trajectory end, auto-close) due at a moment.

    `key` is unique (kind + target), so scheduling twice is harmless; a timer fires in the same
    transaction that marks it fired, so two workers cannot both fire it."""

    __tablename__ = "timers"
    __table_args__ = (
        sa.UniqueConstraint("key", name="uq_timers_key"),
        sa.Index("ix_timers_due", "status", "due_at"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    key: str = Field(sa_column=sa.Column(sa.String(160), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    target: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))  # Task/<id>
    due_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    fired_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
