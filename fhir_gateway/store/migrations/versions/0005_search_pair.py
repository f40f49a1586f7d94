"""Search: partial index over the (reference, _lastUpdated) pair rows (`index.LAST_UPDATED_PAIRS`).

`Communication?recipient=…&_lastUpdated=gt…` reads one range of it — the matches only — instead of
every row of the recipient. Resources stored before this revision get their pair rows here.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PAIR_ROWS = sa.text("value IS NOT NULL AND high IS NOT NULL")
PAIRS = {"Communication": ("recipient",), "Task": ("owner",)}  # index.LAST_UPDATED_PAIRS at 0004


def upgrade() -> None:
    # Backfill: the pair rows of resources stored before this revision, from their own
    # reference rows and last_updated (what `index_rows` now writes for them).
    for resource_type, params in PAIRS.items():
        for param in params:
            op.execute(
                sa.text(
                    "INSERT INTO search_index (resource_pk, resource_type, param, value, high) "
                    "SELECT s.resource_pk, s.resource_type, :pair, s.value, r.last_updated "
                    "FROM search_index s JOIN resources r ON r.pk = s.resource_pk "
                    "WHERE s.resource_type = :type AND s.param = :param AND s.value IS NOT NULL "
                    "AND r.deleted = :false"
                ).bindparams(pair=f"_lastUpdated|{param}", type=resource_type, param=param, false=False)
            )
    op.create_index(
        "ix_search_pair",
        "search_index",
        ["resource_type", "param", "value", "high", "resource_pk"],
        sqlite_where=PAIR_ROWS,
        postgresql_where=PAIR_ROWS,
    )


def downgrade() -> None:
    op.drop_index("ix_search_pair", table_name="search_index")
    op.execute(sa.text("DELETE FROM search_index WHERE param LIKE '\\_lastUpdated|%' ESCAPE '\\'"))
