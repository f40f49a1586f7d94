"""Shared pieces for the benchmarks: databases, a real `fhir-gateway serve`, tokens, the load client.

Numbers only: nothing here asserts on timings.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GP_CLIENT = "praktijk-de-geinoord-his"
COACH_CLIENT = "welzijn-de-brug-cms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str, capture: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fhir_gateway.cli", *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if capture else ""


def gateway_env(database_url: str) -> dict[str, str]:
    from fhir_gateway.security.tokens import generate_gateway_key

    return {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_TOKEN_KEY": orjson.dumps(generate_gateway_key().as_dict(private=True)).decode(),
        # The limiter stays in the request path (its cost is measured) with a budget above what one
        # load client sends: the default 200 req/s per client is reached on a fast box, and a
        # benchmark or a fault test that gets 429s measures the limiter, not what it is for
        # (the limiter itself is tested in tests/api/test_hostile.py).
        "GATEWAY_RATE_LIMIT_PER_SECOND": "1000000",
        "GATEWAY_RATE_LIMIT_BURST": "1000000",
    }


@contextmanager
def postgres_database(prefix: str = "bench") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def postgres_available() -> bool:
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


def prepare_database(env: dict[str, str]) -> None:
    """PostgreSQL is not seeded by `serve` (examples only go into an empty embedded database)."""
    if env["GATEWAY_DATABASE_URL"].startswith("sqlite"):
        return
    cli(env, "db", "upgrade")
    cli(env, "load", "examples/directory")
    cli(env, "clients", "load", "--allow-dev-only", "examples/clients")


class Server:
    """`fhir-gateway serve` (or any uvicorn command) as a subprocess on a free port."""

    def __init__(self, env: dict[str, str], argv: list[str] | None = None, ready_path: str = "/readyz"):
        self.env = env
        self.port = free_port()
        self.argv = argv or [
            sys.executable,
            "-m",
            "fhir_gateway.cli",
            "serve",
            "--port",
            str(self.port),
            "--no-worker",
        ]
        self.argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.ready_path = ready_path
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> Server:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early: {self.argv}")
            try:
                if httpx.get(self.base + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def token(env: dict[str, str], client_id: str) -> str:
    """An access token minted locally (`fhir-gateway token`): lives at most 5 minutes, so mint
    one per measurement."""
    return cli(env, "token", client_id, capture=True)


def referral_body(i: int, tag: str = "BENCH", *, own_patient: bool = False) -> bytes:
    """A referral Bundle with a distinct referral id; all for one patient (the default, as every
    run since 2026-12-01) or each for a patient of its own (`own_patient`): one patient makes
    every PostgreSQL transaction wait for the Patient's ifNoneExist lock of the one before."""
    from tests.wor import fresh_bsn, referral_bundle

    extra = {"bsn": fresh_bsn()} if own_patient else {}
    return orjson.dumps(referral_bundle(f"{tag}-{i}-{time.time_ns()}", **extra))


def percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        v = round(latencies[0] * 1000, 2) if latencies else 0.0
        return {"p50_ms": v, "p95_ms": v, "p99_ms": v}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def load(
    base: str,
    path: str,
    total: int,
    concurrency: int,
    make_body: Callable[[int], bytes],
    headers: dict[str, str],
    *,
    method: str = "POST",
    warmup: int = 10,
) -> dict[str, Any]:
    """The one load client for every target (gateway, ceilings, peer): threads + httpx keep-alive.
    The same client on the same 2-core box as the server, so ratios matter more than absolutes."""
    client = httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=concurrency))
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    latencies: list[float] = []
    bodies = [make_body(i) for i in range(total + warmup)] if method == "POST" else []

    def one(i: int, record: bool = True) -> None:
        t = time.perf_counter()
        try:
            r = client.request(method, path, content=bodies[i] if bodies else None, headers=headers)
            code = r.status_code
        except httpx.HTTPError:
            code = -1
        dt = time.perf_counter() - t
        if record:
            with lock:
                latencies.append(dt)
                statuses[code] = statuses.get(code, 0) + 1

    for i in range(warmup):
        one(total + i, record=False)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    client.close()
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    return {
        "concurrency": concurrency,
        "requests": total,
        "errors": total - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rps": round(total / elapsed, 1),
        **percentiles(latencies),
    }


def search_all(
    client: httpx.Client, url: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every match of a search, following `next` links (the checks after a load or fault run)."""
    out: list[dict[str, Any]] = []
    next_url: str | None = url
    query: dict[str, str] | None = {"_count": "1000", **(params or {})}
    while next_url:
        r = client.get(next_url, params=query, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"{next_url}: {r.status_code} {r.text[:300]}")
        bundle = r.json()
        out.extend(
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"
        )
        next_url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        query = None
    return out


def fhir_headers(tok: str | None = None) -> dict[str, str]:
    h = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
    if tok:
        h["authorization"] = f"Bearer {tok}"
    return h
