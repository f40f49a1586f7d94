"""The MLLP listener over real sockets against a real gateway app (temp SQLite, example directory).

The sender is identified as in production without TLS: Huisartsen Batau-Noord's registration
lists the loopback address (`mllp_addresses`), so its messages (MSH-4 01053417) are accepted from
here; TLS with client certificates: test_mllp_tls.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fhir_gateway.app import create_app
from fhir_gateway.loading import load_files
from fhir_gateway.rest.request import FhirRequest
from fhir_gateway.security.clients import (
    get_client,
    load_client_registrations,
    save_client,
    validate_registration,
)
from fhir_gateway.security.principal import Principal
from fhir_gateway.settings import Settings
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.mllp import FS, VT, MLLPClient, MLLPServer, ServerThread, frame
from fhir_gateway.v2.service import V2Service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
GOOD = (EXAMPLES / "ref-i12-v25.hl7").read_text().replace("\n", "\r")


def variant(n: int | str, text: str = GOOD) -> str:
    """The good message with its own control id and referral number."""
    return text.replace("BATAU-000123", f"BATAU-T{n}").replace("REF-2026-0001", f"REF-T{n}")


@dataclass
class Gateway:
    router: object
    service: V2Service
    server: MLLPServer
    port: int
    app: object

    def count(self, resource_type: str, **params: str) -> int:
        req = FhirRequest(
            "GET",
            resource_type,
            params=[("_summary", "count"), *params.items()],
            principal=Principal.system(),
        )
        return int(self.router.handle(req).body["total"])  # type: ignore[attr-defined]


def ack_code(ack: bytes) -> str:
    return parse(ack).segment("MSA").value(1)  # type: ignore[union-attr]


def register_mllp(app: object, client_id: str, **fields: list[str]) -> None:
    """Give an example registration MLLP identities (mllp_addresses, mllp_certificates)."""
    database = app.state.ctx.database  # type: ignore[attr-defined]
    registration = get_client(database, client_id)
    assert registration is not None
    save_client(database, validate_registration({**registration.to_json(), **fields}))


@contextmanager
def running_gateway(url: str, **server_options: Any) -> Iterator[Gateway]:
    """The example directory and clients, praktijk-batau-his registered for loopback, and a real
    MLLP listener on a free port."""
    app = create_app(Settings(database_url=url))
    router = app.state.router
    assert all(r.ok for r in load_files(router, [ROOT / "examples" / "directory"]))
    load_client_registrations(app.state.ctx.database, ROOT / "examples" / "clients")
    register_mllp(app, "praktijk-batau-his", mllp_addresses=["127.0.0.0/8"])
    service = V2Service(router, "http://gateway.test/fhir")  # validation/routing: the create path's own
    server = MLLPServer(host="127.0.0.1", port=0, for_peer=service.for_peer, **server_options)
    thread = ServerThread(server).start()
    try:
        yield Gateway(router, service, server, thread.port, app)
    finally:
        thread.stop()
        app.state.ctx.close()


@pytest.fixture
def gateway(sqlite_url: str) -> Iterator[Gateway]:
    with running_gateway(sqlite_url, max_message_bytes=64 * 1024, idle_timeout=5) as gw:
        yield gw


def raw_exchange(
    port: int, chunks: list[bytes], expect: int, pause: float = 0.0, timeout: float = 20
) -> list[bytes]:
    """Send chunks (as separate TCP packets), read `expect` framed answers."""
    acks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
            if pause:
                time.sleep(pause)
        buffer = b""
        while len(acks) < expect:
            data = sock.recv(65536)
            if not data:
                break
            buffer += data
            while VT in buffer and FS in buffer:
                start, end = buffer.index(VT), buffer.index(FS)
                acks.append(buffer[start + 1 : end])
                buffer = buffer[end + 2 :]
    return acks


def test_frame_split_across_tcp_packets(gateway: Gateway) -> None:
    data = frame(variant(1))
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    [ack] = raw_exchange(gateway.port, chunks, 1, pause=0.001)
    assert ack_code(ack) == "AA" and parse(ack).segment("MSA").value(2) == "BATAU-T1"  # type: ignore[union-attr]
    assert gateway.count("ServiceRequest", identifier="REF-T1") == 1


def test_two_messages_in_one_packet_are_answered_in_order(gateway: Gateway) -> None:
    acks = raw_exchange(gateway.port, [frame(variant(2)) + frame(variant(3))], 2)
    assert [parse(a).segment("MSA").value(2) for a in acks] == ["BATAU-T2", "BATAU-T3"]  # type: ignore[union-attr]
    assert [ack_code(a) for a in acks] == ["AA", "AA"]


def test_garbage_is_ignored_or_rejected(gateway: Gateway) -> None:
    acks = raw_exchange(
        gateway.port, [b"\r\nhello\x00\xff" + frame(variant(4)), frame(b"\x00garbage\xff")], 2
    )
    assert [ack_code(a) for a in acks] == ["AA", "AR"]


def test_oversize_message_gets_ar_and_the_connection_closes(gateway: Gateway) -> None:
    huge = variant(5).replace("Graag een wandelgroep.", "x" * 70_000)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(frame(huge))
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break  # closed by the server
            received += data
    ack = received[1 : received.index(FS)]
    assert ack_code(ack) == "AR" and b"exceeds" in ack
    assert parse(ack).segment("MSA").value(2) == "BATAU-T5"  # type: ignore[union-attr]
    # the server is still up
    [ok] = raw_exchange(gateway.port, [frame(variant(6))], 1)
    assert ack_code(ok) == "AA"


def test_abrupt_disconnect_mid_frame_leaves_the_server_serving(gateway: Gateway) -> None:
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", gateway.port))
        sock.sendall(frame(variant(7))[:200])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        sock.close()
    [ack] = raw_exchange(gateway.port, [frame(variant(8))], 1)
    assert ack_code(ack) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-T7") == 0  # never acknowledged, never stored


def test_idle_connection_is_closed(gateway: Gateway) -> None:
    gateway.server.idle_timeout = 0.3
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        assert sock.recv(10) == b""  # closed by the server after the idle timeout


def test_hundred_concurrent_connections(gateway: Gateway) -> None:
    async def one(i: int) -> bytes:
        async with MLLPClient("127.0.0.1", gateway.port, timeout=60) as client:
            return await client.send(variant(f"C{i}"))

    async def run() -> list[bytes]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    acks = asyncio.run(run())
    assert [ack_code(a) for a in acks] == ["AA"] * 100
    assert gateway.count("ServiceRequest") == 100
    assert gateway.server.stats.open_connections == 0 or gateway.server.stats.open_connections < 100


def test_duplicate_control_id_returns_the_original_ack_without_a_second_referral(gateway: Gateway) -> None:
    message = variant(9)
    [first] = raw_exchange(gateway.port, [frame(message)], 1)
    # same control id, even with a changed referral number: not processed again
    [second] = raw_exchange(gateway.port, [frame(message.replace("REF-T9", "REF-T9-bis"))], 1)
    assert second == first and ack_code(first) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-T9") == 1
    assert gateway.count("ServiceRequest", identifier="REF-T9-bis") == 0
    assert gateway.count("Patient", identifier="http://fhir.nl/fhir/NamingSystem/bsn|999911120") == 1


def test_same_referral_number_with_a_new_control_id_is_not_a_second_referral(gateway: Gateway) -> None:
    raw_exchange(gateway.port, [frame(variant(10))], 1)
    again = variant(10).replace("BATAU-T10", "BATAU-T10-resend")
    [ack] = raw_exchange(gateway.port, [frame(again)], 1)
    assert ack_code(ack) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-T10") == 1


@pytest.mark.parametrize(
    ("example", "locations"),
    [
        ("ref-i12-invalid-bsn.hl7", ["PID^1^3^1^1|102"]),
        ("ref-i12-unknown-icpc.hl7", ["DG1^1^3^1^1|103", "DG1^2^3^1^1|103"]),
        ("ref-i12-no-consent.hl7", ["NTE^1^4|101"]),
    ],
)
def test_content_errors_give_ae_naming_the_v2_field(
    gateway: Gateway, example: str, locations: list[str]
) -> None:
    [ack] = raw_exchange(gateway.port, [frame((EXAMPLES / example).read_bytes())], 1)
    assert ack_code(ack) == "AE"
    text = ack.decode()
    for loc in locations:
        assert f"ERR||{loc}^" in text
    assert gateway.count("ServiceRequest") == 0


def test_postcode_not_covered(gateway: Gateway) -> None:
    [ack] = raw_exchange(
        gateway.port, [frame((EXAMPLES / "ref-i12-postcode-not-covered.hl7").read_bytes())], 1
    )
    assert ack_code(ack) == "AE" and "ERR||PID^1^11^1^5|103^" in ack.decode()


def test_unsupported_version_and_type_get_ar(gateway: Gateway) -> None:
    acks = raw_exchange(
        gateway.port,
        [
            frame(variant(11).replace("|2.5\r", "|2.3\r"))
            + frame(variant(12).replace("REF^I12^REF_I12", "ADT^A01"))
        ],
        2,
    )
    assert [ack_code(a) for a in acks] == ["AR", "AR"]
    assert b"|203^" in acks[0] and b"|200^" in acks[1]


def _serve(handler, **kw: float) -> ServerThread:
    return ServerThread(MLLPServer(handler, "127.0.0.1", 0, **kw)).start()  # type: ignore[arg-type]


def test_handler_exception_and_timeout_still_answer() -> None:
    def boom(payload: bytes) -> bytes:
        raise RuntimeError("boom")

    def slow(payload: bytes) -> bytes:
        time.sleep(2)
        return b"late"

    for handler in (boom, slow):
        thread = _serve(handler, handler_timeout=0.3)
        try:
            [ack] = raw_exchange(thread.port, [frame(variant(13))], 1)
            assert ack_code(ack) == "AR" and parse(ack).segment("MSA").value(2) == "BATAU-T13"  # type: ignore[union-attr]
        finally:
            thread.stop()


# -- who sends: the source address ------------------------------------------------------------------
def test_another_practices_facility_from_a_registered_address_is_ar_and_the_connection_stays(
    gateway: Gateway,
) -> None:
    geinoord = (EXAMPLES / "ref-i12-escapes.hl7").read_bytes()  # MSH-4 01051234: not Batau's
    acks = raw_exchange(gateway.port, [frame(geinoord) + frame(variant(20))], 2)
    assert [ack_code(a) for a in acks] == ["AR", "AA"]
    err = parse(acks[0]).segment("ERR")
    assert err is not None and err.value(2) == "MSH" and err.value(2, 3) == "4"
    assert (err.value(3), err.value(5)) == ("204", "forbidden")
    assert "'01051234' (MSH-4) is not registered for client praktijk-batau-his (source address)" in err.value(
        8
    )
    assert gateway.count("ServiceRequest", identifier="GEIN-VW-7781") == 0


def test_an_unregistered_address_gets_ar_and_the_connection_is_closed(gateway: Gateway) -> None:
    register_mllp(gateway.app, "praktijk-batau-his", mllp_addresses=["192.0.2.0/24"])  # not loopback
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(frame(variant(21)) + frame(variant(22)))
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break  # closed by the server after the first ACK
            received += data
    assert received.count(VT) == 1
    ack = received[1 : received.index(FS)]
    assert ack_code(ack) == "AR"
    err = parse(ack).segment("ERR")
    assert err is not None and (err.value(3), err.value(5)) == ("204", "login")
    assert "registered for no client" in err.value(8)
    assert gateway.count("ServiceRequest", identifier="REF-T21") == 0
    events = FhirRequest("GET", "AuditEvent", params=[("outcome", "4")], principal=Principal.system())
    [event] = [e["resource"] for e in gateway.router.handle(events).body["entry"]]  # type: ignore[attr-defined]
    assert event["agent"][0]["name"] == "anonymous" and event["agent"][0]["network"]["address"] == "127.0.0.1"
    assert "via MLLP" in event["entity"][0]["description"] and "Not authenticated" in event["outcomeDesc"]


def test_two_registrations_claiming_one_address_identify_nobody(gateway: Gateway) -> None:
    register_mllp(gateway.app, "praktijk-de-geinoord-his", mllp_addresses=["127.0.0.1"])
    [ack] = raw_exchange(gateway.port, [frame(variant(23))], 1)
    assert ack_code(ack) == "AR" and b"registered for more than one client" in ack
    assert gateway.count("ServiceRequest", identifier="REF-T23") == 0


def test_insecure_dev_lets_msh4_decide_for_an_unidentified_sender(gateway: Gateway) -> None:
    register_mllp(gateway.app, "praktijk-batau-his", mllp_addresses=["192.0.2.0/24"])
    gateway.service.insecure_dev = True
    [ack] = raw_exchange(gateway.port, [frame(variant(24))], 1)
    assert ack_code(ack) == "AA"
    assert gateway.count("ServiceRequest", identifier="REF-T24") == 1


def test_a_registration_change_counts_from_the_next_message_on_an_open_connection(gateway: Gateway) -> None:
    async def run() -> list[bytes]:
        async with MLLPClient("127.0.0.1", gateway.port, timeout=30) as client:
            first = await client.send(variant(25))
            register_mllp(gateway.app, "praktijk-batau-his", mllp_addresses=["192.0.2.0/24"])
            return [first, await client.send(variant(26))]

    first, second = asyncio.run(run())
    assert ack_code(first) == "AA" and ack_code(second) == "AR"
    assert b"registered for no client" in second
    assert gateway.count("ServiceRequest", identifier="REF-T25") == 1
    assert gateway.count("ServiceRequest", identifier="REF-T26") == 0
