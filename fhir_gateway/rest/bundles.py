"""Batch and transaction Bundles posted to the FHIR base.

A transaction runs all entries in ONE database transaction through the same router as HTTP
calls: all-or-nothing, `urn:uuid:` references resolved, `ifNoneExist` honoured. A batch runs
each entry on its own.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from fhir_gateway.fhir.models import check_resource, rest_types
from fhir_gateway.fhir.outcome import FhirError, Invalid, Issue, error, information, operation_outcome
from fhir_gateway.fhir.search import parse_query
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.rest.router import Router, error_response
from fhir_gateway.security import audit
from fhir_gateway.store.database import after_commit
from fhir_gateway.store.repository import new_id
from fhir_gateway.workflow import referrals
from fhir_gateway.workflow.resources import ResourceService

# FHIR's processing order for transactions: deletes, creates, updates, reads.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


class BundleProcessor:
    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def _max_parameters(self) -> int:
        return self.router.ctx.settings.max_query_parameters

    def __call__(self, req: FhirRequest, _svc: ResourceService | None, _args: dict[str, str]) -> FhirResponse:
        bundle = check_shell(req.body)
        kind = bundle.get("type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise Invalid([error("structure", "Bundle.entry must be an array", "Bundle.entry")])
        for i, entry in enumerate(entries):
            _check_entry(entry, i, req.base_url)
        if kind == "transaction":
            return self.transaction(req, entries)
        if kind == "batch":
            return self.batch(req, entries)
        raise Invalid(
            [
                error(
                    "invalid",
                    f"Only batch and transaction Bundles can be posted to the base (got '{kind}')",
                    "Bundle.type",
                )
            ]
        )

    # -- batch ---------------------------------------------------------------------------------
    def batch(self, req: FhirRequest, entries: list[dict[str, Any]]) -> FhirResponse:
        responses = []
        for i, entry in enumerate(entries):
            try:
                sub = _entry_request(req, entry, self._max_parameters)
            except FhirError as exc:  # this entry's url is refused; the others still run
                responses.append(_response_entry(error_response(_located(exc, [i], {}, entries))))
                continue
            responses.append(_response_entry(self.router.handle(sub)))
        return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": responses})

    # -- transaction ---------------------------------------------------------------------------
    def transaction(self, req: FhirRequest, entries: list[dict[str, Any]]) -> FhirResponse:
        _check_unique_full_urls(entries)
        order = sorted(
            range(len(entries)),
            key=lambda i: (_ORDER[entries[i]["request"]["method"]], _type_rank(entries[i]), i),
        )
        results: dict[int, dict[str, Any]] = {}
        svc: ResourceService | None = None
        try:
            with self.router.ctx.database.connection(write=True) as session:
                svc = self.router.service(session, req)
                if req.hook is not None:
                    req.hook.begin(session)
                mapping = self._assign_ids(svc, entries, req.base_url)
                svc.promised = frozenset(mapping.new)
                resolved = [_resolve(e, mapping) for e in entries]
                self._validate_all(req, svc, entries, resolved, mapping.existing)
                replay = self._replayed_referral(req, svc, entries, mapping)
                if replay is not None:
                    results = replay
                    order = []
                refers = _is_referral(entries)
                for i in order:
                    entry = resolved[i]
                    if i in mapping.existing:
                        stored = svc.read(*mapping.ids[entry["fullUrl"]].split("/"))
                        if refers and stored.resource_type == "Patient":
                            stored = svc.refresh_patient(stored, entry["resource"])
                        response = self.router.resource_response(req, stored, 200, svc)
                    else:
                        sub = _entry_request(req, entry, self._max_parameters)
                        response = self._dispatch(sub, svc, entry, mapping)
                    if response.status >= 400:
                        raise FhirError(response.status, _issues_of(response, i, entries))
                    results[i] = _response_entry(response)
                if svc.audit.needed:
                    audit.write(svc.repo, svc.audit, 200)
                response = FhirResponse(200, _transaction_response(results, len(entries)))
                if req.hook is not None:
                    req.hook.before_commit(session, response)
        except FhirError as exc:
            failed = error_response(_located(exc, order, results, entries))
            if svc is not None and not svc.audit.needed:
                svc.audit.attempt("transaction", "Bundle")
            if svc is not None:
                svc.audit.outcome_text = svc.audit.outcome_text or audit.refusal_text(failed.body)
            if svc is not None and svc.audit.needed:
                self.router.write_audit(req, svc.audit, failed.status)
            return failed
        return response

    def _validate_all(
        self,
        req: FhirRequest,
        svc: ResourceService,
        entries: list[dict[str, Any]],
        resolved: list[dict[str, Any]],
        matched: set[int],
    ) -> None:
        """Validate every entry's resource before anything is written — entries an ifNoneExist
        matched and resent referrals too, though neither is written — and report every error of
        every entry in one OperationOutcome (400 when any breaks the base specification, else
        422), so a developer fixes them all in one round trip. Each valid resource is marked
        so its write does not validate it again. A type the caller may not write (a matched
        entry is not written) is left to that entry's own refusal (403, audited)."""
        targets: list[tuple[int, str]] = []
        for i, entry in enumerate(resolved):
            method = entry["request"]["method"]
            parts = _entry_parts(req.base_url, entry["request"]["url"])
            if method not in ("POST", "PUT") or not parts or parts[0] not in rest_types():
                continue  # an operation, or a type the router answers 404 for
            if i not in matched and not svc.may_write(parts[0], "create" if method == "POST" else "update"):
                return
            targets.append((i, parts[0]))
        issues: list[Issue] = []
        status = 422
        for i, rtype in targets:
            found, entry_status = svc.validation_errors(resolved[i]["resource"], rtype)
            if found:
                status = min(status, entry_status)
                issues.extend(
                    Issue(
                        issue.severity,
                        issue.code,
                        f"Bundle.entry[{i}]: {issue.diagnostics}",
                        _entry_expression(i, issue.expression, entries),
                    )
                    for issue in found
                )
        if issues:
            for j, kind in targets:  # each referral of a refused Bundle is refused for its content
                if kind == "ServiceRequest" and resolved[j]["request"]["method"] == "POST":
                    referrals.count_refused(svc.ctx, "invalid")
            raise Invalid(issues, status)
        for i, _rtype in targets:
            resource = entries[i]["resource"]
            digest = None
            if resource.get("resourceType") == "ServiceRequest":
                digest = referrals.posted_digest(resource, entries)
            svc.prepare(resolved[i]["resource"], digest)

    def _replayed_referral(
        self, req: FhirRequest, svc: ResourceService, entries: list[dict[str, Any]], mapping: _IdMapping
    ) -> dict[int, dict[str, Any]] | None:
        """A resent referral Bundle writes nothing: each entry is answered with the resource the
        original referral stored for it, or the one its ifNoneExist matched (a directory
        Practitioner or Organization), with its location and etag (`referrals.resent` decides
        what is a resend)."""
        try:
            originals = referrals.resent(svc.repo, entries, svc.find_referral)
        except FhirError:  # a known referral number with other content, or next to a new one
            referrals.count_refused(svc.ctx, "identifier-reused")
            raise
        if originals is None:
            return None
        resends = svc.ctx.metrics.referrals.labels("resend")
        after_commit(svc.repo.session, lambda: resends.inc(len(originals)))
        results: dict[int, dict[str, Any]] = {}
        for i, stored in enumerate(referrals.resent_answers(svc.repo, entries, originals)):
            full_url = entries[i].get("fullUrl")
            if stored is None and i in mapping.existing and full_url in mapping.ids:
                stored = svc.repo.find(*mapping.ids[full_url].split("/", 1))
            if stored is not None:
                results[i] = _response_entry(self.router.resource_response(req, stored, 200, svc))
            else:
                results[i] = {
                    "response": {
                        "status": "200 OK",
                        "outcome": operation_outcome(
                            [information("Not stored again: this referral was received before")]
                        ),
                    }
                }
        return results

    def _dispatch(
        self, sub: FhirRequest, svc: ResourceService, entry: dict[str, Any], mapping: _IdMapping
    ) -> FhirResponse:
        full_url = entry.get("fullUrl")
        if sub.method == "POST" and full_url in mapping.ids and len(sub.parts) == 1:
            # Create under the id we promised other entries.
            _rtype, rid = mapping.ids[full_url].split("/", 1)
            stored, created = svc.create(sub.body, resource_type=sub.parts[0], resource_id=rid)
            return self.router.resource_response(sub, stored, 201 if created else 200, svc)
        try:
            return self.router.dispatch(sub, svc)
        except FhirError as exc:
            return error_response(exc)

    def _assign_ids(self, svc: ResourceService, entries: list[dict[str, Any]], base_url: str) -> _IdMapping:
        """Give every create entry (POST to a type) its id up front (or the existing match for
        ifNoneExist), so references between entries can be rewritten before anything is written.

        The type is read from the url the way the entry is dispatched (`_entry_parts`): an
        absolute url under our base names the same type, and a POST to an operation
        (`Patient/$validate`) or to nothing creates nothing to promise an id for."""
        mapping = _IdMapping()
        for i, entry in enumerate(entries):
            request = entry["request"]
            full_url = entry.get("fullUrl")
            parts = _entry_parts(base_url, request["url"])
            if request["method"] == "POST" and full_url and len(parts) == 1 and parts[0][:1] != "$":
                rtype = parts[0]
                existing = None
                if request.get("ifNoneExist"):
                    # locked on a match too: a referral's Patient may be refreshed (written), and
                    # a referral's resend check takes the same lock anyway (a second search saved)
                    existing = svc.conditional_match(
                        rtype, request["ifNoneExist"], for_update=rtype in ("Patient", "ServiceRequest")
                    )
                if existing is not None:  # the caller's own record: a match grants nothing
                    mapping.ids[full_url] = existing.reference
                    mapping.existing.add(i)
                else:
                    mapping.ids[full_url] = f"{rtype}/{new_id()}"
                    mapping.new.add(mapping.ids[full_url])
            elif request["method"] == "PUT" and full_url and "resource" in entry and len(parts) == 2:
                # a conditional update (`Type?criteria`, one part) is given no id here: the body's
                # id names no record it writes (the match, or a server-assigned id, decides)
                resource = entry["resource"]
                # no resourceType: the PUT fails validation with a 400 later, not a KeyError 500 here
                if (
                    isinstance(resource, dict)
                    and resource.get("id")
                    and isinstance(resource.get("resourceType"), str)
                ):
                    mapping.ids[full_url] = f"{resource['resourceType']}/{resource['id']}"
        return mapping


