"""Search: an index for string parameters' prefix matches.

`Patient?name=jans` is `value LIKE 'jans%'` on the string rows. PostgreSQL runs LIKE on a btree
only under the C collation or with a pattern operator class; under C.UTF-8 or a linguistic
collation the plan read every row of search_index. `ix_search_string` (string rows only, value
with `varchar_pattern_ops`) serves the prefix. SQLite gets the same partial index; it costs
little there (string rows are few: names and addresses).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STRING_ROWS = sa.text("text IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_search_string",
        "search_index",
        ["resource_type", "param", "value", "resource_pk"],
        postgresql_ops={"value": "varchar_pattern_ops"},
        sqlite_where=STRING_ROWS,
        postgresql_where=STRING_ROWS,
    )


def downgrade() -> None:
    op.drop_index("ix_search_string", table_name="search_index")
