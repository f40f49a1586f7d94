"""The database tables: current resources, their history, search index rows, the outbox.

The schema itself is created by the migrations in `store/migrations/`; these classes must
describe the same tables (a test compares them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSON on SQLite, jsonb on PostgreSQL (indexable, and the reports may query into it).
JsonDocument = sa.JSON().with_variant(JSONB(), "postgresql")
PAIR_ROWS = sa.text("value IS NOT NULL AND high IS NOT NULL")
STRING_ROWS = sa.text("text IS NOT NULL")  # only string parameters keep the text as written
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class ResourceRow(SQLModel, table=True):
    """The current version of every resource (deleted ones stay, flagged)."""

    __tablename__ = "resources"
    __table_args__ = (
        sa.UniqueConstraint("resource_type", "id", name="uq_resources_type_id"),
        sa.Index("ix_resources_type_updated", "resource_type", "last_updated", "pk"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    resource_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    deleted: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    content: dict[str, Any] = Field(sa_column=sa.Column(JsonDocument, nullable=False))


class HistoryRow(SQLModel, table=True):
    """Every version ever written, including deletions (method DELETE, content of the last version)."""

    __tablename__ = "resource_history"
    __table_args__ = (
        sa.UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
        sa.Index("ix_history_type_updated", "resource_type", "last_updated", "pk"),
        sa.Index("ix_history_updated", "last_updated", "pk"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    resource_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    method: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))
    deleted: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    content: dict[str, Any] = Field(sa_column=sa.Column(JsonDocument, nullable=False))


class SearchIndexRow(SQLModel, table=True):
    """One searchable value of one current resource, produced from `fhir/searchparams.yaml`.

    token: system + value (code); reference: value "Type/id"; string: value normalised
    (lower case, no accents) and text as written; date: low/high of the covered instant range.
    """

    __tablename__ = "search_index"
    __table_args__ = (
        sa.Index("ix_search_value", "resource_type", "param", "value", "resource_pk"),
        sa.Index(
            "ix_search_date",
            "resource_type",
            "param",
            "low",
            "high",
            sqlite_where=sa.text("low IS NOT NULL"),  # date rows only (migration 0004)
            postgresql_where=sa.text("low IS NOT NULL"),
        ),
        sa.Index("ix_search_resource", "resource_pk"),
        # only the (reference, _lastUpdated) pair rows of `index.LAST_UPDATED_PAIRS` have a value and
        # a high (and no low, so they stay out of ix_search_date)
        sa.Index(
            "ix_search_pair",
            "resource_type",
            "param",
            "value",
            "high",
            "resource_pk",
            sqlite_where=PAIR_ROWS,
            postgresql_where=PAIR_ROWS,
        ),
        # string searches are prefix matches (`value LIKE 'jans%'`); under a linguistic collation
        # (C.UTF-8 included) PostgreSQL can run LIKE on a btree only with a pattern operator class
        # (migration 0007); without it `Patient?name=` read every index row of the table
        sa.Index(
            "ix_search_string",
            "resource_type",
            "param",
            "value",
            "resource_pk",
            postgresql_ops={"value": "varchar_pattern_ops"},
            sqlite_where=STRING_ROWS,
            postgresql_where=STRING_ROWS,
        ),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    resource_pk: int = Field(
        sa_column=sa.Column(BigId, sa.ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False)
    )
    resource_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    system: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    value: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    text: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    low: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    high: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))


class OutboxRow(SQLModel, table=True):
    """A notification or delivery, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("event_id", name="uq_outbox_event"),
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    event_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))  # rest-hook | mllp | ...
    destination: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    subject: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    payload: dict[str, Any] = Field(sa_column=sa.Column(JsonDocument, nullable=False))
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    next_attempt_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class V2MessageRow(SQLModel, table=True):
    """Journal of HL7 v2 messages: inbound ones by control id (duplicates get the original ACK)."""

    __tablename__ = "v2_messages"
    __table_args__ = (sa.UniqueConstraint("direction", "sender", "control_id", name="uq_v2_control_id"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    direction: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))  # in | out
    sender: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))  # MSH-3^MSH-4
    control_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))  # MSH-10
    message_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    ack_code: str | None = Field(default=None, sa_column=sa.Column(sa.String(4), nullable=True))
    ack: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    focus: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))


class ClientRow(SQLModel, table=True):
    """A registered system client (SMART Backend Services): who it is, what it may ask for."""

    __tablename__ = "clients"

    client_id: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    organization: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    role: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))  # gp-practice | welfare-org | admin
    jwks: dict[str, Any] = Field(sa_column=sa.Column(JsonDocument, nullable=False))
    scopes: list[str] = Field(sa_column=sa.Column(JsonDocument, nullable=False))
    active: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False))
    dev_only: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
    # HL7 v2 senders (migration 0009): MSH-4 values, MLLP certificate fingerprints and addresses
    v2_facilities: list[str] | None = Field(default=None, sa_column=sa.Column(JsonDocument, nullable=True))
    mllp_certificates: list[str] | None = Field(
        default=None, sa_column=sa.Column(JsonDocument, nullable=True)
    )
    mllp_addresses: list[str] | None = Field(default=None, sa_column=sa.Column(JsonDocument, nullable=True))


class UsedJtiRow(SQLModel, table=True):
    """Client-assertion ids already seen, kept until they expire, so a replay is refused."""

    __tablename__ = "used_jtis"
    __table_args__ = (sa.Index("ix_used_jtis_expires", "expires_at"),)

    client_id: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    jti: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    expires_at: datetime = Field(sa_column=sa.Column(sa.DateTime, nullable=False))
