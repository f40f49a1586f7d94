"""Quick throughput check: FHIR creates through a real `fhir-gateway serve` over HTTP.

    python benchmarks/creates.py [--database-url URL] [--requests 2000] [--concurrency 1,10]

Prints requests/s and latency percentiles per concurrency level as a markdown table and writes
JSON next to it (benchmarks/results/creates.json). Numbers, never asserts.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(database_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def patient(i: int) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:bench", "value": str(i)}],
            "name": [{"family": "Bench", "given": [f"P{i}"]}],
            "birthDate": "1970-01-01",
        }
    )


def run(base: str, total: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    client = httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=concurrency))

    def one(i: int) -> None:
        nonlocal errors
        t = time.perf_counter()
        r = client.post(
            "/fhir/Patient", content=patient(i), headers={"content-type": "application/fhir+json"}
        )
        latencies.append(time.perf_counter() - t)
        errors += r.status_code != 201

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    client.close()
    q = statistics.quantiles(latencies, n=100)
    return {
        "concurrency": concurrency,
        "requests": total,
        "errors": errors,
        "rps": round(total / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,10")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    proc, base = start_server(url, args.workers)
    try:
        results = [run(base, args.requests, int(c)) for c in args.concurrency.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    backend = url.split(":")[0]
    print(
        "\n| backend | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {backend} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} |"
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"creates-{backend.split('+')[0]}.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
