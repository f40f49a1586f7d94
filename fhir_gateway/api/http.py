"""FastAPI glue: turn an HTTP call on /fhir into a `FhirRequest`, and the answer back into HTTP.

Content negotiation lives here: FHIR JSON and FHIR XML in and out (`fhir.xml` turns XML into
the JSON dict and back, so the router only ever sees JSON); everything else is the router's job.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from fhir_gateway.fhir import strict_json
from fhir_gateway.fhir import xml as fhir_xml
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import parse_query
from fhir_gateway.fhir.strict_json import JsonLimits
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.rest.router import Router, error_response
from fhir_gateway.security.principal import Principal

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_XML_TYPES = ("application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml")
# What a requested type (Accept, `_format`) is answered with: the type itself (R4 http.html#mime-type:
# the server should answer in the type asked for), the pre-R4 `+fhir` names with their R4 names.
_ANSWER_AS = {
    **{t: t for t in (*_JSON_TYPES, *_XML_TYPES)},
    "application/json+fhir": FHIR_JSON,
    "application/xml+fhir": FHIR_XML,
    "json": FHIR_JSON,
    "xml": FHIR_XML,
    "application/json-patch+json": FHIR_JSON,  # a PATCH client's Accept: the answer is a resource
}
_ANYTHING = ("*/*", "application/*")
SUPPORTED = "application/fhir+json, application/json, application/fhir+xml or application/xml"


def is_xml(media_type: str) -> bool:
    return media_type in _XML_TYPES


def fhir_response(resp: FhirResponse, media_type: str = FHIR_JSON) -> Response:
    """The router's answer in the negotiated type (an OperationOutcome or Bundle included)."""
    if resp.body is None:
        return Response(content=b"", status_code=resp.status, headers=resp.headers)
    if is_xml(media_type):
        try:
            body = fhir_xml.dumps(resp.body)
        except Exception as exc:  # a bug: what the gateway built does not fit its own model
            log.error("cannot render %s as XML: %s", resp.body.get("resourceType"), type(exc).__name__)
            failed = error_response(
                FhirError(500, [error("exception", "The answer could not be rendered as XML")])
            )
            return fhir_response(failed, media_type)
    else:
        body = orjson.dumps(resp.body)
    media = f"{media_type}; charset=utf-8"
    return Response(content=body, status_code=resp.status, headers=resp.headers, media_type=media)


def negotiated_outcome(scope: Scope, outcome: dict[str, Any]) -> tuple[str, bytes]:
    """(content type, body) of an OperationOutcome a middleware answers with before any route
    (401, 413, 429): FHIR XML when `_format`, Accept or the body's type ask for XML, like the
    API's own errors; FHIR JSON otherwise, and whenever what was asked cannot be produced."""
    try:
        media = negotiate(Request(scope))
    except (FhirError, ValueError, UnicodeError):  # 406 or an unreadable query: JSON
        media = FHIR_JSON
    if is_xml(media):
        try:
            return f"{media}; charset=utf-8", fhir_xml.dumps(outcome)
        except Exception as exc:  # a bug: still answer, in JSON
            log.error("cannot render an OperationOutcome as XML: %s", type(exc).__name__)
    return f"{FHIR_JSON}; charset=utf-8", orjson.dumps(outcome)


def build_fhir_api(router: Router, limits: JsonLimits, max_parameters: int = 50) -> APIRouter:
    api = APIRouter()

    def serve(request: Request, raw: bytes, path: str) -> Response:
        media = FHIR_JSON  # a 406 is answered in JSON: the one type every FHIR client reads
        try:
            media = negotiate(request)
            req = to_fhir_request(request, raw, path, limits, max_parameters)
        except FhirError as exc:
            return fhir_response(error_response(exc), media)
        return fhir_response(router.handle(req), media)

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


def negotiate(request: Request) -> str:
    """The media type to answer in: `_format` first (it overrides Accept, R4 http.html#mime-type),
    then Accept by preference (q); with neither, the type of the body sent, else FHIR JSON.
    406 when what is asked for cannot be produced."""
    content_type = _media(request.headers.get("content-type") or "")
    default = FHIR_XML if is_xml(content_type) else FHIR_JSON
    formats = request.query_params.getlist("_format")
    if formats:
        wanted = _media(formats[-1])
        if wanted in _ANSWER_AS:
            return _ANSWER_AS[wanted]
        raise _not_acceptable(f"_format '{formats[-1][:100]}' is not supported", "_format")
    accept = request.headers.get("accept")
    if not accept or not accept.strip():
        return default
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        kind, _, rest = part.partition(";")
        q = 1.0
        for param in rest.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, i, _media(kind)))
    for _, _, kind in sorted(ranked):
        if kind in _ANSWER_AS:
            return _ANSWER_AS[kind]
        if kind in _ANYTHING:
            return default
    raise _not_acceptable(f"Accept '{accept[:200]}' cannot be served", "Accept")


def _media(value: str) -> str:
    return value.split(";")[0].strip().lower()


def _not_acceptable(what: str, where: str) -> FhirError:
    return FhirError(406, [error("not-supported", f"{what}; this server answers in {SUPPORTED}", where)])


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
    elif is_xml(content_type):
        return fhir_xml.loads(raw, limits)
    elif content_type not in _JSON_TYPES:
        raise FhirError(
            415,
            [
                error(
                    "not-supported",
                    f"Content-Type '{content_type or 'none'}' is not supported; send {SUPPORTED}",
                    "Content-Type",
                )
            ],
        )
    return strict_json.loads(raw, limits)
