"""The FHIR REST surface as one route table.

Each handler takes (request, service, path arguments) and returns a `FhirResponse`. The HTTP
layer, Bundle entries and tests all call `Router.handle` / `Router.dispatch`, so a
transaction entry behaves exactly like the same call over HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from fhir_gateway.fhir.elements import parse_elements, subset
from fhir_gateway.fhir.models import is_known_type, rest_types
from fhir_gateway.fhir.outcome import FhirError, error, operation_outcome
from fhir_gateway.fhir.search import (
    MAX_DB_INTEGER,
    MAX_VERSION_ID,
    SearchQuery,
    ascii_int,
    check_text,
    encode_cursor,
    parse_search,
)
from fhir_gateway.fhir.searchparams import parse_date_range
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.security import audit
from fhir_gateway.store.database import DatabaseUnavailable, refusal
from fhir_gateway.store.repository import SearchPage, Stored
from fhir_gateway.workflow.context import GatewayContext
from fhir_gateway.workflow.resources import ResourceService, conditional_query

log = logging.getLogger(__name__)

Handler = Callable[[FhirRequest, ResourceService, dict[str, str]], FhirResponse]
Operation = Callable[[FhirRequest, ResourceService, str | None, str | None], FhirResponse]


@dataclass(frozen=True)
class RestRoute:
    """One row of the FHIR route table (not `routing.Route`, which says where a referral goes)."""

    method: str
    pattern: tuple[str, ...]  # literals, or {type} {id} {vid} {op}
    handler: Handler
    writes: bool


class Router:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.operations: dict[tuple[str | None, str], Operation] = {}
        self.operation_definitions: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.bundle_handler: Handler | None = None
        self.capability: Callable[[FhirRequest], dict[str, Any]] | None = None
        self.routes = [
            RestRoute("GET", ("metadata",), self._metadata, False),
            RestRoute("POST", (), self._bundle, True),
            RestRoute("GET", ("_history",), self._history, False),
            RestRoute("GET", ("{type}",), self._search, False),
            RestRoute("POST", ("{type}", "_search"), self._search, False),
            RestRoute("POST", ("{type}",), self._create, True),
            RestRoute("PUT", ("{type}",), self._conditional_update, True),
            RestRoute("DELETE", ("{type}",), self._conditional_delete, True),
            RestRoute("GET", ("{type}", "_history"), self._history, False),
            RestRoute("GET", ("OperationDefinition", "{id}"), self._operation_definition, False),
            RestRoute("POST", ("{type}", "{op}"), self._operation, True),
            RestRoute("GET", ("{type}", "{op}"), self._operation, False),
            RestRoute("GET", ("{type}", "{id}"), self._read, False),
            RestRoute("PUT", ("{type}", "{id}"), self._update, True),
            RestRoute("PATCH", ("{type}", "{id}"), self._patch, True),
            RestRoute("DELETE", ("{type}", "{id}"), self._delete, True),
            RestRoute("GET", ("{type}", "{id}", "_history"), self._history, False),
            RestRoute("GET", ("{type}", "{id}", "_history", "{vid}"), self._vread, False),
            RestRoute("POST", ("{type}", "{id}", "{op}"), self._operation, True),
            RestRoute("GET", ("{type}", "{id}", "{op}"), self._operation, False),
            RestRoute("POST", ("{op}",), self._operation, True),
            RestRoute("GET", ("{op}",), self._operation, False),
        ]

    # -- entry points --------------------------------------------------------------------------
    def handle(self, req: FhirRequest) -> FhirResponse:
        """Run one request in its own transaction(s); every failure becomes an OperationOutcome.

        A database that refuses (down, full, read-only) gives 503 — also when only the audit
        record could not be written: personal data is not handed out unlogged (NEN 7513)."""
        try:
            return self._handle(req)
        except FhirError as exc:
            return error_response(exc)
        except (DatabaseUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            return error_response(unavailable_error(exc))
        except sa.exc.DataError as exc:  # a value the database refused that no check caught
            return error_response(data_error(exc))

    def _handle(self, req: FhirRequest) -> FhirResponse:
        route, args = self.match(req)
        self._precheck(req, route, args)
        if route.handler == self._bundle or self._own_transaction(args):
            return route.handler(req, None, args)  # type: ignore[arg-type]  # manages its own transactions
        service: ResourceService | None = None
        try:
            with self.ctx.database.connection(write=route.writes) as session:
                service = self.service(session, req)
                response = route.handler(req, service, args)
                if route.writes and service.audit.needed:  # atomic with the change it records
                    audit.write(service.repo, service.audit, response.status)
                    service.audit.written()
        except FhirError as exc:
            response = error_response(exc)
        if service is not None and response.status >= 400 and not service.audit.needed:
            service.audit.attempt(req.method.lower(), req.path)  # a refusal is logged, whatever it was
        if service is not None and response.status >= 400:
            service.audit.outcome_text = service.audit.outcome_text or audit.refusal_text(response.body)
        if service is not None and service.audit.needed:
            self.write_audit(req, service.audit, response.status)
        return response

    def _precheck(self, req: FhirRequest, route: RestRoute, args: dict[str, str]) -> None:
        """Search strings are parsed (and refused: too costly, bytes the store cannot compare)
        before a connection is taken; parsing is pure and costs microseconds, so the handler
        simply parses again."""
        if route.handler == self._search:
            self.search_query(req, args)
        elif route.handler == self._create and req.header("if-none-exist"):
            conditional_query(args["type"], req.header("if-none-exist") or "", self.ctx.settings)
        elif route.handler in (self._conditional_update, self._conditional_delete):
            conditional_query(args["type"], _criteria(req), self.ctx.settings, "url")

    def write_audit(self, req: FhirRequest, trail: audit.AuditTrail, status: int) -> None:
        """Reads (and failed writes) are logged in a transaction of their own."""
        with self.ctx.database.connection(write=True) as session:
            audit.write(self.service(session, req).repo, trail, status)

    def _own_transaction(self, args: dict[str, str]) -> bool:
        """Operations that run transactions themselves (e.g. $process-message) get none around them."""
        name = args.get("op")
        op = self.operations.get((args.get("type"), name or "")) or self.operations.get((None, name or ""))
        return bool(name) and bool(getattr(op, "own_transaction", False))

    def dispatch(self, req: FhirRequest, service: ResourceService) -> FhirResponse:
        """Run one request inside the caller's transaction (transaction Bundle entries)."""
        route, args = self.match(req)
        if route.handler == self._bundle:
            raise FhirError(
                400, [error("not-supported", "A Bundle may not contain a nested batch/transaction")]
            )
        return route.handler(req, service, args)

    def service(self, session: Any, req: FhirRequest) -> ResourceService:
        service = ResourceService(self.ctx.repository(session, req.base_url), self.ctx, req.principal)
        service.audit.address = req.client_address
        service.audit.channel = req.channel
        return service

    def match(self, req: FhirRequest) -> tuple[RestRoute, dict[str, str]]:
        parts = req.parts
        path_matched = False
        for route in self.routes:
            args = _match(route.pattern, parts)
            if args is None:
                continue
            path_matched = True
            if route.method == req.method:
                if "type" in args and not (
                    args["type"] in rest_types() or (args["type"] == "Bundle" and "op" in args)
                ):
                    known = (
                        "known but not served over REST" if is_known_type(args["type"]) else "not supported"
                    )
                    raise FhirError(
                        404, [error("not-supported", f"Resource type '{args['type']}' is {known}")]
                    )
                for name in ("id", "vid"):
                    if name in args:  # the id reaches the database: PostgreSQL refuses U+0000
                        check_text(args[name], name)
                return route, args
        if path_matched:
            raise FhirError(405, [error("not-supported", f"{req.method} is not allowed on '/{req.path}'")])
        raise FhirError(404, [error("not-found", f"No FHIR interaction at '/{req.path}'")])

    # -- handlers ------------------------------------------------------------------------------
    def _metadata(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        assert self.capability is not None
        return FhirResponse(200, self.capability(req))

    def _operation_definition(
        self, req: FhirRequest, svc: ResourceService, args: dict[str, str]
    ) -> FhirResponse:
        """The definition of an operation the gateway offers (public, like the CapabilityStatement)."""
        for definition in self.operation_definitions.values():
            if definition["id"] == args["id"]:
                return FhirResponse(200, definition)
        raise FhirError(404, [error("not-found", f"OperationDefinition/{args['id'][:64]} is not known")])

    def _bundle(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        if self.bundle_handler is None:
            raise FhirError(501, [error("not-supported", "Bundle processing is not configured")])
        return self.bundle_handler(req, svc, args)

    def _create(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored, created = svc.create(
            req.body, resource_type=args["type"], if_none_exist=req.header("if-none-exist")
        )
        return self.resource_response(req, stored, 201 if created else 200, svc)

    def _read(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored = svc.read(args["type"], args["id"])
        if _not_modified(req, stored):
            return FhirResponse(304, None, _resource_headers(req, stored))
        return FhirResponse(200, _cut(svc.view(stored), _read_elements(req, args)), _resource_headers(req, stored))

    def _vread(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored = svc.vread(args["type"], args["id"], _version(args["vid"], "vid"))
        return FhirResponse(200, _cut(svc.view(stored), _read_elements(req, args)), _resource_headers(req, stored))

    def _update(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored, created = svc.update(args["type"], args["id"], req.body, if_match=if_match(req))
        return self.resource_response(req, stored, 201 if created else 200, svc)

    def _conditional_update(
        self, req: FhirRequest, svc: ResourceService, args: dict[str, str]
    ) -> FhirResponse:
        stored, created = svc.conditional_update(
            args["type"], _criteria(req), req.body, if_match=if_match(req)
        )
        return self.resource_response(req, stored, 201 if created else 200, svc)

    def _conditional_delete(
        self, req: FhirRequest, svc: ResourceService, args: dict[str, str]
    ) -> FhirResponse:
        stored = svc.conditional_delete(args["type"], _criteria(req))
        return FhirResponse(204, None, {"ETag": stored.etag} if stored else {})

    def _patch(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored = svc.patch(args["type"], args["id"], req.body, if_match=if_match(req))
        return self.resource_response(req, stored, 200, svc)

    def _delete(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        stored = svc.delete(args["type"], args["id"])
        headers = {"ETag": stored.etag} if stored else {}
        return FhirResponse(204, None, headers)

    def _search(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        query = self.search_query(req, args)
        page = svc.search(query)
        return FhirResponse(200, self.search_bundle(req, args["type"], query, page, svc))

    def search_query(self, req: FhirRequest, args: dict[str, str]) -> SearchQuery:
        params = list(req.params)
        if req.method == "POST" and isinstance(req.body, list):  # form body parsed by the HTTP layer
            params.extend(req.body)
        strict = req.prefer.get("handling") == "strict"
        settings = self.ctx.settings
        return parse_search(
            args["type"],
            params,
            strict=strict,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            base_url=req.base_url,
            max_or_values=settings.max_search_or_values,
            max_parameters=settings.max_query_parameters,
            max_values=settings.max_search_values,
        )

    def _history(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        params = dict(req.params)
        count = _int_param(params.get("_count", str(self.ctx.settings.default_page_size)), "_count")
        count = min(count, self.ctx.settings.max_page_size)
        since = None
        if "_since" in params:
            try:
                since = parse_date_range(params["_since"]).low
            except ValueError:
                raise FhirError(
                    400, [error("invalid", f"_since '{params['_since']}' is not an instant", "_since")]
                ) from None
        before = _int_param(params["_page_before"], "_page_before") if "_page_before" in params else None
        entries, next_pk = svc.history(
            args.get("type"), args.get("id"), since=since, count=count, before_pk=before
        )
        path = "/".join(req.parts)
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "history",
            "link": [{"relation": "self", "url": _url(req.base_url, path, list(req.params))}],
        }
        if next_pk is not None:
            nxt = [(k, v) for k, v in req.params if k != "_page_before"] + [("_page_before", str(next_pk))]
            bundle["link"].append({"relation": "next", "url": _url(req.base_url, path, nxt)})
        bundle["entry"] = [_history_entry(req.base_url, e, svc.view(e)) for e in entries]
        if not bundle["entry"]:
            del bundle["entry"]
        return FhirResponse(200, bundle)

    def _operation(self, req: FhirRequest, svc: ResourceService, args: dict[str, str]) -> FhirResponse:
        name = args.get("op", "")
        if not name.startswith("$"):
            raise FhirError(404, [error("not-found", f"No FHIR interaction at '/{req.path}'")])
        op = self.operations.get((args.get("type"), name)) or self.operations.get((None, name))
        if op is None:
            raise FhirError(404, [error("not-supported", f"Operation {name} is not supported here")])
        return op(req, svc, args.get("type"), args.get("id"))

    # -- response building ---------------------------------------------------------------------
    def resource_response(
        self, req: FhirRequest, stored: Stored, status: int, svc: ResourceService | None = None
    ) -> FhirResponse:
        headers = _resource_headers(req, stored)
        headers["Location"] = f"{req.base_url}/{stored.reference}/_history/{stored.version_id}"
        prefer = req.prefer.get("return", "representation")
        if prefer == "minimal":
            return FhirResponse(status, None, headers)
        if prefer == "OperationOutcome":
            return FhirResponse(status, operation_outcome([]), headers)
        return FhirResponse(status, svc.view(stored) if svc else stored.content, headers)

    def search_bundle(
        self, req: FhirRequest, resource_type: str, query: Any, page: SearchPage, svc: ResourceService
    ) -> dict[str, Any]:
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if page.total is not None:
            bundle["total"] = page.total
        echo = list(query.echo)
        if not any(k == "_count" for k, _ in echo):
            echo.append(("_count", str(query.count)))
        # `first` is the search without a cursor; `previous` reads backwards from this page's first
        # match (an empty later page has only `first` to go back to)
        links = [
            {"relation": "self", "url": _url(req.base_url, resource_type, echo + _cursor_param(query))},
            {"relation": "first", "url": _url(req.base_url, resource_type, echo)},
        ]
        if page.previous_cursor is not None:
            prev = [*echo, ("_cursor", encode_cursor(*page.previous_cursor, backward=True))]
            links.append({"relation": "previous", "url": _url(req.base_url, resource_type, prev)})
        if page.next_cursor is not None:
            nxt = [*echo, ("_cursor", encode_cursor(*page.next_cursor))]
            links.append({"relation": "next", "url": _url(req.base_url, resource_type, nxt)})
        bundle["link"] = links
        entries = [_search_entry(req.base_url, s, "match", _cut(svc.view(s), query.elements)) for s in page.matches]
        entries += [_search_entry(req.base_url, s, "include", svc.view(s)) for s in page.included]
        if query.warnings:
            entries.append({"resource": operation_outcome(query.warnings), "search": {"mode": "outcome"}})
        if entries:
            bundle["entry"] = entries
        return bundle


# -- helpers -------------------------------------------------------------------------------------


def error_response(exc: FhirError) -> FhirResponse:
    return FhirResponse(exc.status, exc.outcome(), dict(exc.headers))


def unavailable_error(exc: Exception) -> FhirError:
    """503 + Retry-After for a store that refuses; the diagnostics name the condition only."""
    refused = exc if isinstance(exc, DatabaseUnavailable) else refusal(exc) or DatabaseUnavailable()
    log.warning("database refused: %s (%s)", type(refused).__name__, refused)
    return FhirError(503, [error("transient", refused.diagnostics)], {"Retry-After": "5"})


def _match(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    args: dict[str, str] = {}
    for token, part in zip(pattern, parts, strict=True):
        if token.startswith("{"):
            name = token[1:-1]
            if name == "op" and not part.startswith("$"):
                return None
            if name in ("type", "id", "vid") and (part.startswith(("$", "_"))):
                return None
            if name == "type" and not part[:1].isupper():
                return None
            args[name] = part
        elif token != part:
            return None
    return args


def _criteria(req: FhirRequest) -> str:
    """The query string of a conditional update or delete: the search that picks the record."""
    return urlencode(list(req.params), safe="|:/,")


def if_match(req: FhirRequest) -> int | None:
    raw = req.header("if-match")
    if raw is None:
        return None
    return _version(raw.strip().removeprefix("W/").strip('"'), "If-Match")


def _version(raw: str, where: str) -> int:
    version = ascii_int(raw)
    if version is None:
        raise FhirError(400, [error("invalid", f"'{raw[:100]}' is not a version id", where)])
    if version > MAX_VERSION_ID:
        raise FhirError(400, [error("value", f"Version id {raw[:30]} is out of range", where)])
    return version


def _int_param(raw: str, name: str, maximum: int = MAX_DB_INTEGER) -> int:
    """A non-negative integer in ASCII digits; larger than `maximum` is clamped to it."""
    value = ascii_int(raw)
    if value is None:
        raise FhirError(400, [error("invalid", f"{name} must be a non-negative integer", name)])
    return min(value, maximum)


def data_error(exc: Exception) -> FhirError:
    """400 for a value the database refused (class 22, data exception). Only the type is logged:
    the driver's message quotes the statement's parameters."""
    log.warning("database refused a value: %s", type(getattr(exc, "orig", exc)).__name__)
    return FhirError(
        400, [error("value", "A value in this request cannot be stored or compared by the database")]
    )


def _http_date(moment: datetime) -> str:
    from datetime import UTC

    return format_datetime(moment.replace(tzinfo=UTC), usegmt=True)


def _resource_headers(req: FhirRequest, stored: Stored) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": _http_date(stored.last_updated)}


def _not_modified(req: FhirRequest, stored: Stored) -> bool:
    tag = req.header("if-none-match")
    return tag is not None and tag.strip() in (stored.etag, f'"{stored.version_id}"')


def _url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params, safe="|:/,")
    return f"{base}/{path}" + (f"?{query}" if query else "")


def _read_elements(req: FhirRequest, args: dict[str, str]) -> tuple[str, ...]:
    """`_elements` of a read or vread (repeats add up, like on a search)."""
    return tuple(n for k, v in req.params if k == "_elements" for n in parse_elements(args["type"], v))


def _cut(content: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """The caller's view cut to `_elements` (never more than the view: it is cut after it)."""
    return subset(content, elements) if elements else content


def _cursor_param(query: Any) -> list[tuple[str, str]]:
    return [("_cursor", encode_cursor(*query.cursor, backward=query.backward))] if query.cursor else []


def _search_entry(base: str, stored: Stored, mode: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"{base}/{stored.reference}", "resource": content, "search": {"mode": mode}}


def _history_entry(base: str, stored: Stored, content: dict[str, Any]) -> dict[str, Any]:
    method = stored.method if stored.method in ("POST", "PUT", "DELETE") else "PUT"
    url = stored.resource_type if method == "POST" else stored.reference
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{stored.reference}",
        "request": {"method": method, "url": url},
        "response": {
            "status": status,
            "etag": stored.etag,
            "lastModified": stored.content.get("meta", {}).get("lastUpdated"),
        },
    }
    if not stored.deleted:
        entry["resource"] = content
    return entry
