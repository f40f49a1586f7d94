"""HTTP side of authentication: SMART discovery, the token endpoint, and the bearer-token
middleware that puts a `Principal` on `request.state.principal` for every non-public call.

Default deny: every path needs a valid access token except the short public list below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_gateway.api.http import negotiated_outcome
from fhir_gateway.api.rate_limit import TokenBuckets, address_key, send_throttled, throttled_answer
from fhir_gateway.fhir.outcome import error, operation_outcome
from fhir_gateway.rest.router import unavailable_error
from fhir_gateway.security.authn import (
    BearerError,
    OAuthError,
    authenticate_bearer,
    check_token_request,
    grant_token,
)
from fhir_gateway.security.clients import ASSERTION_ALGORITHMS, get_client
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.tokens import TokenService
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database, DatabaseUnavailable

log = logging.getLogger(__name__)

TOKEN_PATH = "/auth/token"
FHIR_WELL_KNOWN = "/fhir/.well-known/"
# The console authenticates itself (session cookie); the API description holds no personal data.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        TOKEN_PATH,
        "/fhir/metadata",
        "/fhir/metadata/",
        FHIR_WELL_KNOWN + "smart-configuration",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/console",
    }
)
PUBLIC_PREFIXES = ("/.well-known/", "/console/", "/docs/assets/")
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1
# Token-endpoint errors that mean "no client was authenticated": charged to the address's budget
# of failed authentications (invalid_scope comes after a verified assertion and is not).
AUTH_FAILURES = frozenset({"invalid_request", "invalid_client", "unsupported_grant_type"})
INSECURE_DEV_PRINCIPAL = Principal(
    client_id="insecure-dev", organization=None, role="admin", scopes=("system/*.cruds",), authenticated=True
)
SCOPES_SUPPORTED = [
    "system/*.cruds",
    "system/*.rs",
    "system/ServiceRequest.cr",
    "system/Task.rus",
    "system/CarePlan.rus",
    "system/Communication.crs",
    "system/Patient.cr",
    "system/QuestionnaireResponse.crs",
    "system/*.read",
    "system/*.write",
    "system/*.*",
]


def token_endpoint_url(request: Request, settings: Settings) -> str:
    """The URL clients must put in their assertion's `aud`. From `GATEWAY_BASE_URL` when set
    (its trailing `/fhir` replaced by `/auth/token`) — set it in production: a URL derived from
    the request's Host header is only as trustworthy as that header."""
    base = settings.base_url.rstrip("/")
    if base:
        root = base[: -len("/fhir")] if base.endswith("/fhir") else base
        return root + TOKEN_PATH
    return str(request.base_url).rstrip("/") + TOKEN_PATH


def smart_configuration(token_url: str) -> dict[str, Any]:
    """SMART App Launch 2.x `.well-known/smart-configuration` for Backend Services only."""
    return {
        "token_endpoint": token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": [],  # no authorize endpoint: backend services only
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    }


def oauth_error_response(exc: OAuthError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error of the token endpoint: RFC 6749 §5.2 JSON, never cached (not an OperationOutcome:
    OAuth clients parse `error`)."""
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **(headers or {})})


def oauth_too_large(limit: int, _prefix: bytes) -> tuple[str, bytes]:
    """The body limit's 413 for the token endpoint (`BodyLimit.refuse`)."""
    exc = OAuthError("invalid_request", f"the request body exceeds {limit} bytes (the limit)", 413)
    return "application/json", orjson.dumps(exc.body())


def build_auth_api(
    database: Database,
    tokens: TokenService,
    settings: Settings,
    *,
    failures: TokenBuckets | None = None,
    requests: TokenBuckets | None = None,
    on_throttle: Callable[[str], None] | None = None,
) -> APIRouter:
    """Discovery and the token endpoint. `requests`: the per-client buckets, charged to the
    client the assertion proves (the rate-limit middleware leaves this path alone); `failures`:
    the per-address budget of failed authentications, charged only by refused requests — a valid
    assertion from an address that used its budget up still gets its token."""
    api = APIRouter(include_in_schema=False)

    def lookup(client_id: str) -> Any:
        return get_client(database, client_id)

    def throttled(buckets: TokenBuckets, kind: str, wait: float, what: str) -> Response:
        if on_throttle is not None:
            on_throttle(kind)
        headers, body = throttled_answer(buckets, kind, wait, what, oauth=True)
        return Response(body, status_code=429, headers={k.decode(): v.decode() for k, v in headers})

    def refuse(request: Request, exc: OAuthError) -> Response:
        log.warning("token request refused: %s (%s)", exc.error, exc.description, extra={"event": "auth"})
        if failures is not None and exc.error in AUTH_FAILURES:
            wait = failures.take(address_key(request.scope))
            if wait > 0:
                return throttled(failures, "address", wait, "failed authentications")
        return oauth_error_response(exc)

    @api.get("/.well-known/smart-configuration")
    @api.get(FHIR_WELL_KNOWN + "smart-configuration")  # [base]/.well-known: where SMART clients look
    async def well_known(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(token_endpoint_url(request, settings)))

    @api.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return refuse(request, OAuthError("invalid_request", "send application/x-www-form-urlencoded"))
        raw = await request.body()
        if len(raw) > MAX_TOKEN_REQUEST_BYTES:  # the body limit refuses it first; kept as a guard
            return oauth_error_response(OAuthError("invalid_request", "request body too large", 413))
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError):
            return refuse(request, OAuthError("invalid_request", "the form body cannot be parsed"))
        audience = token_endpoint_url(request, settings)
        try:
            checked = await run_in_threadpool(check_token_request, form, audience=audience, lookup=lookup)
            if requests is not None:  # the proven client's own budget (event loop: buckets are not locked)
                wait = requests.take(f"client:{checked.client.client_id}")
                if wait > 0:
                    return throttled(requests, "client", wait, "requests")
            issued = await run_in_threadpool(grant_token, checked, database=database, tokens=tokens)
        except OAuthError as exc:
            return refuse(request, exc)
        except DatabaseUnavailable as exc:  # client lookup or jti record: down, full, read-only
            refused = unavailable_error(exc)  # logs it; the same Retry-After as the FHIR API
            return oauth_error_response(
                OAuthError("temporarily_unavailable", refused.message, 503), refused.headers
            )
        except Exception:  # a bug: still an OAuth answer, the traceback in the log
            log.exception("token request failed")
            return oauth_error_response(OAuthError("server_error", "the token request failed", 500))
        return JSONResponse(issued.response(), headers=NO_STORE)

    return api


