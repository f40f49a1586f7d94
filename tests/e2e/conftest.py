"""Shared e2e fixtures: `fhir-gateway serve` as a real subprocess on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from fhir_gateway.security.authn import make_client_assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"server exited early: {proc.stdout.read().decode() if proc.stdout else ''}")
    else:
        proc.kill()
        pytest.fail("server did not become ready in 60 s")
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def bearer(base: str, client_id: str = "gateway-admin") -> dict[str, str]:
    """An access token the way a real client gets one: SMART backend services, a client
    assertion signed with the client's (dev-only, example) private key."""
    key_file = (
        Path(__file__).resolve().parents[2] / "examples" / "clients" / f"{client_id}.dev-only.private.jwk"
    )
    assertion = make_client_assertion(client_id, orjson.loads(key_file.read_bytes()), f"{base}/auth/token")
    resp = httpx.post(
        f"{base}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": "system/*.cruds",
        },
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
