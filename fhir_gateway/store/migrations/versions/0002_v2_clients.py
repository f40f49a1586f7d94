"""HL7 v2 message journal, client registrations, used client-assertion ids.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "v2_messages",
        sa.Column("pk", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("control_id", sa.String(64), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("ack_code", sa.String(4), nullable=True),
        sa.Column("ack", sa.Text, nullable=True),
        sa.Column("focus", sa.String(128), nullable=True),
        sa.UniqueConstraint("direction", "sender", "control_id", name="uq_v2_control_id"),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("organization", sa.String(128), nullable=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("jwks", JSON_DOC, nullable=False),
        sa.Column("scopes", JSON_DOC, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("dev_only", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "used_jtis",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_used_jtis_expires", "used_jtis", ["expires_at"])


def downgrade() -> None:
    op.drop_table("used_jtis")
    op.drop_table("clients")
    op.drop_table("v2_messages")
