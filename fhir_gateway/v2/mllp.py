"""MLLP (VT message FS CR) over asyncio: the listener for GP systems and a client for RRI^I12.

Why not hl7apy's MLLPServer: a thread per connection, byte-at-a-time reads, one message per
connection and no ACK when the handler raises. Here one event loop owns all sockets; each frame's
blocking work (database, router) runs in a worker thread, frames of one connection are answered
in order, and every frame gets an answer: an exception or a handler timeout gives an AR.

Who is on the other end: the listener hands each connection's `Peer` (source address, and with
TLS the client certificate the handshake verified) to `for_peer`, which returns that
connection's handler; a handler may answer `Answer(ack, close=True)` to end the connection after
the ACK (the v2 service does so for a sender it cannot identify). `server_tls_context` makes the
TLS context: with a client CA, a client certificate is required and checked in the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fhir_gateway.v2.ack import (
    APPLICATION_INTERNAL_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    AckError,
    build_ack,
    header_guess,
)

log = logging.getLogger(__name__)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


@dataclass(frozen=True)
class Peer:
    """One connection as the listener sees it."""

    address: str | None  # source IP
    certificate: bytes | None = None  # DER of the client certificate the TLS handshake verified
    tls: bool = False


@dataclass(frozen=True)
class Answer:
    """A handler's reply; `close`: end the connection once the ACK is written."""

    ack: bytes
    close: bool = False


Handler = Callable[[bytes], bytes]
PeerHandler = Callable[[bytes], "bytes | Answer"]
ForPeer = Callable[[Peer], PeerHandler]


