"""Outbox throughput: N fhir-push rows over S subjects, delivered to a loopback HTTP receiver.

python benchmarks/outbox.py [DATABASE_URL] [--rows 2000] [--subjects 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from fhir_gateway.delivery import outbox
from fhir_gateway.delivery.worker import Worker
from fhir_gateway.settings import Settings
from fhir_gateway.store.tables import OutboxRow
from fhir_gateway.workflow.context import GatewayContext
from tests.delivery.receivers import Receiver


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default=f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    ctx = GatewayContext.create(Settings(database_url=args.url))
    ctx.database.upgrade()
    receiver = Receiver().start()
    with ctx.database.connection(write=True) as conn:
        conn.execute(sa.delete(OutboxRow.__table__))
        repo = ctx.repository(conn)
        comm = repo.create({"resourceType": "Communication", "status": "completed"})
        for i in range(args.rows):
            repo.enqueue(
                "fhir-push",
                receiver.url,
                {"communication": comm.reference, "version": 1},
                subject=f"Organization/p{i % args.subjects}",
            )
    workers = [Worker(ctx, batch=50, run_timers=False) for _ in range(args.workers)]
    stop = threading.Event()
    started = time.perf_counter()
    threads = [threading.Thread(target=w.run_forever, args=(stop, 0.01)) for w in workers]
    for t in threads:
        t.start()
    while True:
        with ctx.database.connection(write=False) as conn:
            if outbox.counts(conn).get("delivered", 0) >= args.rows:
                break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join()
    print(
        f"{ctx.database.engine.dialect.name}: {args.rows} rows, {args.workers} worker(s): "
        f"{elapsed:.2f} s = {args.rows / elapsed:.0f} rows/s; duplicates at receiver: {receiver.duplicates()}"
    )
    receiver.stop()
    ctx.close()


if __name__ == "__main__":
    main()
