"""Initial schema: resources, history, search index, outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", JSON_DOC, nullable=False),
        sa.UniqueConstraint("resource_type", "id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["resource_type", "last_updated", "pk"])

    op.create_table(
        "resource_history",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", JSON_DOC, nullable=False),
        sa.UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
    )
    op.create_index("ix_history_type_updated", "resource_history", ["resource_type", "last_updated", "pk"])
    op.create_index("ix_history_updated", "resource_history", ["last_updated", "pk"])

    op.create_table(
        "search_index",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("resource_pk", BIG_ID, sa.ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("value", sa.String(255), nullable=True),
        sa.Column("text", sa.String(255), nullable=True),
        sa.Column("low", sa.DateTime, nullable=True),
        sa.Column("high", sa.DateTime, nullable=True),
    )
    op.create_index("ix_search_value", "search_index", ["resource_type", "param", "value", "resource_pk"])
    op.create_index("ix_search_date", "search_index", ["resource_type", "param", "low", "high"])
    op.create_index("ix_search_resource", "search_index", ["resource_pk"])

    op.create_table(
        "outbox",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("destination", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.UniqueConstraint("event_id", name="uq_outbox_event"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("search_index")
    op.drop_table("resource_history")
    op.drop_table("resources")