def _transaction_response(results: dict[int, dict[str, Any]], count: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [results[i] for i in range(count)],
    }


def check_shell(body: Any) -> dict[str, Any]:
    """Validate the Bundle without its entries' resources: each resource is validated once,
    when its entry is processed, instead of twice."""
    if isinstance(body, dict) and isinstance(body.get("entry"), list):
        entries = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in body["entry"]
        ]
        check_resource({**body, "entry": entries}, "Bundle")
        return body
    return check_resource(body, "Bundle")


class _IdMapping:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # fullUrl → Type/id
        self.existing: set[int] = set()  # entries satisfied by ifNoneExist
        self.new: set[str] = set()  # Type/id this transaction creates (other entries may point there)


def _is_referral(entries: list[dict[str, Any]]) -> bool:
    """A Bundle that posts a ServiceRequest: its matched Patient is brought up to date."""
    return any(
        e["request"]["method"] == "POST" and (e.get("resource") or {}).get("resourceType") == "ServiceRequest"
        for e in entries
    )


def _type_rank(entry: dict[str, Any]) -> int:
    """Within one method group, write referrals last so the resources they point to exist."""
    resource = entry.get("resource")
    return 1 if isinstance(resource, dict) and resource.get("resourceType") == "ServiceRequest" else 0


