"""FastAPI glue: turn an HTTP call on /fhir into a `FhirRequest`, and the answer back into HTTP.

Content negotiation lives here (JSON only); everything else is the router's job.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.fhir import strict_json
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import parse_query
from fhir_gateway.fhir.strict_json import JsonLimits
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.rest.router import Router, error_response
from fhir_gateway.security.principal import Principal

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_ACCEPTABLE = (*_JSON_TYPES, "*/*", "application/*", "application/json-patch+json")
_FORMAT_OK = ("json", "application/json", "application/fhir+json", "application/json+fhir")


def fhir_response(resp: FhirResponse) -> Response:
    body = orjson.dumps(resp.body) if resp.body is not None else b""
    media = f"{FHIR_JSON}; charset=utf-8" if resp.body is not None else None
    return Response(content=body, status_code=resp.status, headers=resp.headers, media_type=media)


def build_fhir_api(router: Router, limits: JsonLimits, max_parameters: int = 50) -> APIRouter:
    api = APIRouter()

    def serve(request: Request, raw: bytes, path: str) -> Response:
        try:
            req = to_fhir_request(request, raw, path, limits, max_parameters)
        except FhirError as exc:
            return fhir_response(error_response(exc))
        return fhir_response(router.handle(req))

    async def endpoint(request: Request, path: str = "") -> Response:
        # Parsing, the JSON checks and serialising run in the worker thread with the request
        # itself: on the event loop a 4 MB body held up every other connection for ~50 ms.
        raw = await request.body()  # bounded while it streams: api.body_limit.BodyLimitMiddleware
        return await run_in_threadpool(serve, request, raw, path)

    for route_path in ("/fhir", "/fhir/{path:path}"):
        api.add_api_route(
            route_path, endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
        )
    return api


def to_fhir_request(
    request: Request, raw: bytes, path: str, limits: JsonLimits, max_parameters: int = 50
) -> FhirRequest:
    params = parse_query(query_string(request), max_parameters=max_parameters)
    _negotiate(request, params)
    body: Any = None
    if raw and request.method in ("POST", "PUT", "PATCH"):
        body = _parse_body(request, raw, path, limits, max_parameters)
    base_url = getattr(request.app.state, "base_url", "") or str(request.base_url).rstrip("/") + "/fhir"
    principal = getattr(request.state, "principal", None) or Principal.unauthenticated()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return FhirRequest(
        method=request.method,
        path=path.strip("/"),
        params=params,
        body=body,
        headers=headers,
        principal=principal,
        base_url=base_url,
        client_address=request.client.host if request.client else None,
    )


def query_string(request: Request) -> str:
    """The raw query string as text: 400 when its bytes are not UTF-8 (`request.url` would
    raise UnicodeDecodeError on them: a 500)."""
    raw: bytes = request.scope.get("query_string", b"")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        bad = next((p for p in raw.split(b"&") if not _is_utf8(p)), b"")
        name = bad.partition(b"=")[0].decode("utf-8", "replace")[:100]
        raise FhirError(
            400, [error("value", f"Parameter '{name}' is not valid UTF-8", name or None)]
        ) from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _negotiate(request: Request, params: list[tuple[str, str]]) -> None:
    for name, value in params:
        if name == "_format" and value.split(";")[0].strip() not in _FORMAT_OK:
            raise FhirError(
                415,
                [
                    error(
                        "not-supported",
                        f"_format '{value}' is not supported; this server speaks application/fhir+json only",
                        "_format",
                    )
                ],
            )
    accept = request.headers.get("accept")
    if accept:
        kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
        if not any(k in _ACCEPTABLE for k in kinds):
            raise FhirError(
                415,
                [
                    error(
                        "not-supported",
                        f"Accept '{accept}' cannot be served; this server speaks application/fhir+json only",
                        "Accept",
                    )
                ],
            )


def _parse_body(request: Request, raw: bytes, path: str, limits: JsonLimits, max_parameters: int) -> Any:
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if path.rstrip("/").endswith("/_search") and content_type == "application/x-www-form-urlencoded":
        try:
            form = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FhirError(400, [error("value", "The form body is not valid UTF-8")]) from None
        return parse_query(form, max_parameters=max_parameters, where="the form body")
    if request.method == "PATCH":
        if content_type not in ("application/json-patch+json", *_JSON_TYPES):
            raise FhirError(
                415,
                [
                    error(
                        "not-supported",
                        f"PATCH needs application/json-patch+json, not '{content_type or 'none'}'",
                        "Content-Type",
                    )
                ],
            )
    elif content_type not in _JSON_TYPES:
        raise FhirError(
            415,
            [
                error(
                    "not-supported",
                    f"Content-Type '{content_type or 'none'}' is not supported; send application/fhir+json",
                    "Content-Type",
                )
            ],
        )
    return strict_json.loads(raw, limits)
