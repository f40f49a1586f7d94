"""The HL7 v2 message journal (table `v2_messages`) in SQL: claims, ACKs, outbound RRIs.

Inbound rows are keyed by (sender, MSH-10): a duplicate gets the original ACK. The claim
protocol (who may take over a stale claim, which transaction writes the row) is
`v2/journal.py`'s; these functions only read and write rows, as prepared statements on the
caller's connection, so the journal row can share the referral's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from fhir_gateway.store.prepared import Prepared
from fhir_gateway.store.tables import V2MessageRow

V2 = V2MessageRow.__table__


class Inbound(NamedTuple):
    """An inbound message's journal row, as far as the claim protocol reads it."""

    pk: int
    received_at: datetime
    ack: str | None
    ack_code: str | None
    focus: str | None


# prepared: every v2 message runs each of these once (store/prepared.py says why)
_INBOUND = Prepared(
    sa.select(V2.c.pk, V2.c.received_at, V2.c.ack, V2.c.ack_code, V2.c.focus).where(
        V2.c.direction == "in",
        V2.c.sender == sa.bindparam("sender"),
        V2.c.control_id == sa.bindparam("control_id"),
    )
)
_CLAIM = Prepared(
    sa.insert(V2).returning(V2.c.pk),
    keys=("direction", "sender", "control_id", "message_type", "received_at"),
)
_TAKE_OVER = Prepared(
    sa.update(V2)
    .where(V2.c.pk == sa.bindparam("b_pk"), V2.c.ack.is_(None), V2.c.received_at == sa.bindparam("b_claimed"))
    .values(received_at=sa.bindparam("b_now"))
    .returning(V2.c.pk)
)
_ANSWER = Prepared(
    sa.update(V2)
    .where(V2.c.pk == sa.bindparam("b_pk"))
    .values(ack=sa.bindparam("b_ack"), ack_code=sa.bindparam("b_code"), focus=sa.bindparam("b_focus"))
)


def inbound(connection: sa.Connection, sender: str, control_id: str) -> Inbound | None:
    """The journal row of an inbound message, or None."""
    row = _INBOUND.first(connection, {"sender": sender, "control_id": control_id})
    return Inbound(**row) if row is not None else None


def claim_inbound(
    connection: sa.Connection, sender: str, control_id: str, message_type: str, now: datetime
) -> int:
    """Claim a new inbound message (no ACK yet); IntegrityError when a copy holds the key (on
    PostgreSQL this waits until a concurrent copy's transaction ends)."""
    row = _CLAIM.first(
        connection,
        {
            "direction": "in",
            "sender": sender,
            "control_id": control_id,
            "message_type": message_type,
            "received_at": now,
        },
    )
    assert row is not None
    return int(row["pk"])


def take_over_inbound(connection: sa.Connection, pk: int, claimed_at: datetime, now: datetime) -> bool:
    """Take over an unanswered claim as it was read (`claimed_at`); False when another
    process answered or took it over in the meantime."""
    return bool(_TAKE_OVER.rows(connection, {"b_pk": pk, "b_claimed": claimed_at, "b_now": now}))


def answer_inbound(connection: sa.Connection, pk: int, ack: str, ack_code: str, focus: str | None) -> None:
    """Store the ACK of a claimed message (in the transaction that did its work)."""
    _ANSWER.rows(connection, {"b_pk": pk, "b_ack": ack, "b_code": ack_code, "b_focus": focus})


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
