"""Real receivers for delivery tests: an HTTP server that can be down, slow, 500 or 410, and an
asyncio MLLP listener answering AA or AE. No mocks of the HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fhir_gateway.v2.mllp import FrameReader, frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A rest-hook / FHIR push endpoint on a fixed loopback port; `stop()` makes it 'down'."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []  # every request, duplicates included
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if status < 300:
                    with receiver.lock:
                        receiver.received.append(
                            {
                                "event_id": self.headers.get("x-event-id"),
                                "headers": dict(self.headers),
                                "body": json.loads(body),
                            }
                        )
                self.send_response(status)
                self.send_header("content-type", "application/fhir+json")
                payload = b"{}" if status < 300 else b'{"resourceType":"OperationOutcome","issue":[]}'
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- what arrived ----------------------------------------------------------------------------
    def notifications(self) -> list[dict[str, Any]]:
        """SubscriptionStatus parameters of every received notification bundle, as dicts."""
        out = []
        for item in self.received:
            body = item["body"]
            if body.get("resourceType") != "Bundle":
                continue
            status = body["entry"][0]["resource"]
            params = {p["name"]: p for p in status["parameter"]}
            events = [p for p in status["parameter"] if p["name"] == "notification-event"]
            out.append(
                {
                    "event_id": item["event_id"],
                    "type": params["type"]["valueCode"],
                    "numbers": [
                        int(next(x["valueString"] for x in e["part"] if x["name"] == "event-number"))
                        for e in events
                    ],
                    "bundle": body,
                }
            )
        return out

    def duplicates(self) -> int:
        counts = Counter(item["event_id"] for item in self.received)
        return sum(n - 1 for n in counts.values())


class MllpReceiver:
    """An asyncio MLLP listener in a thread; answers every frame with `ack_code` (AA / AE / AR)."""

    def __init__(self, ack_code: str = "AA") -> None:
        self.ack_code = ack_code
        self.port = free_port()
        self.messages: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> MllpReceiver:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(1 << 20)
        while data := await reader.read(65536):
            for message in frames.feed(data):
                text = message.decode("utf-8")
                self.messages.append(text)
                control = text.split("\r")[0].split("|")[9]
                ack = f"MSH|^~\\&|PRACTICE|HIS|WORGW|GW|20261102120000||ACK^I12|A{control}|P|2.4\rMSA|{self.ack_code}|{control}"
                if self.ack_code != "AA":
                    ack += "\rERR|||207^Application internal error^HL70357|E|||Onbekende patiënt"
                writer.write(frame(ack + "\r"))
                await writer.drain()
        writer.close()

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
