"""`Subscription/{id}/$status` (Subscriptions Backport IG, R4): where a subscription stands.

A subscriber checks its subscription's state and event count after downtime, then catches up
with `$events`."""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.store.repository import new_id
from fhir_gateway.workflow import subscriptions as subs

DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "subscription-status",
    "url": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "name": "SubscriptionStatus",
    "title": "Subscription status",
    "status": "active",
    "kind": "operation",
    "code": "status",
    "resource": ["Subscription"],
    "system": False,
    "type": False,
    "instance": True,
    "parameter": [
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "Bundle",
            "documentation": "A searchset Bundle with the SubscriptionStatus (Parameters) of the subscription",
        },
    ],
}


def subscription_of(svc: Any, rid: str | None) -> subs.SubscriptionInfo:
    if not rid:
        raise FhirError(400, [error("required", "Call this on one Subscription: Subscription/{id}/$status")])
    stored = svc.read("Subscription", rid)  # the service applies the caller's compartment (404)
    sub = subs.info(stored.content)
    if sub is None:
        raise FhirError(422, [error("not-supported", f"Subscription/{rid} has no usable criteria")])
    return sub


def subscription_status(
    req: FhirRequest, svc: Any, resource_type: str | None, rid: str | None
) -> FhirResponse:
    sub = subscription_of(svc, rid)
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
