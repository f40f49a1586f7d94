"""Client registrations for HL7 v2 senders: the facilities (MSH-4) a client may send as, and
what ties an MLLP connection to it (certificate fingerprints, source addresses).

Three nullable JSON lists on `clients` (NULL reads as an empty list): existing registrations
keep working and send no v2 until they are given facilities (`clients add`/`load`).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
COLUMNS = ("v2_facilities", "mllp_certificates", "mllp_addresses")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("clients", sa.Column(name, JSON_DOC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:  # SQLite drops columns by copying the table
        for name in reversed(COLUMNS):
            batch.drop_column(name)