def _check_entry(entry: Any, i: int, base_url: str = "") -> None:
    where = f"Bundle.entry[{i}]"
    request = entry.get("request") if isinstance(entry, dict) else None
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("method"), str)
        or not isinstance(request.get("url"), str)
    ):
        raise Invalid(
            [error("required", "Every entry needs request.method and request.url", f"{where}.request")]
        )
    if request["method"] not in _ORDER:
        raise Invalid(
            [
                error(
                    "code-invalid", f"Unknown request.method '{request['method']}'", f"{where}.request.method"
                )
            ]
        )
    if "resource" in entry and not isinstance(entry["resource"], dict):
        # check_shell leaves the resources out of the Bundle model: a string or array there
        # reached `.get` on the PATCH and error-location paths (500s)
        raise Invalid(
            [
                error(
                    "structure",
                    "entry.resource must be a JSON object holding one resource",
                    f"{where}.resource",
                )
            ]
        )
    if request["method"] in ("POST", "PUT") and not isinstance(entry.get("resource"), dict):
        raise Invalid(
            [error("required", f"A {request['method']} entry needs a resource", f"{where}.resource")]
        )
    path, _query = _entry_url(base_url, request["url"], f"{where}.request.url")
    if request["method"] == "POST" and not path:
        raise Invalid(
            [
                error(
                    "value",
                    f"request.url '{request['url'][:100]}' of a POST entry names no resource type",
                    f"{where}.request.url",
                )
            ]
        )


