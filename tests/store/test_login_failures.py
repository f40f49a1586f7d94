"""The sign-in failure counters on both backends: counting, locks, reset, forgetting."""

from __future__ import annotations

from datetime import datetime, timedelta

from fhir_gateway.security.login_throttle import LoginThrottle
from fhir_gateway.store import login_failures
from fhir_gateway.store.database import Database

T0 = datetime(2026, 11, 2, 9, 0)


def test_failures_count_lock_and_clear(database: Database) -> None:
    double = lambda n: 0.0 if n < 3 else float(2 ** (n - 3))  # noqa: E731
    forget = T0 - timedelta(days=1)
    with database.connection(write=True) as conn:
        results = [login_failures.record_failure(conn, "k", T0, double, forget) for _ in range(5)]
    assert [n for n, _ in results] == [1, 2, 3, 4, 5]
    assert [u for _, u in results] == [
        None,
        None,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=4),
    ]
    with database.connection(write=False) as conn:
        assert login_failures.latest_lock(conn, ["k", "other"], T0) == T0 + timedelta(seconds=4)
        assert login_failures.latest_lock(conn, ["k"], T0 + timedelta(seconds=4)) is None
        assert login_failures.latest_lock(conn, ["other"], T0) is None
    later = T0 + timedelta(days=2)  # idle past the forget window: counted from one again
    with database.connection(write=True) as conn:
        assert login_failures.record_failure(conn, "k", later, double, later - timedelta(days=1)) == (1, None)
        login_failures.record_failure(conn, "gone", T0, double, forget)
        login_failures.record_failure(conn, "k2", later, double, later - timedelta(days=1))  # purges "gone"
        login_failures.clear(conn, ["k"])
    with database.connection(write=False) as conn:
        keys = {
            r[0] for r in conn.execute(login_failures.T.select().with_only_columns(login_failures.T.c.key))
        }
    assert keys == {"k2"}


def test_throttle_keys_and_waits(database: Database) -> None:
    now = [T0]
    throttle = LoginThrottle(clock=lambda: now[0])
    with database.connection(write=True) as conn:
        waits = [throttle.failed(conn, "console-password", "192.0.2.1") for _ in range(7)]
        assert waits == [0, 0, 0, 0, 1, 2, 4]
        assert throttle.wait(conn, "console-password", "192.0.2.1") == 4
        assert throttle.wait(conn, "console-password", "192.0.2.2") == 0  # another address
        assert throttle.wait(conn, "gateway-admin", "192.0.2.1") == 0  # another account (7 < 10)
        throttle.succeeded(conn, "console-password", "192.0.2.1")
        assert throttle.wait(conn, "console-password", "192.0.2.1") == 0
        assert throttle.failed(conn, "console-password", "192.0.2.1") == 0  # counted from one again
