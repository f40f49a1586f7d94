"""The HL7 v2 message journal (table `v2_messages`) in SQL: claims, ACKs, outbound RRIs.

Inbound rows are keyed by (sender, MSH-10): a duplicate gets the original ACK. The claim
protocol (who may take over a stale claim, when a claim is released) is `v2/service.py`'s;
these functions only read and write rows. The ORM session is used for the low-volume inbound
path (`Database.session`), Core statements for the worker and the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from fhir_gateway.store.tables import V2MessageRow

V2 = V2MessageRow.__table__


def find_inbound(session: Session, sender: str, control_id: str) -> V2MessageRow | None:
    """The journal row of an inbound message (answered or still being processed)."""
    return session.exec(
        select(V2MessageRow).where(
            V2MessageRow.direction == "in",
            V2MessageRow.sender == sender,
            V2MessageRow.control_id == control_id,
        )
    ).first()


def retake_inbound(session: Session, row: V2MessageRow, now: datetime) -> int:
    """Take over a claim its process abandoned: the row is ours from `now`."""
    row.received_at = now
    session.add(row)
    session.flush()
    assert row.pk is not None
    return row.pk


def add_inbound(session: Session, sender: str, control_id: str, message_type: str, now: datetime) -> int:
    """Claim a new inbound message (no ACK yet); IntegrityError when a concurrent copy was first."""
    row = V2MessageRow(
        direction="in",
        sender=sender,
        control_id=control_id,
        message_type=message_type,
        received_at=now,
    )
    session.add(row)
    session.flush()
    assert row.pk is not None
    return row.pk


def record_ack(session: Session, pk: int, ack: str, ack_code: str, focus: str | None) -> None:
    row = session.get(V2MessageRow, pk)
    if row is not None:
        row.ack = ack
        row.ack_code = ack_code
        row.focus = focus
        session.add(row)


def release_unanswered(session: Session, pk: int) -> None:
    """Drop a claim that got no ACK, so a resend is processed afresh."""
    row = session.get(V2MessageRow, pk)
    if row is not None and row.ack is None:
        session.delete(row)


def latest_inbound_for(connection: sa.Connection, focus: str | None) -> sa.Row[Any] | None:
    """The newest inbound journal row whose referral (`focus`, ServiceRequest/<id>) it created,
    as a Core row (columns in table order)."""
    return connection.execute(
        sa.select(V2MessageRow)
        .where(V2MessageRow.direction == "in", V2MessageRow.focus == focus)
        .order_by(V2MessageRow.pk.desc())
        .limit(1)
    ).first()


def record_outbound(
    connection: sa.Connection,
    *,
    sender: str,
    control_id: str,
    message_type: str,
    sent_at: datetime,
    ack_code: str,
    ack: str,
    focus: str,
) -> None:
    """Journal a message the gateway sent (an RRI^I12) with the ACK it got back."""
    connection.execute(
        sa.insert(V2).values(
            direction="out",
            sender=sender,
            control_id=control_id,
            message_type=message_type,
            received_at=sent_at,
            ack_code=ack_code,
            ack=ack,
            focus=focus,
        )
    )


def refused_inbound(connection: sa.Connection) -> list[tuple[datetime, str, str, str | None, str]]:
    """Inbound messages answered AE or AR, newest first: (received_at, sender, message type,
    ACK code, control id)."""
    stmt = (
        sa.select(V2.c.received_at, V2.c.sender, V2.c.message_type, V2.c.ack_code, V2.c.control_id)
        .where(V2.c.direction == "in", V2.c.ack_code.in_(("AE", "AR")))
        .order_by(V2.c.pk.desc())
    )
    return [tuple(row) for row in connection.execute(stmt)]  # type: ignore[misc]
