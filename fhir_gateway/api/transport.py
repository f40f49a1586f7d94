"""What every answer needs on its way out: CORS for browser apps, gzip for big Bundles.

Both sit outside the bearer, rate and body-limit middleware (`install_transport` is called
after them): a CORS preflight carries no token and is answered here, before authentication;
a 401, 413 or 429 from inside still gets its CORS headers, so a browser app can read why it
was refused. Inside the request context (logged, counted) and the exception guard.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_gateway.settings import Settings

CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# What FHIR clients send beyond the CORS-safelisted headers (conditional interactions, Prefer)
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Exist",
    "If-None-Match",
    "If-Modified-Since",
    "Prefer",
    "X-Request-ID",
)
# What a FHIR client reads from answers: versions, where a resource was created, paging waits
CORS_EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "Content-Location",
    "Last-Modified",
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-ID",
)
CORS_MAX_AGE = 600  # seconds a browser may reuse a preflight answer
GZIP_MINIMUM_BYTES = 1000  # below this, gzip's header and the CPU cost outweigh the saving
GZIP_LEVEL = 6  # zlib's default: most of level 9's saving at a fraction of its CPU
# Never compressed: answers that hold a secret next to what a caller sent (BREACH): the access
# token, and console pages (CSRF value beside reflected search terms).
GZIP_EXCLUDED_PREFIXES = ("/auth/token", "/console")


def cors_origins(settings: Settings) -> list[str]:
    """`GATEWAY_CORS_ORIGINS`, comma-separated, without a trailing slash (browsers send none)."""
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


class FhirCorsMiddleware(CORSMiddleware):
    """Starlette's CORS, except that a request from an origin not on the list passes through
    untouched: no CORS header at all (Starlette would answer its preflight 400 and expose
    headers to it), so it meets the same authentication as any request without CORS."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not self.is_allowed_origin(origin):
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class FhirGzipMiddleware:
    """Starlette's GZip with two changes: paths holding secrets are never compressed, and a
    strong ETag on a compressed answer becomes weak (RFC 9110 §8.8.1: a strong validator
    names one exact byte sequence; the gzip bytes are another). FHIR's `W/"n"` stays as is."""

    def __init__(self, app: ASGIApp, minimum_size: int = GZIP_MINIMUM_BYTES) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(GZIP_EXCLUDED_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def weaken_etag(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                etag = headers.get("etag")
                if etag and not etag.startswith("W/") and "gzip" in headers.get("content-encoding", ""):
                    headers["etag"] = "W/" + etag
            await send(message)

        await self.gzip(scope, receive, weaken_etag)


def install_transport(app: FastAPI, settings: Settings) -> None:
    """Add gzip, then CORS (outside it) when `GATEWAY_CORS_ORIGINS` names any origin."""
    app.add_middleware(FhirGzipMiddleware)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            FhirCorsMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=CORS_MAX_AGE,
        )
