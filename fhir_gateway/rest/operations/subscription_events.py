"""`Subscription/{id}/$events` (Subscriptions Backport IG, R4): replay notifications.

Replays from the durable event log (`subscription_events`), so a subscriber that was down, or
whose notifications were dead-lettered or purged, can catch up by event number."""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import MAX_DB_INTEGER, ascii_int
from fhir_gateway.fhir.searchparams import format_instant, utc_now
from fhir_gateway.rest.operations.subscription_status import subscription_of
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.store.repository import new_id
from fhir_gateway.workflow import subscriptions as subs
from fhir_gateway.workflow.resources import subscriber_view

MAX_EVENTS = 1000
DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "subscription-events",
    "url": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
    "name": "SubscriptionEvents",
    "title": "Subscription events",
    "status": "active",
    "kind": "operation",
    "code": "events",
    "resource": ["Subscription"],
    "system": False,
    "type": False,
    "instance": True,
    "parameter": [
        {"name": "eventsSinceNumber", "use": "in", "min": 0, "max": "1", "type": "string"},
        {"name": "eventsUntilNumber", "use": "in", "min": 0, "max": "1", "type": "string"},
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "Bundle",
            "documentation": "A subscription-notification Bundle holding the events asked for",
        },
    ],
}


def subscription_events(
    req: FhirRequest, svc: Any, resource_type: str | None, rid: str | None
) -> FhirResponse:
    sub = subscription_of(svc, rid)
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
    if sub.content == "full-resource":  # what the owner may see, as the rest-hook would send it
        for e in events:
            view = subscriber_view(svc.repo, svc.ctx, sub.owner, e["focus"], e["version"])
            if view is not None:
                resources[f"{e['focus']}/_history/{e['version']}"] = view
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
