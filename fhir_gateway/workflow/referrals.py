"""Referral ingest: a GP's ServiceRequest becomes a Task + CarePlan at the right welfare organisation.

Runs inside the caller's database transaction (a REST create or a transaction Bundle), so the
ServiceRequest, Task, CarePlan and Provenance are committed together or not at all.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_gateway import tracing
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import parse_search, search_escape
from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.mapping import referral_inputs
from fhir_gateway.routing import Route, route
from fhir_gateway.security.compartments import organization_filter
from fhir_gateway.security.minimise import consent_scopes
from fhir_gateway.security.principal import Principal
from fhir_gateway.store import referral_digests
from fhir_gateway.store.database import after_commit
from fhir_gateway.store.repository import Repository, Stored, new_id
from fhir_gateway.vocabulary import DATA_OPERATION, PROVENANCE_PARTICIPANT_TYPE
from fhir_gateway.workflow.context import GatewayContext

log = logging.getLogger(__name__)


@dataclass
class Referral:
    service_request: Stored
    task: Stored | None
    care_plan: Stored | None
    created: bool  # False: a resend of a referral we already had


def receive(
    repo: Repository,
    ctx: GatewayContext,
    principal: Principal,
    service_request: dict[str, Any],
    *,
    resource_id: str | None = None,
    digest: str | None = None,
) -> Referral:
    """Store a validated referral with its derived Task, CarePlan and Provenance.

    A resend (same ServiceRequest.identifier, same content) returns the original and creates
    nothing; the same identifier with other content is a 409. `digest`: what was posted
    (`posted_digest`; default: the ServiceRequest alone, as a REST create posts it)."""
    with tracing.span("referral.ingest") as span:
        try:
            referral = _receive(repo, ctx, principal, service_request, resource_id, digest)
        except _Refused as refused:
            span.set_attribute("referral.outcome", "rejected")
            span.set_attribute("referral.refused_reason", refused.reason)
            count_refused(ctx, refused.reason)
            raise refused.error from None
        span.set_attribute("referral.outcome", "accepted" if referral.created else "resend")
        return referral


class _Refused(Exception):
    """A FhirError with the operator's name for the reason (a metrics label, so few values)."""

    def __init__(self, reason: str, error: FhirError) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


def count_refused(ctx: GatewayContext, reason: str) -> None:
    """A referral refused before it was stored (`invalid`: its validation, by the caller)."""
    ctx.metrics.referrals.labels("rejected").inc()
    ctx.metrics.refused.labels(reason).inc()


def check_resend(repo: Repository, ctx: GatewayContext, original: Stored, digest: str) -> None:
    """`require_same`, counted: a resend, or a refused reuse of the identifier (409)."""
    try:
        require_same(repo, original, digest, "ServiceRequest.identifier")
    except FhirError:
        count_refused(ctx, "identifier-reused")
        raise
    metrics = ctx.metrics
    after_commit(repo.session, lambda: metrics.referrals.labels("resend").inc())


