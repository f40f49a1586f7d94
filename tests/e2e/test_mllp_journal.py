"""The v2 journal over real MLLP sockets, on SQLite and PostgreSQL: the journal row is written in
the referral's own transaction, so two copies at once, a failure before the commit, resends of
AE outcomes and claims left by an older gateway version must all still give one referral and one
answer per message (v2/journal.py). And messages processed at once still register a new locum
only once (ifNoneExist locks only on a miss)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_gateway.store import v2_journal
from fhir_gateway.v2 import journal
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.mllp import MLLPClient, frame
from tests.e2e.test_mllp import EXAMPLES, Gateway, ack_code, raw_exchange, running_gateway, variant
from tests.wor import fresh_bsn

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(database_url: str) -> Iterator[Gateway]:
    with running_gateway(database_url, idle_timeout=30) as gw:
        yield gw


def journal_row(gateway: Gateway, message: str) -> Any:
    parsed = parse(message)
    with gateway.service.database.connection(write=False) as connection:
        return v2_journal.inbound(connection, parsed.sender, parsed.control_id)


def send_together(port: int, messages: list[str]) -> list[bytes]:
    """Each message on its own connection, all at once."""

    async def one(message: str) -> bytes:
        async with MLLPClient("127.0.0.1", port, timeout=60) as client:
            return await client.send(message)

    async def run() -> list[bytes]:
        return await asyncio.gather(*(one(m) for m in messages))

    return asyncio.run(run())


def _all_looked_up(monkeypatch: pytest.MonkeyPatch, parties: int) -> None:
    """Hold every message after its journal lookup until all of them got there, so their
    referral transactions start together."""
    barrier = threading.Barrier(parties, timeout=30)
    lookup = journal.Journal.lookup

    def lookup_then_wait(self: journal.Journal, connection: Any, message: Any) -> Any:
        found = lookup(self, connection, message)
        barrier.wait()
        return found

    monkeypatch.setattr(journal.Journal, "lookup", lookup_then_wait)


def test_two_copies_at_once_store_one_referral_and_get_the_same_ack(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both copies pass the journal lookup before either claims (a barrier holds them there),
    so both run the referral transaction: the second claim fails on the unique key, rolls the
    second referral back and answers with the first copy's stored ACK."""
    _all_looked_up(monkeypatch, 2)
    winner = journal.Journal.winner
    lost: list[str] = []

    def lost_to_the_winner(self: journal.Journal, message: Any) -> journal.Outcome:
        lost.append(message.control_id)
        return winner(self, message)

    monkeypatch.setattr(journal.Journal, "winner", lost_to_the_winner)
    message = variant("DUP1")
    first, second = send_together(gateway.port, [message, message])
    assert lost == ["BATAU-TDUP1"]  # the race happened: one copy's claim failed on the key
    assert first == second and ack_code(first) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-TDUP1") == 1
    assert gateway.count("Task") == 1
    row = journal_row(gateway, message)
    assert row.ack.encode() == first and row.ack_code == "AA"
    assert row.focus and row.focus.startswith("ServiceRequest/")


def test_referrals_at_once_naming_a_new_locum_register_the_locum_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four patients referred at once by a locum the directory does not know (PRD AGB 01999999):
    each referral's Practitioner ifNoneExist misses at first; only one may create the locum, the
    others must find it once they hold the criteria's lock."""
    _all_looked_up(monkeypatch, 4)
    text = (EXAMPLES / "ref-i12-new-locum.hl7").read_text().replace("\n", "\r")
    messages = [
        text.replace("BATAU-000129", f"LOCUM{i}")
        .replace("REF-2026-0009", f"REF-LOCUM{i}")
        .replace("999911120", fresh_bsn())
        for i in range(4)
    ]
    acks = send_together(gateway.port, messages)
    assert [ack_code(a) for a in acks] == ["AA"] * 4, acks
    assert gateway.count("Practitioner", identifier="http://fhir.nl/fhir/NamingSystem/agb-z|01999999") == 1
    assert gateway.count("ServiceRequest") == 4


