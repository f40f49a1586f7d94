"""The municipality report's read model: narrow rows per Task, ServiceRequest, QuestionnaireResponse
and feedback Communication (store/report_rows.py), backfilled from the documents already stored
by the same builder the writer uses (reports/read_model.rebuild).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

# Registers the table classes on SQLModel.metadata wherever the schema is migrated (see 0003).
import fhir_gateway.store.report_rows  # noqa: F401

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _owner(name: str) -> sa.Column:
    return sa.Column(name, BIG_ID, sa.ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "report_referrals",
        _owner("task_pk"),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("sr_id", sa.String(64)),
        sa.Column("owner", sa.String(255)),
        sa.Column("requester", sa.String(255)),
        sa.Column("patient_id", sa.String(255)),
        sa.Column("services", JSON, nullable=False),
        sa.Column("place", sa.String(255)),
        sa.Column("status", sa.String(32)),
        sa.Column("outcome", sa.String(32)),
        sa.Column("activities", JSON, nullable=False),
        sa.Column("intake_qr", sa.String(64)),
        sa.Column("closure_qr", sa.String(64)),
        sa.Column("intake_at", sa.DateTime),
        sa.Column("ever_accepted", sa.Boolean, nullable=False),
        sa.Column("last_updated", sa.DateTime, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_report_referrals_sr", "report_referrals", ["sr_id"])
    op.create_table(
        "report_requests",
        _owner("sr_pk"),
        sa.Column("sr_id", sa.String(64), nullable=False),
        sa.Column("authored", sa.DateTime),
        sa.Column("authored_at", sa.DateTime),
        sa.Column("icpc_group", sa.String(8), nullable=False),
    )
    op.create_index("ix_report_requests_id", "report_requests", ["sr_id"], unique=True)
    op.create_index("ix_report_requests_authored", "report_requests", ["authored", "sr_id"])
    op.create_table(
        "report_scores",
        _owner("qr_pk"),
        sa.Column("qr_id", sa.String(64), nullable=False),
        sa.Column("scores", JSON, nullable=False),
    )
    op.create_index("ix_report_scores_id", "report_scores", ["qr_id"], unique=True)
    op.create_table(
        "report_feedback",
        _owner("comm_pk"),
        sa.Column("task_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("comm_id", sa.String(64), nullable=False),
        sa.Column("pushed", sa.Boolean, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
    )
    op.create_index("ix_report_feedback_comm", "report_feedback", ["comm_id"])
    op.create_index("ix_report_feedback_task", "report_feedback", ["task_id"])

    from fhir_gateway.reports.read_model import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    for table in ("report_feedback", "report_scores", "report_requests", "report_referrals"):
        op.drop_table(table)
