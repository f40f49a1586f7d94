"""Per-client rate limiting: a token bucket per authenticated client id (or source address).

A client that floods gets 429 with `Retry-After` while every other client keeps its own full
bucket, so one misbehaving system cannot starve the rest. Buckets live in this process: with N
replicas (or uvicorn workers) a client may do N times the rate in total. Health and metrics
endpoints are never limited (load balancers and Prometheus poll them). Failed authentication has
buckets of its own, per source address, kept by the bearer middleware and the token endpoint
(`api/auth.py`); they charge only failures and never refuse a valid credential.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_gateway.api.http import negotiated_outcome
from fhir_gateway.fhir.outcome import error, operation_outcome

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_BUCKETS = 10_000  # source addresses are unbounded; idle buckets beyond this are forgotten


class TokenBuckets:
    """`take(key)` → 0 when allowed, else the seconds until a token is back.

    Not thread-safe on purpose: the middleware calls it from the event loop only. A bucket left
    alone long enough to be full again is the same as no bucket, so the oldest are dropped first.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def peek(self, key: str) -> float:
        """What `take` would answer, without taking: lets a caller refuse before costly work
        that is charged only when it fails (a token signature check)."""
        entry = self._buckets.get(key)
        if entry is None:
            return 0.0
        tokens, at = entry
        tokens = min(float(self.burst), tokens + (self.clock() - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


def address_key(scope: Scope) -> str:
    client = scope.get("client")
    return f"address:{client[0] if client else '-'}"


def client_key(scope: Scope) -> tuple[str, str]:
    """("client", id) for an authenticated principal, else ("address", source address)."""
    principal = (scope.get("state") or {}).get("principal")
    if principal is not None and getattr(principal, "authenticated", False):
        return "client", f"client:{principal.client_id}"
    return "address", address_key(scope)


def throttled_answer(
    buckets: TokenBuckets,
    kind: str,
    wait: float,
    what: str = "requests",
    oauth: bool = False,
    scope: Scope | None = None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 429's headers and body: `Retry-After` (whole seconds) and an OperationOutcome
    `throttled` (FHIR XML when the request in `scope` asks for XML); with `oauth` (the token
    endpoint) an RFC 6749 §5.2 body instead, `temporarily_unavailable`, not to be cached."""
    retry_after = max(1, math.ceil(wait))
    text = (
        f"Too many {what} from this {kind}: at most {buckets.rate:g} per second "
        f"(bursts of {buckets.burst}); retry after {retry_after} s"
    )
    if oauth:
        body = orjson.dumps({"error": "temporarily_unavailable", "error_description": text})
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    else:
        outcome = operation_outcome([error("throttled", text)])
        media_type, body = (
            negotiated_outcome(scope, outcome)
            if scope is not None
            else ("application/fhir+json; charset=utf-8", orjson.dumps(outcome))
        )
        headers = [(b"content-type", media_type.encode("latin-1"))]
    headers += [(b"content-length", str(len(body)).encode()), (b"retry-after", str(retry_after).encode())]
    return headers, body


async def send_throttled(
    send: Send,
    buckets: TokenBuckets,
    kind: str,
    wait: float,
    what: str = "requests",
    oauth: bool = False,
    scope: Scope | None = None,
) -> None:
    """Send the 429 of `throttled_answer`."""
    headers, body = throttled_answer(buckets, kind, wait, what, oauth, scope)
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RateLimitMiddleware:
    """Pure ASGI, inside the bearer middleware (it needs the principal): 429 past the budget.

    `self_limited` paths pass through: their endpoint charges `buckets` itself once it knows
    who is asking (the token endpoint: the client its assertion proves, not the address — many
    clients may share one load-balancer address)."""

    def __init__(
        self,
        app: ASGIApp,
        buckets: TokenBuckets,
        on_throttle: Callable[[str], None] | None = None,
        self_limited: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.on_throttle = on_throttle
        self.self_limited = self_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in UNLIMITED_PATHS or path in self.self_limited:
            await self.app(scope, receive, send)
            return
        kind, key = client_key(scope)
        wait = self.buckets.take(key)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        if self.on_throttle is not None:
            self.on_throttle(kind)
        await send_throttled(send, self.buckets, kind, wait, scope=scope)