def test_many_copies_at_once_give_one_referral_each(gateway: Gateway) -> None:
    messages = [variant(f"M{i}") for i in range(4) for _copy in range(3)]
    acks = send_together(gateway.port, messages)
    by_message: dict[str, set[bytes]] = {}
    for message, ack in zip(messages, acks, strict=True):
        by_message.setdefault(message, set()).add(ack)
    assert all(len(answers) == 1 for answers in by_message.values()), by_message
    assert {ack_code(a) for a in acks} == {"AA"}
    assert gateway.count("ServiceRequest") == 4 and gateway.count("Task") == 4


def test_a_failure_before_the_commit_leaves_nothing_and_the_resend_is_processed_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal row and the referral commit together: when the transaction dies after the
    referral's writes (here: while the ACK is stored), neither is left, the sender gets AR, and
    its resend is processed as new — exactly one referral."""
    record = journal.Claim.record
    calls = {"n": 0}

    def dies_once(self: journal.Claim, connection: Any, outcome: journal.Outcome) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the process died here")
        record(self, connection, outcome)

    monkeypatch.setattr(journal.Claim, "record", dies_once)
    message = variant("CRASH")
    [ack] = raw_exchange(gateway.port, [frame(message)], 1)
    assert ack_code(ack) == "AR"
    assert journal_row(gateway, message) is None
    assert gateway.count("ServiceRequest", identifier="REF-TCRASH") == 0
    [again] = raw_exchange(gateway.port, [frame(message)], 1)
    assert ack_code(again) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-TCRASH") == 1 and gateway.count("Task") == 1
    assert journal_row(gateway, message).ack.encode() == again


@pytest.mark.parametrize("example", ["ref-i12-invalid-bsn.hl7", "ref-i12-postcode-not-covered.hl7"])
def test_an_ae_is_journalled_and_a_resend_gets_it_byte_for_byte(gateway: Gateway, example: str) -> None:
    message = (EXAMPLES / example).read_text().replace("\n", "\r")
    [first] = raw_exchange(gateway.port, [frame(message)], 1)
    [second] = raw_exchange(gateway.port, [frame(message)], 1)
    assert ack_code(first) == "AE" and second == first
    assert journal_row(gateway, message).ack_code == "AE"
    assert gateway.count("ServiceRequest") == 0


def test_an_ar_is_not_journalled(gateway: Gateway) -> None:
    message = variant("AR").replace("|2.5\r", "|2.3\r")
    [ack] = raw_exchange(gateway.port, [frame(message)], 1)
    assert ack_code(ack) == "AR"
    assert journal_row(gateway, message) is None


def _old_claim(gateway: Gateway, message: str, age: timedelta) -> None:
    """An unanswered claim as an older gateway version left it (claimed, then the process died)."""
    parsed = parse(message)
    claimed_at = datetime.now(UTC).replace(tzinfo=None) - age
    with gateway.service.database.connection(write=True) as connection:
        v2_journal.claim_inbound(connection, parsed.sender, parsed.control_id, "REF^I12", claimed_at)


def test_a_fresh_unanswered_claim_is_busy_and_a_stale_one_is_taken_over_once(gateway: Gateway) -> None:
    fresh, stale = variant("FRESH"), variant("STALE")
    _old_claim(gateway, fresh, timedelta(seconds=5))
    _old_claim(gateway, stale, gateway.service.journal.stale_after + timedelta(seconds=5))
    [busy] = raw_exchange(gateway.port, [frame(fresh)], 1)
    assert ack_code(busy) == "AR" and b"is being processed" in busy
    assert journal_row(gateway, fresh).ack is None
    assert gateway.count("ServiceRequest", identifier="REF-TFRESH") == 0
    first, second = send_together(gateway.port, [stale, stale])
    assert ack_code(first) == ack_code(second) == "AA" and first == second
    assert gateway.count("ServiceRequest", identifier="REF-TSTALE") == 1
    assert journal_row(gateway, stale).ack.encode() == first