def server_tls_context(
    cert_file: Path | str, key_file: Path | str, client_ca: Path | str | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ server context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(
    server_ca: Path | str, cert_file: Path | str | None = None, key_file: Path | str | None = None
) -> ssl.SSLContext:
    """TLS client context trusting `server_ca`, presenting a client certificate when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(server_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
    return context


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    peername = writer.get_extra_info("peername")
    address = str(peername[0]) if isinstance(peername, tuple) and peername else None
    ssl_object = writer.get_extra_info("ssl_object")
    certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return Peer(address, certificate or None, ssl_object is not None)


class MLLPError(Exception):
    """The peer closed, timed out or sent something that is not an MLLP frame."""


def frame(message: bytes | str) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + FS + CR


class FrameReader:
    """Incremental MLLP de-framing: feed bytes as they arrive, take whole messages out.

    Bytes before a VT are ignored (line noise, keep-alives), a frame may span any number of reads
    and one read may hold several frames. `overflow` is set when a frame grows past `max_bytes`.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.in_frame = False
        self.overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self.buffer += data
        while True:
            if not self.in_frame:
                start = self.buffer.find(VT)
                if start < 0:
                    self.buffer.clear()  # garbage outside a frame
                    return out
                del self.buffer[: start + 1]
                self.in_frame = True
            end = self.buffer.find(FS)
            if end < 0:
                if len(self.buffer) > self.max_bytes:
                    self.overflow = True
                return out
            if end > self.max_bytes:
                self.overflow = True
                return out
            out.append(bytes(self.buffer[:end]))
            del self.buffer[: end + 1]
            if self.buffer[:1] == CR:
                del self.buffer[:1]
            self.in_frame = False

    @property
    def partial(self) -> bytes:
        return bytes(self.buffer) if self.in_frame else b""


@dataclass
class ServerStats:
    connections: int = 0
    open_connections: int = 0
    messages: int = 0
    handler_errors: int = 0
    oversize: int = 0
    idle_closed: int = 0


class MLLPServer:
    """`await server.start()`, then `server.port`; `await server.stop()` closes it."""

    def __init__(
        self,
        handler: Handler | None = None,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        for_peer: ForPeer | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = 1024 * 1024,
        idle_timeout: float = 300.0,
        handler_timeout: float = 60.0,
        max_concurrent: int = 16,
    ) -> None:
        if (handler is None) == (for_peer is None):
            raise ValueError("give either a handler (every connection) or for_peer (one per connection)")
        self.handler = handler
        self.for_peer = for_peer
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.handler_timeout = handler_timeout
        self.stats = ServerStats()
        self._max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self._max_concurrent)
        self._server = await asyncio.start_server(
            self._connection,
            self.host,
            self.port,
            limit=65536,
            ssl=self.ssl_context,
            ssl_handshake_timeout=30 if self.ssl_context is not None else None,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("MLLP listening on %s:%d%s", self.host, self.port, " (TLS)" if self.ssl_context else "")

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.stats.connections += 1
        self.stats.open_connections += 1
        frames = FrameReader(self.max_message_bytes)
        handler: PeerHandler
        if self.for_peer is not None:
            handler = self.for_peer(peer_of(writer))
        else:
            assert self.handler is not None
            handler = self.handler
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except TimeoutError:
                    self.stats.idle_closed += 1
                    return
                if not data:
                    return  # peer closed (a half-sent frame is dropped: it was never acknowledged)
                for payload in frames.feed(data):
                    answer = await self._answer(handler, payload)
                    writer.write(frame(answer.ack))
                    await writer.drain()
                    if answer.close:
                        return
                if frames.overflow:
                    self.stats.oversize += 1
                    error = AckError(
                        SEGMENT_SEQUENCE_ERROR,
                        f"Message exceeds {self.max_message_bytes} bytes; not processed",
                    )
                    writer.write(frame(build_ack(header_guess(frames.partial[:4096]), "AR", [error])))
                    await writer.drain()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return  # abrupt disconnect (or a TLS failure after the handshake): nothing to answer
        except asyncio.CancelledError:
            raise
        finally:
            self.stats.open_connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _answer(self, handler: PeerHandler, payload: bytes) -> Answer:
        self.stats.messages += 1
        assert self._slots is not None
        try:
            async with self._slots:
                reply = await asyncio.wait_for(asyncio.to_thread(handler, payload), self.handler_timeout)
            return reply if isinstance(reply, Answer) else Answer(reply)
        except Exception as exc:
            self.stats.handler_errors += 1
            log.error("MLLP handler failed: %s", type(exc).__name__)
            text = (
                "Timed out; send the message again later"
                if isinstance(exc, TimeoutError)
                else ("Internal error; send the message again later")
            )
            return Answer(
                build_ack(header_guess(payload), "AR", [AckError(APPLICATION_INTERNAL_ERROR, text)]).encode()
            )


class ServerThread:
    """An MLLP server on its own event loop in a daemon thread (tests, benchmarks, embedding)."""

    def __init__(self, server: MLLPServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mllp-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surface bind errors to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- client ------------------------------------------------------------------------------------------
class MLLPClient:
    """One connection; `send` writes a frame and waits for the answering frame."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        max_bytes: int = 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self._frames = FrameReader(max_bytes)
        self._pending: list[bytes] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> MLLPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.server_hostname if self.ssl_context is not None else None,
            ),
            self.timeout,
        )

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    async def send(self, message: bytes | str) -> bytes:
        """Send one message, return the ACK payload (without framing)."""
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        self._writer.write(frame(message))
        await self._writer.drain()
        return await self.receive()

    async def receive(self) -> bytes:
        assert self._reader is not None
        while not self._pending:
            data = await asyncio.wait_for(self._reader.read(65536), self.timeout)
            if not data:
                raise MLLPError("the server closed the connection without an answer")
            self._pending.extend(self._frames.feed(data))
            if self._frames.overflow:
                raise MLLPError("the answer is larger than allowed")
        return self._pending.pop(0)


async def send_message(host: str, port: int, message: bytes | str, timeout: float = 30.0) -> bytes:
    """Open, send one message, await its ACK, close (outbound delivery of one RRI^I12)."""
    async with MLLPClient(host, port, timeout=timeout) as client:
        return await client.send(message)
