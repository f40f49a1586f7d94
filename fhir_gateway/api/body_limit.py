"""Request body size limits for every HTTP route, enforced while the body streams in.

A declared `Content-Length` over the limit is refused before one byte is read; a body without
one (chunked) is counted chunk by chunk and refused the moment it passes the limit, so a 10 MB+
body is never held in memory just to be turned away. Each path prefix has its own limit and its
own way of saying no (FHIR: an OperationOutcome; `/v2`: an HL7 ACK), the first match wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_gateway.api.http import negotiated_outcome
from fhir_gateway.fhir.outcome import error, operation_outcome

# (limit, the first bytes of the body if any were read) -> (content type, body)
Refusal = Callable[[int, bytes], tuple[str, bytes]]
PREFIX_KEPT = 4096  # enough of a refused body for a v2 ACK to echo its MSH


class BodyTooLarge(Exception):
    """Raised out of `receive` when the body passes the limit; the middleware answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def too_large_outcome(limit: int) -> dict[str, object]:
    """The default answer: a FHIR OperationOutcome naming the limit (JSON or XML, as asked)."""
    return operation_outcome(
        [error("too-costly", f"The request body exceeds {limit} bytes (the limit); send less")]
    )


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """Bodies on paths starting with `prefix` may hold at most `max_bytes` (0: no limit);
    `headers` go with the 413 (the token endpoint's `Cache-Control: no-store`); `refuse` None:
    an OperationOutcome in the type the client asked for."""

    prefix: str
    max_bytes: int
    refuse: Refusal | None = None
    headers: tuple[tuple[str, str], ...] = ()


class BodyLimitMiddleware:
    """Pure ASGI: check `Content-Length` up front, count streamed bytes, answer 413 past the limit."""

    def __init__(self, app: ASGIApp, limits: Sequence[BodyLimit]) -> None:
        self.app = app
        self.limits = tuple(limits)

    def limit_for(self, path: str) -> BodyLimit | None:
        for limit in self.limits:
            if path.startswith(limit.prefix):
                return limit if limit.max_bytes > 0 else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await _answer(send, limit, b"", scope)
            return
        seen = 0
        prefix = bytearray()
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if len(prefix) < PREFIX_KEPT:
                    prefix.extend(chunk[: PREFIX_KEPT - len(prefix)])
                if seen > limit.max_bytes:
                    raise BodyTooLarge(limit.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # the app answered before reading on; nothing more can be said
                raise
            await _answer(send, limit, bytes(prefix), scope)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server has refused a malformed one already
    return None


async def _answer(send: Send, limit: BodyLimit, prefix: bytes, scope: Scope) -> None:
    if limit.refuse is None:
        media_type, body = negotiated_outcome(scope, too_large_outcome(limit.max_bytes))
    else:
        media_type, body = limit.refuse(limit.max_bytes, prefix)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", media_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of the body is never read
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in limit.headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
