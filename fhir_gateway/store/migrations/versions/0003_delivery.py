"""Delivery: subscription state and event log, workflow timers, outbox order index.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

# Registers the table classes on SQLModel.metadata wherever the schema is migrated, so the
# metadata comparison sees them even in a process that never imported the delivery package.
import fhir_gateway.store.delivery_tables  # noqa: F401

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_outbox_subject", "outbox", ["subject", "pk"])
    op.create_table(
        "subscription_state",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("events_since_start", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_seconds", sa.Integer, nullable=True),
        sa.Column("heartbeat_due_at", sa.DateTime, nullable=True),
        sa.Column("last_event_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_subscription_state_heartbeat", "subscription_state", ["heartbeat_due_at"])
    op.create_table(
        "subscription_events",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("event_number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("focus", sa.String(128), nullable=False),
        sa.Column("focus_version", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "timers",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("fired_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.UniqueConstraint("key", name="uq_timers_key"),
    )
    op.create_index("ix_timers_due", "timers", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("timers")
    op.drop_table("subscription_events")
    op.drop_index("ix_subscription_state_heartbeat", "subscription_state")
    op.drop_table("subscription_state")
    op.drop_index("ix_outbox_subject", "outbox")
