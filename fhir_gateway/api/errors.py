"""The app's own error answers as OperationOutcome, for what never reaches the FHIR router.

The router turns every failure on `/fhir` into an OperationOutcome itself. Outside it, FastAPI and
Starlette answer with `{"detail": …}`: an unknown path (`/admin/outbox/a/b/retry`), a wrong
method, a query parameter of the wrong type (`/admin/outbox?limit=x`), and a store that refuses
under the console. These handlers give those the same shape — except on the OAuth token
endpoint, whose clients expect RFC 6749 errors (`GET /auth/token`: 405 `invalid_request`).
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhir_gateway.api.auth import TOKEN_PATH, oauth_error_response
from fhir_gateway.api.http import fhir_response
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.rest.router import data_error, error_response, unavailable_error
from fhir_gateway.security.authn import OAuthError
from fhir_gateway.store.database import DatabaseUnavailable

_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported", 429: "throttled"}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(DatabaseUnavailable, _unavailable)
    app.add_exception_handler(sa.exc.DataError, _refused_value)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = _CODES.get(exc.status_code, "processing")
    text = exc.detail if isinstance(exc.detail, str) else f"HTTP {exc.status_code}"
    if request.scope.get("path") == TOKEN_PATH:
        oauth = OAuthError("invalid_request", text, exc.status_code)
        return oauth_error_response(oauth, dict(exc.headers or {}))
    return fhir_response(
        error_response(FhirError(exc.status_code, [error(code, text)], dict(exc.headers or {})))
    )


async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
    """A parameter FastAPI could not convert: 400 naming the parameter (FastAPI would say 422)."""
    issues = [
        error(
            "invalid",
            str(e.get("msg", "invalid value")),
            ".".join(str(p) for p in e.get("loc", ())[1:]) or None,
        )
        for e in exc.errors()[:20]
    ]
    return fhir_response(error_response(FhirError(400, issues or [error("invalid", "Invalid request")])))


async def _unavailable(_request: Request, exc: Exception) -> Response:
    """A store that refuses (down, full, read-only) outside the router: 503 too, never a bare 500."""
    return fhir_response(error_response(unavailable_error(exc)))


async def _refused_value(_request: Request, exc: Exception) -> Response:
    """A value the database refused (console filters, outbox admin): 400, as on /fhir."""
    return fhir_response(error_response(data_error(exc)))
