"""Quick throughput check through a real `fhir-gateway serve` over HTTP, with real tokens.

    python benchmarks/creates.py [--kind patient|referral] [--database-url URL] [--requests 2000]
                                 [--concurrency 1,10]

`patient`: a plain create. `referral`: the whole pipeline (a transaction Bundle with Patient,
Consent and ServiceRequest → validate, route, map, store SR + Task + CarePlan + Provenance +
AuditEvent, compartments) as the GP practice client.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(database_url: str, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
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


def patient(i: int) -> tuple[str, bytes]:
    from tests.wor import patient as wor_patient

    body = wor_patient()
    body["identifier"].append({"system": "urn:bench", "value": str(i)})
    return "/fhir/Patient", orjson.dumps(body)


def referral(i: int) -> tuple[str, bytes]:
    from tests.wor import referral_bundle

    return "/fhir", orjson.dumps(referral_bundle(f"BENCH-{i}-{time.time_ns()}"))


def run(base: str, total: int, concurrency: int, make: Any, token: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    client = httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=concurrency))
    headers = {"content-type": "application/fhir+json", "authorization": f"Bearer {token}"}

    def one(i: int) -> None:
        nonlocal errors
        path, body = make(i)
        t = time.perf_counter()
        r = client.post(path, content=body, headers=headers)
        latencies.append(time.perf_counter() - t)
        errors += r.status_code not in (200, 201)

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
    parser.add_argument("--kind", choices=("patient", "referral"), default="patient")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    from fhir_gateway.security.tokens import generate_gateway_key

    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": url,
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_TOKEN_KEY": orjson.dumps(generate_gateway_key().as_dict(private=True)).decode(),
    }
    if not url.startswith("sqlite"):
        subprocess.run(
            [sys.executable, "-m", "fhir_gateway.cli", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [sys.executable, "-m", "fhir_gateway.cli", "load", "examples/directory"],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fhir_gateway.cli",
                "clients",
                "load",
                "--allow-dev-only",
                "examples/clients",
            ],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    proc, base = start_server(url, args.workers, env)
    client_id = "praktijk-de-geinoord-his" if args.kind == "referral" else "gateway-admin"
    token = subprocess.run(
        [sys.executable, "-m", "fhir_gateway.cli", "token", client_id],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    make = referral if args.kind == "referral" else patient
    try:
        results = [run(base, args.requests, int(c), make, token) for c in args.concurrency.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    backend = url.split(":")[0] + f" {args.kind}"
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
    (out / f"creates-{args.kind}-{url.split(':')[0].split('+')[0]}.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
