"""FHIR operations on Subscriptions (Backport IG, R4): `$status` and `$events`.

`$events` replays from the durable event log (`subscription_events`), so a subscriber that was
down, or whose notifications were dead-lettered or purged, can catch up by event number.
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.delivery import subscriptions as subs
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import MAX_DB_INTEGER, ascii_int
from fhir_gateway.fhir.searchparams import format_instant, utc_now
from fhir_gateway.store.repository import new_id

MAX_EVENTS = 1000


def register_operations(router: Any) -> None:
    """Add `Subscription/{id}/$status` and `Subscription/{id}/$events` to the FHIR router."""
    router.operations[("Subscription", "$status")] = subscription_status
    router.operations[("Subscription", "$events")] = subscription_events


def _subscription(svc: Any, rid: str | None) -> subs.SubscriptionInfo:
    if not rid:
        raise FhirError(400, [error("required", "Call this on one Subscription: Subscription/{id}/$status")])
    stored = svc.read("Subscription", rid)  # the service applies the caller's compartment (404)
    sub = subs.info(stored.content)
    if sub is None:
        raise FhirError(422, [error("not-supported", f"Subscription/{rid} has no usable criteria")])
    return sub


def subscription_status(req: Any, svc: Any, resource_type: str | None, rid: str | None) -> Any:
    from fhir_gateway.api.request import FhirResponse

    sub = _subscription(svc, rid)
    conn = svc.repo.session
    status = subs.status_parameters(
        req.base_url,
        sub,
        kind="query-status",
        events_since_start=subs.events_since_start(conn, sub.id),
        error=subs.state_error(conn, sub.id),
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{"fullUrl": f"urn:uuid:{new_id()}", "resource": status, "search": {"mode": "match"}}],
    }
    return FhirResponse(200, bundle)


def subscription_events(req: Any, svc: Any, resource_type: str | None, rid: str | None) -> Any:
    from fhir_gateway.api.request import FhirResponse

    sub = _subscription(svc, rid)
    params = dict(req.params)
    if isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
        for p in req.body.get("parameter", []):
            params.setdefault(p.get("name"), str(p.get("valueString", p.get("valueInteger", ""))))
    since = _number(params.get("eventsSinceNumber"), "eventsSinceNumber") or 1
    until = _number(params.get("eventsUntilNumber"), "eventsUntilNumber")
    conn = svc.repo.session
    rows = subs.stored_events(conn, sub.id, since, until)[:MAX_EVENTS]
    events = [
        {
            "eventNumber": r.event_number,
            "timestamp": format_instant(r.occurred_at),
            "focus": r.focus,
            "version": r.focus_version,
        }
        for r in rows
    ]
    resources: dict[str, dict[str, Any]] = {}
    if sub.content == "full-resource":
        for e in events:
            rtype, _, fid = e["focus"].partition("/")
            try:
                resources[f"{e['focus']}/_history/{e['version']}"] = svc.repo.vread(
                    rtype, fid, e["version"]
                ).content
            except FhirError:
                continue
    bundle = subs.notification_bundle(
        req.base_url,
        sub,
        kind="query-event",
        events_since_start=subs.events_since_start(conn, sub.id),
        events=events,
        resources=resources,
        bundle_id=new_id(),
        now=utc_now(),
    )
    return FhirResponse(200, bundle)


def _number(raw: str | None, name: str) -> int | None:
    if raw in (None, ""):
        return None
    number = ascii_int(str(raw))
    if number is None:
        raise FhirError(400, [error("invalid", f"{name} must be a positive integer", name)])
    return min(number, MAX_DB_INTEGER)
