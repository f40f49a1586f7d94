"""Failed console sign-ins per account and address, shared by the replicas (login throttling).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

# Registers the table class on SQLModel.metadata wherever the schema is migrated (see 0003).
import fhir_gateway.store.login_failures  # noqa: F401

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure", sa.DateTime, nullable=False),
        sa.Column("locked_until", sa.DateTime, nullable=True),
    )
    op.create_index("ix_login_failures_last", "login_failures", ["last_failure"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_last", table_name="login_failures")
    op.drop_table("login_failures")
