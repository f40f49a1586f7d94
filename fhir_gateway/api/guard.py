"""The outermost ASGI guard: an exception nobody handled becomes a 500 OperationOutcome.

Every layer below answers its own errors (the router: OperationOutcomes, the token endpoint:
RFC 6749 JSON, the store: 503). What still escapes — a bug in a handler, a middleware, the
request parsing — would otherwise reach Starlette's `ServerErrorMiddleware` (a plain-text
"Internal Server Error") or uvicorn (its traceback, message included, in the log). This guard
sits outside every middleware of the app, so it sees the exception first, and:

- answers 500 with an OperationOutcome `exception` that says nothing about the internals (on the
  token endpoint: RFC 6749 `server_error`), with the request id, unless the response has started
  already — then nothing more can be said, and the exception goes on to the server, which drops
  the connection;
- logs the exception's type, the route pattern and the traceback's frames (file, line,
  function), never the exception's message or the path: both can carry patient data (a
  database error quotes the statement's parameters, a path holds ids, a query a BSN).
"""

from __future__ import annotations

import logging
import traceback

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_gateway.fhir.outcome import error, operation_outcome
from fhir_gateway.observability import request_id_var, route_label

log = logging.getLogger(__name__)

INTERNAL_ERROR = "The server could not handle this request (an internal error); it has been logged"
REQUEST_ID_KEY = "request_id"  # scope["state"][...]: set by RequestContextMiddleware


def internal_error_body() -> bytes:
    return orjson.dumps(operation_outcome([error("exception", INTERNAL_ERROR)]))


def where_it_failed(exc: BaseException) -> list[str]:
    """The traceback as `file:line in function` frames: no message, no local values."""
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)]


class ExceptionGuard:
    """Pure ASGI; install it last (outermost). `oauth_paths` answer RFC 6749 JSON instead."""

    def __init__(self, app: ASGIApp, oauth_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.oauth_paths = oauth_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = str((scope.get("state") or {}).get(REQUEST_ID_KEY) or request_id_var.get())
            token = request_id_var.set(request_id)
            try:
                log.error(
                    "unhandled %s on %s %s (response %s)",
                    type(exc).__name__,
                    scope.get("method", ""),
                    route_label(scope.get("path", "")),
                    "already started: connection dropped" if started else "answered 500",
                    extra={"event": "unhandled-exception", "frames": where_it_failed(exc)},
                )
            finally:
                request_id_var.reset(token)
            if started:
                raise
            await self._answer(scope, send, request_id)

    async def _answer(self, scope: Scope, send: Send, request_id: str) -> None:
        if scope.get("path") in self.oauth_paths:
            body = orjson.dumps({"error": "server_error", "error_description": INTERNAL_ERROR})
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        else:
            body = internal_error_body()
            headers = [(b"content-type", b"application/fhir+json; charset=utf-8")]
        headers += [(b"content-length", str(len(body)).encode())]
        if request_id and request_id != "-":
            headers.append((b"x-request-id", request_id.encode("latin-1", "replace")))
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
