"""`fhir-gateway serve --workers 2` as real processes: /metrics adds up both workers' counters.

Without prometheus-client's multiprocess mode each scrape saw one worker's counters (12, 18,
12, …). Each request here goes over a new connection, so the kernel hands them to both workers;
every scrape must then show the same total, whichever worker answers it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import bearer, free_port
from tests.wor import FHIR_JSON, fresh_bsn, referral_bundle

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200 and len(_workers(proc.pid)) == 2:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("serve --workers 2 did not become ready in 90 s")
    try:
        yield base, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group after a failure
        proc.wait(timeout=10)


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes of serve (not multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _multiproc_dir(pid: int) -> Path:
    """The directory serve made, as the worker processes were started with it."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [value] = [v.partition(b"=")[2] for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(value.decode())


def _counter(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_add_up_over_both_workers(two_workers: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = two_workers
    workers = _workers(proc.pid)
    directory = _multiproc_dir(workers[0])
    assert directory.is_dir() and _multiproc_dir(workers[1]) == directory
    requests = 40
    for _ in range(requests):  # a new connection each: the kernel spreads them over the workers
        assert httpx.get(f"{base}/fhir/metadata", timeout=10).status_code == 200
    referrals = 4
    headers = {**FHIR_JSON, **bearer(base, "praktijk-de-geinoord-his")}
    for i in range(referrals):
        resp = httpx.post(
            f"{base}/fhir", json=referral_bundle(f"MP-{i}", bsn=fresh_bsn()), headers=headers, timeout=30
        )
        assert resp.status_code == 200, resp.text
    # both workers answered some of them: each keeps its counters in a file of its own
    assert {int(f.stem.rpartition("_")[2]) for f in directory.glob("counter_*.db")} == set(workers)
    seen = []
    for _ in range(8):
        text = httpx.get(f"{base}/metrics", timeout=10).text
        metadata = _counter(text, "gateway_http_requests_total", route="/fhir/metadata", status="200")
        accepted = _counter(text, "gateway_referrals_total", outcome="accepted")
        seen.append((metadata, accepted))
        assert _counter(text, "gateway_outbox_pending") >= 0  # the store's figures are there too
        assert "gateway_outbox_dead_letters 0.0" in text
    assert seen == [(requests, referrals)] * 8, seen  # the same sum, whichever worker answered
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert not directory.exists()  # a fresh directory per serve, removed when it ends
