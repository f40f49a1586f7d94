"""A worker killed with SIGKILL in the middle of a delivery: the row is delivered after its lease ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from fhir_gateway.store.tables import OutboxRow
from tests.conftest import TEST_TOKEN_KEY
from tests.delivery.conftest import drain, gateway, subscribe, worker
from tests.delivery.receivers import Receiver
from tests.wor import DE_BRUG, load_directory, send_referral

OUT = OutboxRow.__table__


def test_killed_worker_row_is_retried_after_its_lease(sqlite_url: str) -> None:
    receiver = Receiver().start()
    try:
        with gateway(sqlite_url) as gw:
            load_directory(gw)
            sub = subscribe(gw, receiver.url, f"Task?owner={DE_BRUG}")
            drain(worker(gw))  # handshake delivered, subscription active
            receiver.delay = 30.0  # the next delivery hangs in the receiver ...
            send_referral(gw)
            env = {
                **os.environ,
                "GATEWAY_DATABASE_URL": sqlite_url,
                "GATEWAY_TOKEN_KEY": TEST_TOKEN_KEY,
                "GATEWAY_OUTBOX_LEASE_SECONDS": "2",
                "GATEWAY_SUBSCRIPTION_LOOPBACK_HTTP": "1",  # the receiver is on 127.0.0.1
                "GATEWAY_OUTBOX_TIMEOUT_SECONDS": "60",
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "fhir_gateway.cli", "worker", "--interval", "0.1"],
                env=env,
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            database = gw.app.state.ctx.database  # type: ignore[attr-defined]
            subject = f"Subscription/{sub['id']}"

            def status() -> str:
                with database.connection(write=False) as conn:
                    return str(
                        conn.execute(
                            sa.select(OUT.c.status)
                            .where(OUT.c.subject == subject)
                            .order_by(OUT.c.pk.desc())
                            .limit(1)
                        ).scalar_one()
                    )

            deadline = time.monotonic() + 30
            while status() != "delivering" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert status() == "delivering"  # ... while the worker holds it
            proc.send_signal(signal.SIGKILL)  # ... and the worker dies mid-delivery
            proc.wait(timeout=10)
            receiver.delay = 0.0
            time.sleep(2.5)  # the lease runs out
            drain(worker(gw))
            assert status() == "delivered"
            numbers = [
                x for n in receiver.notifications() if n["type"] == "event-notification" for x in n["numbers"]
            ]
            assert 1 in numbers  # delivered at least once, after the dead worker's lease ended
    finally:
        receiver.stop()
