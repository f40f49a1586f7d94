"""HL7 v2 ingest speed: parse / map / ACK micro-timings and REF^I12 → ACK over real MLLP sockets.

    python benchmarks/v2_mllp.py [--messages 300] [--connections 8] [--database-url URL]

Each message is a distinct referral (own control id and referral number) through the full path:
MLLP framing → journal claim → parse → map → router transaction (validation, routing, Task) →
ACK → journal. Prints JSON: messages/s and p50/p99 latency from send to ACK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from fhir_gateway import gc_pauses
from fhir_gateway.app import create_app
from fhir_gateway.loading import load_files
from fhir_gateway.security.clients import get_client, load_client_registrations, save_client
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database
from fhir_gateway.v2.ack import build_ack
from fhir_gateway.v2.inbound import check_structure, load_mappings, parse
from fhir_gateway.v2.mllp import MLLPClient, MLLPServer, ServerThread
from fhir_gateway.v2.senders import registered_sender
from fhir_gateway.v2.service import V2Service

ROOT = Path(__file__).resolve().parents[1]
GOOD = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_text().replace("\n", "\r")


def micro(n: int = 500) -> dict[str, float]:
    mapping = load_mappings(ROOT / "mappings")["REF^I12"]
    message = parse(GOOD)

    def per_call_ms(fn, count: int = n) -> float:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        return round((time.perf_counter() - start) / count * 1000, 3)

    return {
        "parse_ms": per_call_ms(lambda: parse(GOOD)),
        "map_ms": per_call_ms(lambda: mapping.apply(message)),
        "ack_ms": per_call_ms(lambda: build_ack(message, "AA")),
        "hl7apy_structure_check_ms": per_call_ms(lambda: check_structure(message), 30),
    }


def bsns(count: int) -> list[str]:
    """`count` 9-digit numbers from 700000000 on that pass the BSN 11-test."""
    found: list[str] = []
    candidate = 700_000_000
    while len(found) < count:
        digits = str(candidate)
        if sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True)) % 11 == 0:
            found.append(digits)
        candidate += 1
    return found


async def drive(port: int, messages: list[str], connections: int) -> list[float]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    latencies: list[float] = []

    async def worker() -> None:
        async with MLLPClient("127.0.0.1", port, timeout=120) as client:
            while not queue.empty():
                message = queue.get_nowait()
                start = time.perf_counter()
                ack = await client.send(message)
                latencies.append(time.perf_counter() - start)
                assert b"MSA|AA|" in ack, ack

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--distinct-patients",
        action="store_true",
        help="a patient (BSN) of its own per message; default: one patient, like the HTTP benchmark",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        Database(url).upgrade()
        app = create_app(Settings(database_url=url, log_level="WARNING"))
        load_files(app.state.router, [ROOT / "examples" / "directory"])
        service = V2Service(app.state.router, "http://bench/fhir")
        # the sender as in production without TLS: Batau-Noord's registration lists loopback
        load_client_registrations(app.state.ctx.database, ROOT / "examples" / "clients")
        batau = get_client(app.state.ctx.database, "praktijk-batau-his")
        assert batau is not None
        save_client(app.state.ctx.database, replace(batau, mllp_addresses=("127.0.0.1/32",)))
        warmup = GOOD.replace("BATAU-000123", "WARMUP").replace("REF-2026-0001", "WARMUP")
        service.handle(warmup, registered_sender(batau, "warm-up"))
        gc_pauses.freeze_startup_heap()  # as `fhir-gateway mllp` does before it serves
        server = MLLPServer(
            host="127.0.0.1", port=0, for_peer=service.for_peer, max_concurrent=service.concurrency
        )  # as `fhir-gateway mllp` serves
        thread = ServerThread(server).start()
        messages = [
            GOOD.replace("BATAU-000123", f"B{i}").replace("REF-2026-0001", f"R{i}")
            for i in range(args.messages)
        ]
        if args.distinct_patients:
            numbers = bsns(len(messages))
            messages = [m.replace("PID|1||999911120", f"PID|1||{n}") for m, n in zip(messages, numbers, strict=True)]
        start = time.perf_counter()
        latencies = asyncio.run(drive(thread.port, messages, args.connections))
        elapsed = time.perf_counter() - start
        thread.stop()
        app.state.ctx.close()
    latencies.sort()
    result = {
        "database": "sqlite" if url.startswith("sqlite") else "postgresql",
        "patients": "distinct" if args.distinct_patients else "one",
        "messages": len(latencies),
        "connections": args.connections,
        "messages_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        **micro(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
