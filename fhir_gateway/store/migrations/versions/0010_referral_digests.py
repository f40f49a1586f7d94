"""The canonical digest of each referral as posted, to tell a resend from a reused identifier.

Referrals stored before this migration have no row: a resend of one is answered as before.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

# Registers the table class on SQLModel.metadata wherever the schema is migrated (see 0003).
import fhir_gateway.store.referral_digests  # noqa: F401

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_digests",
        sa.Column("service_request_id", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("referral_digests")
