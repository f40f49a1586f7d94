"""MLLP over real TLS with client certificates: the certificate decides who sends, MSH-4 only what
that sender may say. Certificates are made per test session with `cryptography` (tests/tls.py);
the listener runs in-process (`MLLPServer` + `V2Service.for_peer`) and as `fhir-gateway mllp`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_gateway.app import create_app
from fhir_gateway.loading import load_files
from fhir_gateway.rest.request import FhirRequest
from fhir_gateway.security.clients import load_client_registrations, read_registrations
from fhir_gateway.security.principal import Principal
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database
from fhir_gateway.v2.mllp import (
    MLLPClient,
    MLLPError,
    MLLPServer,
    ServerThread,
    client_tls_context,
    frame,
    server_tls_context,
)
from fhir_gateway.v2.service import V2Service
from tests.e2e.test_mllp import EXAMPLES, ROOT, Gateway, ack_code, register_mllp, variant
from tests.tls import Issued, TestCA

pytestmark = pytest.mark.e2e

GEINOORD = (EXAMPLES / "ref-i12-escapes.hl7").read_text().replace("\n", "\r")  # MSH-4 01051234


class Certificates:
    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        self.server = self.ca.issue("localhost", server=True)
        self.batau = self.ca.issue("his.praktijk-batau.test")
        self.geinoord = self.ca.issue("his.praktijk-de-geinoord.test")
        self.stranger = self.ca.issue("unregistered.test")  # signed by the CA, registered nowhere
        self.other_ca = TestCA(folder / "other", "Some other CA")
        self.forged = self.other_ca.issue("his.praktijk-batau.test")  # same name, wrong issuer

    def client(self, issued: Issued | None) -> ssl.SSLContext:
        return client_tls_context(self.ca.cert_file, *((issued.cert, issued.key) if issued else ()))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def gateway(sqlite_url: str, certs: Certificates) -> Iterator[Gateway]:
    app = create_app(Settings(database_url=sqlite_url))
    router = app.state.router
    assert all(r.ok for r in load_files(router, [ROOT / "examples" / "directory"]))
    load_client_registrations(app.state.ctx.database, ROOT / "examples" / "clients")
    register_mllp(app, "praktijk-batau-his", mllp_certificates=[certs.batau.fingerprint])
    register_mllp(app, "praktijk-de-geinoord-his", mllp_certificates=[certs.geinoord.fingerprint])
    service = V2Service(router, "http://gateway.test/fhir")
    tls = server_tls_context(certs.server.cert, certs.server.key, certs.ca.cert_file)
    server = MLLPServer(host="127.0.0.1", port=0, for_peer=service.for_peer, ssl_context=tls, idle_timeout=5)
    thread = ServerThread(server).start()
    try:
        yield Gateway(router, service, server, thread.port, app)
    finally:
        thread.stop()
        app.state.ctx.close()


def send(port: int, context: ssl.SSLContext, *messages: str) -> list[bytes]:
    """One TLS connection, the messages in turn; the ACKs (fewer when the server closes)."""

    async def go() -> list[bytes]:
        acks: list[bytes] = []
        async with MLLPClient(
            "127.0.0.1", port, timeout=20, ssl_context=context, server_hostname="localhost"
        ) as c:
            for message in messages:
                try:
                    acks.append(await c.send(message))
                except (MLLPError, ConnectionError, ssl.SSLError):
                    break
        return acks

    return asyncio.run(go())


def test_a_registered_certificate_sends_as_its_own_practice(gateway: Gateway, certs: Certificates) -> None:
    [ack] = send(gateway.port, certs.client(certs.batau), variant(1))
    assert ack_code(ack) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-T1") == 1
    provenance = FhirRequest("GET", "Provenance", principal=Principal.system())
    events = gateway.router.handle(provenance).body["entry"]  # type: ignore[attr-defined]
    authors = {
        (agent["who"]["identifier"]["value"], agent["onBehalfOf"]["reference"])
        for e in events
        if any(t["reference"].startswith("ServiceRequest/") for t in e["resource"]["target"])
        for agent in e["resource"]["agent"]
        if "identifier" in agent["who"]  # the request's own Provenance (the other: the routing)
    }
    assert authors == {
        ("praktijk-batau-his", "Organization/praktijk-batau")
    }  # the referral is written as the certificate's client


def test_practice_a_certificate_with_practice_b_in_msh4_is_ar(gateway: Gateway, certs: Certificates) -> None:
    # Batau's certificate, De Geinoord's facility; then on the same connection its own: still served
    acks = send(gateway.port, certs.client(certs.batau), GEINOORD, variant(2))
    assert [ack_code(a) for a in acks] == ["AR", "AA"]
    assert b"|204^Unknown key identifier^HL70357|E|forbidden^^http://hl7.org/fhir/issue-type|||" in acks[0]
    assert (
        b"'01051234' (MSH-4) is not registered for client praktijk-batau-his (client certificate)" in acks[0]
    )
    assert gateway.count("ServiceRequest", identifier="GEIN-VW-7781") == 0
    [own] = send(gateway.port, certs.client(certs.geinoord), GEINOORD)
    assert ack_code(own) == "AA" and gateway.count("ServiceRequest", identifier="GEIN-VW-7781") == 1


def test_an_unregistered_certificate_gets_ar_and_the_connection_is_closed(
    gateway: Gateway, certs: Certificates
) -> None:
    acks = send(gateway.port, certs.client(certs.stranger), variant(3), variant(4))
    assert len(acks) == 1 and ack_code(acks[0]) == "AR"
    assert b"|login^" in acks[0] and certs.stranger.fingerprint.encode() in acks[0]
    assert gateway.count("ServiceRequest") == 0


@pytest.mark.parametrize("who", ["no certificate", "certificate of another CA"])
def test_without_a_certificate_the_ca_signed_the_handshake_fails(
    gateway: Gateway, certs: Certificates, who: str
) -> None:
    context = certs.client(None if who == "no certificate" else certs.forged)
    with pytest.raises((ssl.SSLError, ConnectionError, MLLPError, EOFError)):
        acks = send(gateway.port, context, variant(5))
        if not acks:  # TLS 1.3: the server's alert can arrive after the client thinks it is done
            raise MLLPError("closed without an answer")
    assert gateway.count("ServiceRequest") == 0


def test_plain_tcp_to_the_tls_port_gets_no_ack(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(frame(variant(6)))
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
    assert b"MSA" not in received
    assert gateway.count("ServiceRequest") == 0


# -- the command line ---------------------------------------------------------------------------------
def test_fhir_gateway_mllp_with_tls_and_client_certificates(tmp_path: Path, certs: Certificates) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    Database(url).upgrade()
    app = create_app(Settings(database_url=url))
    assert all(r.ok for r in load_files(app.state.router, [ROOT / "examples" / "directory"]))
    load_client_registrations(app.state.ctx.database, ROOT / "examples" / "clients")
    app.state.ctx.close()
    env = {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_LOG_JSON": "false"}
    batau = read_registrations([ROOT / "examples" / "clients" / "praktijk-batau-his.client.json"])[0]
    (tmp_path / "jwks.json").write_text(json.dumps(batau.jwks))
    added = subprocess.run(  # the operator's way: register the certificate file on the client
        [
            *(sys.executable, "-m", "fhir_gateway.cli", "clients", "add", "praktijk-batau-his"),
            *("--role", "gp-practice", "--organization", "Organization/praktijk-batau"),
            *("--jwks", str(tmp_path / "jwks.json")),
            *("--scope", "system/ServiceRequest.cr system/Patient.cr system/Consent.cr"),
            *("--scope", "system/Practitioner.r system/PractitionerRole.r system/Organization.r"),
            *("--v2-facility", "01053417", "--mllp-certificate", str(certs.batau.cert)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert added.returncode == 0, added.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tls = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fhir_gateway.cli",
            "mllp",
            "--port",
            str(port),
            *tls,
            "--client-ca",
            str(certs.ca.cert_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.2)
        [ack] = send(port, certs.client(certs.batau), variant(7))
        assert ack_code(ack) == "AA"
        [refused] = send(port, certs.client(certs.geinoord), variant(8))  # registered nowhere here
        assert ack_code(refused) == "AR" and b"|login^" in refused
    finally:
        proc.terminate()
        proc.wait(timeout=10)
