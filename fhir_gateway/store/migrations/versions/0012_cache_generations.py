"""A generation counter per cached resource type, raised by every write of that type: the key
of the app's cross-transaction caches (directory, Subscriptions), read in one lookup instead of
counting the stored resources of those types on every transaction.

An empty table is correct: a counter appears with the first write of its type after the
upgrade, and each process builds its caches afresh when it starts.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

# Registers the table class on SQLModel.metadata wherever the schema is migrated (see 0003).
import fhir_gateway.store.cache_generations  # noqa: F401

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_generations",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cache_generations")