def _refused(reason: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except FhirError as exc:
        raise _Refused(reason, exc) from None


def _receive(
    repo: Repository,
    ctx: GatewayContext,
    principal: Principal,
    service_request: dict[str, Any],
    resource_id: str | None,
    digest: str | None,
) -> Referral:
    compartment = organization_filter(principal, "ServiceRequest")
    digest = digest or posted_digest(service_request)
    existing = find_resend(repo, service_request, compartment)
    if existing is not None:
        check_resend(repo, ctx, existing, digest)
        return Referral(existing, None, None, created=False)
    subject = service_request.get("subject")
    patient = _refused(
        "unknown-patient", lambda: _required_target(repo, subject, "Patient", "ServiceRequest.subject")
    )
    consent = _refused("consent", lambda: _consent(repo, service_request, patient))
    with tracing.span("referral.route") as span:
        chosen = _refused("no-route", lambda: route(service_request, patient.content, ctx.directory(repo)))
        span.set_attribute("referral.route_reason", chosen.reason)
    sr = repo.create(
        {**service_request, "status": service_request.get("status", "active")}, resource_id=resource_id
    )
    for ident in sr.content.get("identifier", []):  # a second copy in the same Bundle is a resend too
        if isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
            repo.memo[("resend", compartment, resend_criteria(ident["system"], ident["value"]))] = sr
    referral_digests.record(repo.session, sr.id, digest)
    task, care_plan = _refused("mapping-error", lambda: _derive(repo, ctx, sr, consent, chosen))
    _provenance(repo, ctx, principal, sr, task, care_plan, chosen)
    metrics, status = ctx.metrics, str(task.content.get("status"))
    after_commit(repo.session, lambda: metrics.referral_routed(chosen.reason, status))
    log.info("referral routed", extra={"event": "referral.routed"})
    return Referral(sr, task, care_plan, created=True)


def resent(
    repo: Repository, entries: list[dict[str, Any]], find: Callable[[dict[str, Any]], Stored | None]
) -> dict[int, Stored] | None:
    """The original referral of each ServiceRequest entry when the Bundle is a resend, None when
    it holds no known referral (`find`: the caller's referral under an identifier). A known
    identifier whose posted content differs from the original's is a 409 (`require_same`).

    Only a Bundle whose every referral is known is a resend: a known one next to a new one
    used to answer the whole Bundle from the store, so the new referral got "200 OK, not
    stored again" and was never stored (an acknowledged referral lost). That mix is a 409."""
    originals: dict[int, Stored] = {}
    new: list[int] = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") or {}
        if entry["request"]["method"] != "POST" or resource.get("resourceType") != "ServiceRequest":
            continue
        original = find(resource)
        if original is None:
            new.append(i)
        else:
            where = f"Bundle.entry[{i}].resource.identifier"
            require_same(repo, original, posted_digest(resource, entries), where)
            originals[i] = original
    if not originals:
        return None
    if new:
        known = next(iter(originals))
        raise FhirError(
            409,
            [
                error(
                    "conflict",
                    f"Bundle.entry[{new[0]}] is a new referral but Bundle.entry[{known}] was received "
                    f"before ({originals[known].reference}): send the new referral in a Bundle of its own",
                    f"Bundle.entry[{new[0]}].resource.identifier",
                )
            ],
        )
    return originals


def resent_answers(
    repo: Repository, entries: list[dict[str, Any]], originals: dict[int, Stored]
) -> list[Stored | None]:
    """Per entry of a resent Bundle, what the original referral stored for it (None: nothing),
    found through the fullUrls and the references the original referral holds."""
    answers: dict[str, str] = {}  # fullUrl or reference in the resent Bundle -> stored reference
    for i, original in originals.items():
        full_url = entries[i].get("fullUrl")
        if full_url:
            answers[full_url] = original.reference
        answers.update(_paired_references(entries[i]["resource"], original.content))
    found: list[Stored | None] = []
    for i, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        ref = originals[i].reference if i in originals else answers.get(full_url) if full_url else None
        found.append(repo.find(*ref.split("/", 1)) if ref and "/" in ref else None)
    return found


def _paired_references(new: Any, original: Any) -> dict[str, str]:
    """References at the same place in two versions of a resource: new value → original value."""
    pairs: dict[str, str] = {}
    if isinstance(new, dict) and isinstance(original, dict):
        if isinstance(new.get("reference"), str) and isinstance(original.get("reference"), str):
            pairs[new["reference"]] = original["reference"]
        for key, value in new.items():
            pairs.update(_paired_references(value, original.get(key)))
    elif isinstance(new, list) and isinstance(original, list):
        for a, b in zip(new, original, strict=False):
            pairs.update(_paired_references(a, b))
    return pairs


_NOT_CONTENT = frozenset(("meta", "id", "text"))  # the server's or narrative: not what was referred


def posted_digest(service_request: dict[str, Any], entries: Sequence[dict[str, Any]] = ()) -> str:
    """SHA-256 of what was posted as this referral: the ServiceRequest and the Patient and Consent
    entries of the same Bundle it points to, keys sorted, meta/id/text left out, and each
    reference to an entry (a `urn:uuid:` fullUrl a HIS makes anew for every send) replaced by
    the role that entry plays for the referral (`#subject`, `#supportingInfo[0]`). So a resend
    of the same referral has the same digest, and the same identifier for another patient,
    address or question has another."""
    by_url = {
        e["fullUrl"]: e["resource"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("fullUrl"), str) and isinstance(e.get("resource"), dict)
    }
    roles: dict[str, str] = {}
    _roles(service_request, "", by_url, roles)
    parts: dict[str, Any] = {"ServiceRequest": _canonical(service_request, roles, by_url)}
    for url, role in roles.items():
        if by_url[url].get("resourceType") in ("Patient", "Consent"):
            parts[role] = _canonical(by_url[url], roles, by_url)
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _roles(node: Any, path: str, by_url: dict[str, Any], roles: dict[str, str]) -> None:
    """The path in the ServiceRequest of each reference to an entry of the Bundle (first one wins)."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in by_url:
            roles.setdefault(ref, path.lstrip("."))
        for key, value in node.items():
            if key not in _NOT_CONTENT or path:
                _roles(value, f"{path}.{key}", by_url, roles)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _roles(value, f"{path}[{i}]", by_url, roles)


def _canonical(node: Any, roles: dict[str, str], by_url: dict[str, Any], top: bool = True) -> Any:
    """`node` without meta/id/text (at the top) and with entry references named by role."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if top and key in _NOT_CONTENT:
                continue
            if key == "reference" and isinstance(value, str) and value in by_url:
                value = "#" + roles.get(value, str(by_url[value].get("resourceType")))
            out[key] = _canonical(value, roles, by_url, top=False)
        return out
    if isinstance(node, list):
        return [_canonical(v, roles, by_url, top=False) for v in node]
    return node


def shares_identifier(stored: Stored, posted: dict[str, Any]) -> bool:
    """Whether a posted ServiceRequest names one of a stored referral's identifiers (a
    conditional create matched on it: the resend rule applies, not plain If-None-Exist)."""
    if stored.resource_type != "ServiceRequest" or posted.get("resourceType") != "ServiceRequest":
        return False
    keys = {
        (i.get("system"), i.get("value")) for i in stored.content.get("identifier", []) if isinstance(i, dict)
    }
    found = posted.get("identifier")
    return any(
        isinstance(i, dict) and (i.get("system"), i.get("value")) in keys
        for i in (found if isinstance(found, list) else [])
    )


def require_same(repo: Repository, original: Stored, digest: str, expression: str) -> None:
    """409 when a referral reuses an identifier with other content: answering it with the
    original would hand a HIS whose counter restarted another patient's referral. Referrals
    stored before digests were kept have none and are answered as resends."""
    stored = referral_digests.find(repo.session, original.id)
    if stored is None or stored == digest:
        return
    entry = expression.partition(".resource")[0] if expression.startswith("Bundle.entry[") else None
    identifiers = ", ".join(
        f"{i.get('system')}|{i.get('value')}"
        for i in original.content.get("identifier", [])
        if isinstance(i, dict) and i.get("value")
    )
    raise FhirError(
        409,
        [
            error(
                "conflict",
                (f"{entry}: " if entry else "")
                + f"The identifier {identifiers} was used before for a referral with other content "
                "(another patient, consent or request): a new referral needs a new identifier; "
                "a resend must repeat the original unchanged",
                expression,
            )
        ],
    )


def resend_criteria(system: str, value: str) -> str:
    """`system|value` as an identifier search: a `|`, `,`, `$` or `\\` in either is escaped, else
    the search split the identifier elsewhere (system `a|b`) or OR-ed it (value `A,B`), so a
    resend went unrecognised and was stored as a second referral (found by the fuzzer)."""
    return f"{search_escape(system)}|{search_escape(value)}"


def find_resend(repo: Repository, service_request: dict[str, Any], compartment: str | None) -> Stored | None:
    """The referral stored earlier under one of this ServiceRequest's identifiers, among those
    `compartment` (the sender's organisation; None: all) may see. Another organisation's referral
    with the same identifier is no match: it is neither revealed nor answered with."""
    identifiers = service_request.get("identifier")
    for ident in identifiers if isinstance(identifiers, list) else []:
        system, value = (ident.get("system"), ident.get("value")) if isinstance(ident, dict) else (None, None)
        if not (isinstance(system, str) and isinstance(value, str) and system and value):
            continue  # malformed ones are reported by validation, which runs next
        criteria = resend_criteria(system, value)
        key = ("resend", compartment, criteria)  # asked twice per transaction Bundle: once is enough
        if key not in repo.memo:
            repo.lock(f"{compartment or '*'} ServiceRequest?identifier={criteria}")
            query = parse_search("ServiceRequest", [("identifier", criteria)])
            query.compartment = compartment
            query.count = 1
            matches = repo.search(query).matches
            repo.memo[key] = matches[0] if matches else None
        if repo.memo[key] is not None:
            return repo.memo[key]
    return None


def _required_target(repo: Repository, ref: dict[str, Any] | None, rtype: str, where: str) -> Stored:
    reference = normalise_reference((ref or {}).get("reference", ""), repo.base_url) or ""
    kind, _, rid = reference.partition("/")
    if kind != rtype or not rid:
        raise FhirError(422, [error("invalid", f"{where} must reference a {rtype} on this server", where)])
    stored = repo.find(rtype, rid)
    if stored is None:
        raise FhirError(
            422,
            [
                error(
                    "not-found",
                    f"{where}: {rtype}/{rid} is not on this server; send it "
                    "first or in the same transaction Bundle",
                    where,
                )
            ],
        )
    return stored


def _consent(repo: Repository, sr: dict[str, Any], patient: Stored) -> Stored:
    """The patient's active consent among supportingInfo (the profile already demands one)."""
    for i, info in enumerate(sr.get("supportingInfo", [])):
        reference = normalise_reference(info.get("reference", ""), repo.base_url) or ""
        if not reference.startswith("Consent/"):
            continue
        where = f"ServiceRequest.supportingInfo[{i}]"
        consent = _required_target(repo, info, "Consent", where)
        status = consent.content.get("status")
        if status != "active":
            raise FhirError(
                422,
                [
                    error(
                        "business-rule",
                        f"The patient's consent is '{status}', not active: "
                        "the referral cannot be shared with the social domain",
                        where,
                    )
                ],
            )
        owner = normalise_reference(consent.content.get("patient", {}).get("reference", ""), repo.base_url)
        if owner != patient.reference:
            raise FhirError(422, [error("business-rule", "The consent belongs to another patient", where)])
        return consent
    raise FhirError(
        422,
        [
            error(
                "required", "The referral carries no consent of the patient", "ServiceRequest.supportingInfo"
            )
        ],
    )


def _derive(
    repo: Repository, ctx: GatewayContext, sr: Stored, consent: Stored, chosen: Route
) -> tuple[Stored, Stored]:
    settings = ctx.mappings.region_settings(chosen.region)
    task_id, care_plan_id = new_id(), new_id()
    inputs = referral_inputs(chosen, settings, ctx.clock(), consent=consent.content, task={"id": task_id})
    # what the welfare organisation gets to see is limited by the consent, also in derived resources
    shared = ctx.minimisation.minimise(sr.content, consent_scopes([consent.content]))
    task = ctx.mappings.get("servicerequest-to-task", chosen.region).apply(shared, inputs)
    care_plan = ctx.mappings.get("servicerequest-to-careplan", chosen.region).apply(shared, inputs)
    for derived in (task, care_plan):
        issues = [i for i in ctx.validator.validate(derived) if i.is_error]
        if issues:  # a mapping that produces invalid output is our bug, not the sender's
            log.error(
                "mapping produced an invalid %s", derived["resourceType"], extra={"event": "mapping.invalid"}
            )
            raise FhirError(
                500,
                [
                    error(
                        "exception",
                        f"The {derived['resourceType']} mapping produced an "
                        f"invalid resource: {issues[0].diagnostics}",
                    )
                ],
            )
    stored_task, stored_plan = repo.create_all([(task, task_id), (care_plan, care_plan_id)])
    return stored_task, stored_plan


def _provenance(
    repo: Repository,
    ctx: GatewayContext,
    principal: Principal,
    sr: Stored,
    task: Stored,
    care_plan: Stored,
    chosen: Route,
) -> None:
    """Who sent the referral and that the gateway derived the Task and CarePlan from it."""
    now = sr.content["meta"]["lastUpdated"]
    agents: list[dict[str, Any]] = [
        {
            "type": {
                "coding": [
                    {
                        "system": PROVENANCE_PARTICIPANT_TYPE,
                        "code": "author",
                    }
                ]
            },
            "who": sr.content["requester"],
        }
    ]
    if principal.organization:
        agents[0]["onBehalfOf"] = {"reference": principal.organization}
    agents.append(
        {
            "type": {
                "coding": [
                    {
                        "system": PROVENANCE_PARTICIPANT_TYPE,
                        "code": "assembler",
                    }
                ]
            },
            "who": {"display": f"fhir-gateway (client {principal.client_id})"},
        }
    )
    repo.create(
        {
            "resourceType": "Provenance",
            "target": [
                {"reference": sr.reference},
                {"reference": task.reference},
                {"reference": care_plan.reference},
            ],
            "recorded": now,
            "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE"}]},
            "reason": [
                {"text": f"Welzijn op Recept referral routed by {chosen.reason} to {chosen.organization}"}
            ],
            "agent": agents,
            "entity": [{"role": "source", "what": {"reference": sr.reference}}],
        }
    )