def _check_unique_full_urls(entries: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if full_url and full_url in seen:
            raise Invalid(
                [error("duplicate", f"fullUrl '{full_url}' appears twice", f"Bundle.entry[{i}].fullUrl")]
            )
        if full_url:
            seen.add(full_url)


def _resolve(entry: dict[str, Any], mapping: _IdMapping) -> dict[str, Any]:
    """Rewrite `reference` values (and the request url) that name another entry's fullUrl."""
    if not mapping.ids:
        return entry

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in mapping.ids:
                out["reference"] = mapping.ids[ref]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    resolved = dict(entry)
    if "resource" in entry:
        resolved["resource"] = walk(entry["resource"])
    url = entry["request"]["url"]
    rewritten = _resolve_url(url, mapping.ids)
    if rewritten != url:
        resolved["request"] = {**entry["request"], "url": rewritten}
    return resolved


def _resolve_url(url: str, ids: dict[str, str]) -> str:
    """A conditional request.url (`Consent?patient=urn:uuid:…`) with each search value that IS an
    entry's fullUrl (whole value or one of its comma-separated alternatives, as sent or percent-
    encoded) replaced by that entry's Type/id. Whole values only: a fullUrl that merely occurs
    inside another value or the path is left alone, and every value is rewritten, not just one."""
    path, sep, query = url.partition("?")
    if not sep:
        return url
    params = []
    for param in query.split("&"):
        name, eq, value = param.partition("=")
        if eq:
            value = ",".join(ids.get(unquote(v), ids.get(v, v)) for v in value.split(","))
        params.append(f"{name}{eq}{value}")
    return f"{path}?{'&'.join(params)}"


def _entry_url(base_url: str, url: str, where: str = "Bundle.entry.request.url") -> tuple[str, str]:
    """(path relative to the FHIR base, query) of an entry's request.url; absolute urls under
    our base name the same path. Invalid (400) when it is no URL at all (`http://[x`)."""
    if base_url and url.startswith(base_url):
        url = url[len(base_url) :]
    try:
        split = urlsplit(url)
    except ValueError:
        raise Invalid([error("value", f"request.url '{url[:100]}' is not a valid URL", where)]) from None
    return split.path.strip("/"), split.query


def _entry_parts(base_url: str, url: str) -> list[str]:
    return [p for p in _entry_url(base_url, url)[0].split("/") if p]


def _entry_request(parent: FhirRequest, entry: dict[str, Any], max_parameters: int = 50) -> FhirRequest:
    request = entry["request"]
    path, query = _entry_url(parent.base_url, request["url"])
    params = parse_query(query, max_parameters=max_parameters, where="request.url", keep_blank_values=False)
    headers = {k: v for k, v in parent.headers.items() if k in ("prefer",)}
    for field, header in (
        ("ifMatch", "if-match"),
        ("ifNoneExist", "if-none-exist"),
        ("ifNoneMatch", "if-none-match"),
        ("ifModifiedSince", "if-modified-since"),
    ):
        if request.get(field):
            headers[header] = request[field]
    body = entry.get("resource")
    if request["method"] == "PATCH":
        body = _patch_body(entry)
    return FhirRequest(
        method=request["method"],
        path=path,
        params=params,
        body=body,
        headers=headers,
        principal=parent.principal,
        base_url=parent.base_url,
        client_address=parent.client_address,
        channel=parent.channel,
    )


def _patch_body(entry: dict[str, Any]) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary with base64 data (FHIR R4 convention)."""
    resource = entry.get("resource") or {}
    if resource.get("resourceType") == "Binary" and resource.get("data"):
        try:
            return orjson.loads(base64.b64decode(resource["data"]))
        except (ValueError, orjson.JSONDecodeError):
            raise Invalid(
                [error("structure", "PATCH entry Binary.data is not a base64 JSON Patch")]
            ) from None
    raise Invalid([error("required", "A PATCH entry needs a Binary resource holding the JSON Patch")])


def _response_entry(response: FhirResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"status": _STATUS_TEXT.get(response.status, str(response.status))}
    if "Location" in response.headers:
        out["location"] = response.headers["Location"]
    if "ETag" in response.headers:
        out["etag"] = response.headers["ETag"]
    body = response.body
    if body and body.get("resourceType") != "OperationOutcome":
        last = body.get("meta", {}).get("lastUpdated")
        if last:
            out["lastModified"] = last
    entry: dict[str, Any] = {"response": out}
    if body and body.get("resourceType") == "OperationOutcome":
        out["outcome"] = body
    elif body:
        entry["resource"] = body
        entry["fullUrl"] = out.get("location", "").split("/_history")[0] or None
        if entry["fullUrl"] is None:
            del entry["fullUrl"]
    return entry


def _issues_of(response: FhirResponse, i: int, entries: list[dict[str, Any]]) -> list[Issue]:
    issues = []
    for raw in (response.body or operation_outcome([])).get("issue", []):
        expr = raw.get("expression", [None])[0]
        issues.append(
            Issue(
                raw.get("severity", "error"),
                raw.get("code", "processing"),
                f"Bundle.entry[{i}]: {raw.get('diagnostics', '')}",
                _entry_expression(i, expr, entries),
            )
        )
    return issues


def _entry_expression(i: int, expression: str | None, entries: list[dict[str, Any]] | None = None) -> str:
    """`Patient.birthDate` raised by entry 1 → `Bundle.entry[1].resource.birthDate`. An error
    about another resource (routing a ServiceRequest fails on its Patient's address) points at
    the entry holding that resource."""
    if not expression:
        return f"Bundle.entry[{i}]"
    head, _, rest = expression.partition(".")
    if head[:1].isupper() and "[" not in head:
        if entries and (entries[i].get("resource") or {}).get("resourceType") != head:
            i = next(
                (j for j, e in enumerate(entries) if (e.get("resource") or {}).get("resourceType") == head), i
            )
        return f"Bundle.entry[{i}].resource" + (f".{rest}" if rest else "")
    return f"Bundle.entry[{i}].resource.{expression}"


def _located(
    exc: FhirError, order: list[int], done: dict[int, Any], entries: list[dict[str, Any]]
) -> FhirError:
    """Name the failing entry when the error came from inside the store/service."""
    if any(i.diagnostics.startswith("Bundle.entry[") for i in exc.issues):
        return exc
    pending = [i for i in order if i not in done]
    if not pending:
        return exc
    idx = pending[0]
    issues = [
        Issue(
            i.severity,
            i.code,
            f"Bundle.entry[{idx}]: {i.diagnostics}",
            _entry_expression(idx, i.expression, entries),
        )
        for i in exc.issues
    ]
    return FhirError(exc.status, issues, exc.headers)
