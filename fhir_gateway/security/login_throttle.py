"""Throttling of interactive sign-in (the operator console): per account and per source address,
with exponential backoff, kept in the database so every replica sees the same counts.

Two keys are charged for every failed sign-in:
  * the *account* as tried from that address (`console:<account>@<address>`): the account is
    the subject tried — `console-password`, or the client an admin token claims to be;
  * the *address* over all accounts (`console-address:<address>`): one address cycling through
    accounts (or forged tokens with ever other client ids) is held up too.

The first `ACCOUNT_FREE` (address: `ADDRESS_FREE`) failures in a row cost nothing; the next one
locks the key for 1 s, and every further failure doubles that, up to 15 minutes. While a key is
locked, a sign-in is refused with the remaining wait *before* the credential is looked at. A
successful sign-in clears its account+address key; counts are forgotten a day after the last
failure. There is deliberately no lock on an account across all addresses: anyone could then
lock the operators out of the console from anywhere (and the password sign-in stays usable
from an address that has not failed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from fhir_gateway.store import login_failures

ACCOUNT_FREE = 5  # failures of one account from one address before the first lock
ADDRESS_FREE = 10  # failures from one address, all accounts together
FIRST_LOCK_SECONDS = 1.0
MAX_LOCK_SECONDS = 15 * 60.0
FORGET_AFTER = timedelta(hours=24)
_MAX_PART = 128


def lock_seconds(failures: int, free: int) -> float:
    """Seconds a key stays locked after its `failures`-th failure in a row: 0 for the free ones,
    then 1 s, 2 s, 4 s … at most 15 minutes."""
    if failures < free:
        return 0.0
    return min(FIRST_LOCK_SECONDS * 2.0 ** min(failures - free, 32), MAX_LOCK_SECONDS)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class LoginThrottle:
    """Reads and charges the sign-in counters on a connection the caller owns, so the AuditEvent
    of the attempt is written in the same transaction. `clock` is injectable (tests move time)."""

    clock: Callable[[], datetime]
    prefix: str = "console"

    def keys(self, account: str, address: str) -> tuple[str, str]:
        account, address = account[:_MAX_PART], address[:64]
        return f"{self.prefix}:{account}@{address}", f"{self.prefix}-address:{address}"

    def wait(self, conn: sa.Connection, account: str, address: str) -> int:
        """Whole seconds until this account may be tried from this address again (0: now)."""
        now = _naive_utc(self.clock())
        until = login_failures.latest_lock(conn, self.keys(account, address), now)
        return 0 if until is None else max(1, math.ceil((until - now).total_seconds()))

    def failed(self, conn: sa.Connection, account: str, address: str) -> int:
        """Charge one failure to both keys; whole seconds of the lock that now applies (0: none)."""
        now = _naive_utc(self.clock())
        forget = now - FORGET_AFTER
        pair, by_address = self.keys(account, address)
        _, account_lock = login_failures.record_failure(
            conn, pair, now, lambda n: lock_seconds(n, ACCOUNT_FREE), forget
        )
        _, address_lock = login_failures.record_failure(
            conn, by_address, now, lambda n: lock_seconds(n, ADDRESS_FREE), forget
        )
        locks = (account_lock, address_lock)
        until = max((u for u in locks if u is not None), default=None)
        return 0 if until is None else max(1, math.ceil((until - now).total_seconds()))

    def succeeded(self, conn: sa.Connection, account: str, address: str) -> None:
        """A good sign-in forgets that account's failures from this address (not the address's)."""
        login_failures.clear(conn, [self.keys(account, address)[0]])