def is_public(path: str) -> bool:
    """Paths anyone may call. Dot-segments never count as public (no `/.well-known/../fhir`)."""
    if "/./" in path or "/../" in path or path.endswith(("/.", "/..")):
        return False
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _unauthorized(exc: BearerError, scope: Scope) -> Response:
    """The 401/403 OperationOutcome, in FHIR XML when the request asks for XML."""
    code = "login" if exc.error is None else "security"
    media_type, body = negotiated_outcome(scope, operation_outcome([error(code, exc.description)]))
    return Response(
        body,
        status_code=exc.status,
        media_type=media_type,
        headers={"WWW-Authenticate": exc.challenge()},
    )


class BearerAuthMiddleware:
    """Pure ASGI middleware: verify `Authorization: Bearer`, set `request.state.principal`.

    With `insecure_dev`, a request *without* an Authorization header acts as an admin — for local
    experiments only; a token that is sent is still verified.

    With `failures` (token buckets per source address), every failed authentication is charged
    to its address, and once that bucket is empty a *failed* authentication from there gets 429
    (counted as `kind="address"`) instead of 401. A token is always verified first, so a valid
    token — known or new — is never refused for its neighbours' failures (one load-balancer
    address may carry many clients). A flood stays cheap without a pre-check: a token with an
    unknown `kid` or a bad shape fails before any crypto (≈ 15 µs), a well-formed forgery costs
    one ES256 verification (≈ 0.1 ms, small against the request itself)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenService,
        insecure_dev: bool = False,
        failures: TokenBuckets | None = None,
        on_throttle: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.insecure_dev = insecure_dev
        self.failures = failures
        self.on_throttle = on_throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        state = scope.setdefault("state", {})
        if is_public(path):
            state["principal"] = Principal.unauthenticated()
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        if not header and self.insecure_dev:
            state["principal"] = INSECURE_DEV_PRINCIPAL
            await self.app(scope, receive, send)
            return
        try:
            state["principal"] = authenticate_bearer(header, self.tokens)
        except BearerError as exc:
            wait = self.failures.take(address_key(scope)) if self.failures is not None else 0.0
            if wait > 0 and self.failures is not None:
                if self.on_throttle is not None:
                    self.on_throttle("address")
                await send_throttled(
                    send, self.failures, "address", wait, "failed authentications", scope=scope
                )
                return
            await _unauthorized(exc, scope)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_auth(
    app: FastAPI,
    settings: Settings,
    database: Database,
    tokens: TokenService | None = None,
    failures: TokenBuckets | None = None,
    on_throttle: Callable[[str], None] | None = None,
    requests: TokenBuckets | None = None,
) -> TokenService:
    """Mount discovery + token endpoint and the bearer middleware on `app`. Call it before adding
    the request-context middleware, so 401s are logged and counted like any other response.
    `failures`: the budget of failed authentications per source address (None: unlimited);
    `requests`: the per-client buckets the token endpoint charges (None: unlimited)."""
    tokens = tokens or TokenService.from_settings(settings)
    insecure_dev = settings.insecure_dev
    if insecure_dev:
        log.warning(
            "!!! INSECURE_DEV IS ON: requests without a token act as an ADMIN with every scope. "
            "Never use this outside a developer's machine. !!!"
        )
    app.state.tokens = tokens
    auth_api = build_auth_api(
        database, tokens, settings, failures=failures, requests=requests, on_throttle=on_throttle
    )
    app.include_router(auth_api)
    # `[base]/.well-known/…` must win over the FHIR API's catch-all `/fhir/{path:path}`, which
    # app.py includes before this router: Starlette takes the first route that matches. None of
    # this router's other paths is matched by an earlier route, so it moves to the front whole.
    routes = app.router.routes
    for entry in [r for r in routes if getattr(r, "original_router", None) is auth_api]:
        routes.remove(entry)
        routes.insert(0, entry)
    app.add_middleware(
        BearerAuthMiddleware,
        tokens=tokens,
        insecure_dev=insecure_dev,
        failures=failures,
        on_throttle=on_throttle,
    )
    return tokens
