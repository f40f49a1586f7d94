"""Search index: the date index covers date rows only (partial index WHERE low IS NOT NULL).

Every index row went into ix_search_date, although only date parameters have low/high: a
referral's ~70 index rows dirtied ~55 scattered leaf pages of that index for ~8 date values.
Date conditions (low/high compared with a value) imply `low IS NOT NULL`, so SQLite and
PostgreSQL still choose the partial index for them.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DATE_ROWS = sa.text("low IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_search_date", table_name="search_index")
    op.create_index(
        "ix_search_date",
        "search_index",
        ["resource_type", "param", "low", "high"],
        sqlite_where=_DATE_ROWS,
        postgresql_where=_DATE_ROWS,
    )


def downgrade() -> None:
    op.drop_index("ix_search_date", table_name="search_index")
    op.create_index("ix_search_date", "search_index", ["resource_type", "param", "low", "high"])
