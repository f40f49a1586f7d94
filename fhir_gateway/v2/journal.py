"""The inbound journal's protocol: one answer per (sender, MSH-10), stored with the work it answers.

A referral's journal row is written in the referral's own write transaction (`Claim` is the
router's `TransactionHook`): claimed first, its ACK stored last, one commit for all. So an AA is
sent only after the referral and its ACK committed together, and a crash before the commit
leaves nothing behind: the resend is processed as if it were new, exactly once.

Two copies of one message at once: the journal key is unique, so the second claim fails
(on PostgreSQL it waits until the first copy's transaction ends; on SQLite the writers take
turns) and the second copy, after rolling back, answers with the ACK the first stored.

An unanswered claim (a row without ACK) is only left by a gateway version that journalled in
separate transactions: while younger than `stale_after` a copy is answered "busy" (AR), after
that the claim is taken over; the ServiceRequest's `ifNoneExist` on the referral number then
stops a second referral. AE outcomes are journalled (a resend gets the same AE), AR outcomes are
not, so the sender's retry is processed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fhir_gateway.rest.request import FhirResponse
from fhir_gateway.store import v2_journal
from fhir_gateway.store.database import Database
from fhir_gateway.v2.ack import APPLICATION_INTERNAL_ERROR, AckError, build_ack
from fhir_gateway.v2.mapping import Loc
from fhir_gateway.v2.message import Message


@dataclass
class Outcome:
    """What the service decided; `ack` is the ER7 text sent back."""

    ack: str
    code: str
    focus: str | None = None
    duplicate: bool = False
    unauthenticated: bool = False  # refused because the transport named no sender (MLLP closes)


class Lost(Exception):
    """A copy of this message claimed it first (and committed, or took the stale claim over)."""


@dataclass
class Claim:
    """The journal row a new message gets, written inside the transaction that does its work."""

    message: Message
    stale: tuple[int, datetime] | None = None  # an abandoned claim (pk, claimed at) to take over
    answer: Callable[[FhirResponse], Outcome] | None = None  # the outcome a response gets
    pk: int | None = None
    outcome: Outcome | None = None  # stored by `before_commit`: valid once the commit succeeded

    def begin(self, connection: sa.Connection) -> None:
        """Claim the key; `Lost` when a copy holds it (everything then rolls back)."""
        now = _utcnow()
        message = self.message
        try:
            if self.stale is None:
                self.pk = v2_journal.claim_inbound(
                    connection, message.sender, message.control_id, message.message_type[:32], now
                )
            elif v2_journal.take_over_inbound(connection, *self.stale, now):
                self.pk = self.stale[0]
            else:
                raise Lost
        except sa.exc.IntegrityError:
            raise Lost from None

    def before_commit(self, connection: sa.Connection, response: FhirResponse) -> None:
        assert self.answer is not None
        self.record(connection, self.answer(response))

    def record(self, connection: sa.Connection, outcome: Outcome) -> None:
        assert self.pk is not None
        v2_journal.answer_inbound(connection, self.pk, outcome.ack, outcome.code, outcome.focus)
        self.outcome = outcome


@dataclass
class Journal:
    database: Database
    stale_after: timedelta = field(default=timedelta(minutes=2))

    def lookup(self, connection: sa.Connection, message: Message) -> Outcome | Claim:
        """The stored answer of a message seen before ("busy" while a copy is being processed),
        else the claim it will get."""
        row = v2_journal.inbound(connection, message.sender, message.control_id)
        if row is None:
            return Claim(message)
        if row.ack is not None:
            return stored_outcome(row)
        if row.received_at > _utcnow() - self.stale_after:
            return busy(message)
        return Claim(message, stale=(row.pk, row.received_at))

    def settle(self, claim: Claim, outcome: Outcome) -> Outcome:
        """Journal an outcome reached without a referral transaction (AE) in a transaction of
        its own; when a copy was first, its answer is the answer."""
        try:
            with self.database.connection(write=True) as connection:
                claim.begin(connection)
                claim.record(connection, outcome)
        except Lost:
            return self.winner(claim.message)
        return outcome

    def winner(self, message: Message) -> Outcome:
        """The answer of the copy that claimed the message first ("busy" until it has one)."""
        with self.database.connection(write=False) as connection:
            row = v2_journal.inbound(connection, message.sender, message.control_id)
        return stored_outcome(row) if row is not None and row.ack is not None else busy(message)


def stored_outcome(row: Any) -> Outcome:
    return Outcome(row.ack, row.ack_code or "", row.focus, duplicate=True)


def busy(message: Message) -> Outcome:
    error = AckError(
        APPLICATION_INTERNAL_ERROR,
        f"Message {message.control_id} is being processed; send it again later",
        Loc("MSH", 1, 10),
    )
    return Outcome(build_ack(message, "AR", [error]), "AR")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
