"""Search: reference parameters with target types index only references to those types.

`patient` on Provenance (`target.where(resolve() is Patient)`), AuditEvent (`entity.what`) and the
others was indexed from every reference on its path, so `Provenance?patient=ServiceRequest/1`
matched. `index_rows` now keeps only references to a target type; this drops the rows written
before that. A reference's type is the segment before its id: `Patient/1`, or an absolute
`https://other/fhir/Patient/1` (kept, as `index_rows` keeps it).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (resource type, parameter) → target types, as in fhir/searchparams.yaml at this revision
TARGETED = {
    ("Consent", "patient"): ("Patient",),
    ("ServiceRequest", "patient"): ("Patient",),
    ("Task", "patient"): ("Patient",),
    ("CarePlan", "patient"): ("Patient",),
    ("Communication", "patient"): ("Patient",),
    ("QuestionnaireResponse", "patient"): ("Patient",),
    ("Provenance", "patient"): ("Patient",),
    ("AuditEvent", "patient"): ("Patient",),
}


def upgrade() -> None:
    for (resource_type, param), targets in TARGETED.items():
        keep = " OR ".join(
            f"value LIKE '{t}/%' OR value LIKE '%/{t}/%'"
            for t in targets  # constants, not input
        )
        op.execute(
            sa.text(
                f"DELETE FROM search_index WHERE resource_type = :type AND param = :param "
                f"AND value IS NOT NULL AND NOT ({keep})"
            ).bindparams(type=resource_type, param=param)
        )


def downgrade() -> None:
    """Nothing to restore: the dropped rows were wrong (a reindex writes what `index_rows` says)."""
