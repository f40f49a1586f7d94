"""A multi-process deployment for tests: `fhir-gateway` processes (the console script of this
environment) on one private PostgreSQL database, their logs in files, and a teardown that kills
every process it started, whatever happened.

Used by tests/e2e/test_deployment.py. Every wait has a deadline, so a hung process fails the test
instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.mllp import FS, VT, frame
from tests.conftest import ADMIN_PG_URL, _pg_admin_engine

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sysconfig.get_path("scripts")) / "fhir-gateway"


@contextmanager
def private_postgres() -> Iterator[str]:
    """An empty database of its own on the test PostgreSQL (not migrated: the test runs
    `fhir-gateway db upgrade` like an operator would), dropped afterwards."""
    admin = _pg_admin_engine()
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI but {ADMIN_PG_URL} does not answer")
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_PG_URL} (set GATEWAY_TEST_POSTGRES_URL)")
    name = f"gw_deploy_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """`fhir-gateway` commands with one environment; output of each in `logs/<name>.log` (a file,
    not a pipe: a process never blocks on a full pipe nobody reads)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        if not SCRIPT.exists():
            pytest.fail(f"the fhir-gateway console script is not installed at {SCRIPT} (pip install -e .)")
        self.env = {**os.environ, **env}
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, *args: str, timeout: float = 120) -> str:
        """One command to its end; its output, or the test fails with it."""
        done = subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            cwd=self.logs,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        output = done.stdout.decode("utf-8", "replace")
        assert done.returncode == 0, f"fhir-gateway {' '.join(args)} exited {done.returncode}:\n{output}"
        return output

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                [str(SCRIPT), *args],
                env=self.env,
                cwd=self.logs,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to the test's terminal does not reach it twice
            )
        self.running[name] = proc
        return proc

    def finish(self, name: str, timeout: float = 120) -> str:
        """Wait for a command started with `start` to end; its output, or the test fails with it."""
        proc = self.running[name]
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not end in {timeout:.0f} s:\n{self.log(name)[-4000:]}")
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{self.log(name)[-4000:]}"
        return self.log(name)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text("utf-8", "replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown handler, no graceful close of connections or transactions."""
        proc = self.running[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def alive(self, name: str) -> None:
        proc = self.running[name]
        assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)[-4000:]}"

    def close(self) -> None:
        """SIGTERM to all, then SIGKILL to any still there after 10 s."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def wait_http_ready(self, name: str, base: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive(name)
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{name} not ready at {base} after {timeout:.0f} s:\n{self.log(name)[-4000:]}")

    def wait_listening(self, name: str, port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive(name)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{name} not listening on {port} after {timeout:.0f} s:\n{self.log(name)[-4000:]}")


def directory_with_endpoints(target: Path, fhir_feedback: str, mllp_feedback: str) -> Path:
    """examples/directory with the two practices' feedback endpoints pointing at the test's
    receivers (De Geinoord: FHIR push; Batau-Noord: RRI^I12 over MLLP)."""
    bundle = json.loads((ROOT / "examples" / "directory" / "directory.json").read_text())
    addresses = {"praktijk-de-geinoord-fhir": fhir_feedback, "praktijk-batau-mllp": mllp_feedback}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Endpoint" and resource["id"] in addresses:
            resource["address"] = addresses.pop(resource["id"])
    assert not addresses, f"endpoints not in the example directory: {addresses}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "directory.json").write_text(json.dumps(bundle))
    return target


def clients_with_mllp_address(target: Path) -> Path:
    """examples/clients, with Batau-Noord's HIS identified over MLLP by the loopback address."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / "examples" / "clients").glob("*.client.json"):
        shutil.copy(path, target / path.name)
    batau = target / "praktijk-batau-his.client.json"
    registration: dict[str, Any] = json.loads(batau.read_text())
    registration["mllp_addresses"] = ["127.0.0.0/8"]
    batau.write_text(json.dumps(registration))
    return target


def mllp_send(port: int, message: str, timeout: float = 30) -> str:
    """One REF^I12 over its own TCP connection; the ACK's MSA-1 (AA, AE, AR). Raises OSError
    when the connection fails or closes before an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame(message))
        buffer = b""
        while FS not in buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed without an ACK")
            buffer += data
    ack = buffer[buffer.index(VT) + 1 : buffer.index(FS)]
    return str(parse(ack).segment("MSA").value(1))  # type: ignore[union-attr]


def rri_fields(message: str) -> tuple[str, str]:
    """(referral number RF1-6, MSA-2: the control id of the REF^I12 it answers) of an RRI^I12."""
    segments = {s.split("|", 1)[0]: s.split("|") for s in message.replace("\n", "\r").split("\r") if s}
    return segments["RF1"][6], segments["MSA"][2]
