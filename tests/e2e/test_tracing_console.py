"""`OTEL_TRACES_EXPORTER=console` on a real `fhir-gateway serve`: the standard variable turns
tracing on, spans are printed, and the request's log line names the same trace. Without the
variable (test_serve.py, test_loop_http.py) no log line carries a trace id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import bearer, free_port

pytestmark = pytest.mark.e2e


def test_console_exporter_prints_spans_with_the_logged_trace_id(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_LOG_LEVEL": "INFO",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "gateway-under-test",
    }
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"  # files: a full pipe would block it
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(f"serve did not become ready: {stderr.read_text()[-3000:]}")
        caller = "00f067aa0ba902b7"
        traceparent = f"00-4bf92f3577b34da6a3ce929d0e0e4736-{caller}-01"  # the caller's trace (W3C)
        resp = httpx.get(
            f"{base}/fhir/Organization", headers={**bearer(base), "traceparent": traceparent}, timeout=10
        )
        assert resp.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    spans = _spans(stdout.read_text())
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert servers, {s["name"] for s in spans}
    [server] = [s for s in servers if s["name"] == "GET /fhir/Organization"]  # our route label
    assert server["kind"] == "SpanKind.SERVER" and server["parent_id"] == f"0x{caller}"
    assert server["resource"]["attributes"]["service.name"] == "gateway-under-test"
    trace_id = server["context"]["trace_id"]
    assert trace_id == "0x4bf92f3577b34da6a3ce929d0e0e4736"  # continued from the caller
    sql = [s for s in spans if s["context"]["trace_id"] == trace_id and s["attributes"].get("db.system")]
    assert sql  # SQL statements under the request
    lines = [json.loads(x) for x in stderr.read_text().splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x.get("route") == "/fhir/Organization"]
    assert line["trace_id"] == trace_id.removeprefix("0x")


def _spans(stdout: str) -> list[dict[str, object]]:
    """The console exporter's output: one indented JSON object per span."""
    decoder = json.JSONDecoder()
    spans, i = [], 0
    while (start := stdout.find("{", i)) != -1:
        obj, i = decoder.raw_decode(stdout, start)
        spans.append(obj)
    return spans
