"""R4 Subscriptions as the Subscriptions R5 Backport IG shapes them: settings, status, bundles.

Pure functions over dicts (plus the event counter, kept by `store/subscriptions.py`), shared by
the write listener (`events`), the worker (notification bundles) and the `$status` / `$events`
operations.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.searchparams import format_instant
from fhir_gateway.store import subscriptions as state
from fhir_gateway.vocabulary import BACKPORT_FILTER_CRITERIA as FILTER_CRITERIA_URL
from fhir_gateway.vocabulary import BACKPORT_HEARTBEAT_PERIOD as HEARTBEAT_URL
from fhir_gateway.vocabulary import BACKPORT_PAYLOAD_CONTENT as PAYLOAD_CONTENT_URL
from fhir_gateway.vocabulary import BACKPORT_SUBSCRIPTION_STATUS as STATUS_PROFILE
from fhir_gateway.vocabulary import BACKPORT_TIMEOUT as TIMEOUT_URL
from fhir_gateway.vocabulary import SUBSCRIPTION_OWNER as OWNER_URL
from fhir_gateway.vocabulary import WORKLIST_TOPIC

# topic canonical → the resource type its filter criteria search (Backport IG, topic-based)
TOPICS = {WORKLIST_TOPIC: "Task"}

log = logging.getLogger(__name__)

CONTENT_MODES = ("empty", "id-only", "full-resource")


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """What delivery needs to know about one Subscription resource."""

    id: str
    version: int
    status: str
    resource_type: str  # from the criteria
    params: tuple[tuple[str, str], ...]
    channel_type: str
    endpoint: str
    content: str  # empty | id-only | full-resource
    headers: tuple[str, ...]
    heartbeat: int | None  # seconds
    timeout: float | None  # seconds
    owner: str | None  # Organization/<id> that created it (None: admin / system)
    topic: str | None = None  # topic-based (Backport IG): the SubscriptionTopic canonical

    @property
    def reference(self) -> str:
        return f"Subscription/{self.id}"


def search_criteria(sub: dict[str, Any]) -> tuple[str | None, str]:
    """(topic, `Type?query`): criteria-based Subscriptions name the search themselves; topic-based
    ones (Backport IG) name a topic and put the search in `backport-filter-criteria`."""
    criteria = str(sub.get("criteria") or "")
    if criteria not in TOPICS:
        return None, criteria
    filters = [
        str(ext.get("valueString") or "")
        for ext in (sub.get("_criteria") or {}).get("extension", [])
        if ext.get("url") == FILTER_CRITERIA_URL
    ]
    rtype = TOPICS[criteria]
    query = "&".join(f.partition("?")[2] if "?" in f else f for f in filters)
    if any("?" in f and f.partition("?")[0].strip("/") != rtype for f in filters):
        return criteria, ""  # a filter on another type than the topic's: unusable
    return criteria, f"{rtype}?{query}"


def info(sub: dict[str, Any]) -> SubscriptionInfo | None:
    """Parse a Subscription; None when it cannot be served (no criteria, no endpoint)."""
    topic, criteria = search_criteria(sub)
    rtype, _, query = criteria.partition("?")
    channel = sub.get("channel") or {}
    if not rtype or not rtype[:1].isupper():
        return None
    content = "id-only"
    if not channel.get("payload"):
        content = "empty"
    for ext in (channel.get("_payload") or {}).get("extension", []):
        if ext.get("url") == PAYLOAD_CONTENT_URL and ext.get("valueCode") in CONTENT_MODES:
            content = ext["valueCode"]
    owner = None
    for ext in sub.get("extension", []):
        if ext.get("url") == OWNER_URL:
            owner = (ext.get("valueReference") or {}).get("reference")
    return SubscriptionInfo(
        id=str(sub.get("id", "")),
        version=int((sub.get("meta") or {}).get("versionId") or 1),
        status=str(sub.get("status", "")),
        resource_type=rtype.strip("/"),
        params=tuple(parse_qsl(query, keep_blank_values=False)),
        channel_type=str(channel.get("type", "")),
        endpoint=str(channel.get("endpoint") or ""),
        content=content,
        headers=tuple(str(h) for h in channel.get("header", []) if isinstance(h, str)),
        heartbeat=_ext_int(channel, HEARTBEAT_URL),
        timeout=_ext_int(channel, TIMEOUT_URL),
        owner=owner,
        topic=topic,
    )


# -- what a Subscription may ask for -------------------------------------------------------------

LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")


def endpoint_problem(url: str, *, loopback_http: bool) -> str | None:
    """Why the gateway will not POST to `url`, or None. https only, to a public host: no IP
    literal of a private, loopback, link-local or reserved range, no `localhost` (the gateway
    must not be a way into the network it runs in). `loopback_http` (tests, a developer machine)
    also allows http and https to the loopback interface, and nothing else."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.username is not None or parts.password is not None:
        return "may not carry credentials (send them in channel.header)"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https URL"
    loopback = host in LOOPBACK_NAMES or host.endswith(".localhost") or _is_ip(host, "is_loopback")
    if loopback and loopback_http:
        return None
    if parts.scheme != "https":
        return "must be https (http only to the loopback interface on a test or developer machine)"
    if loopback or _is_ip(host, "is_global", negate=True):
        return "must name a public host, not a loopback, private or reserved address"
    return None


def _is_ip(host: str, attribute: str, *, negate: bool = False) -> bool:
    """True when `host` is an IP literal with (or, negated, without) the property."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    value = bool(getattr(address, attribute))
    return not value if negate else value


def check_channel(sub: dict[str, Any], *, loopback_http: bool) -> None:
    """422 unless the channel is a rest-hook the gateway may call."""
    channel = sub.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise FhirError(
            422,
            [error("not-supported", "Only rest-hook Subscriptions are offered", "Subscription.channel.type")],
        )
    problem = endpoint_problem(str(channel.get("endpoint") or ""), loopback_http=loopback_http)
    if problem:
        raise FhirError(
            422, [error("business-rule", f"channel.endpoint {problem}", "Subscription.channel.endpoint")]
        )


def _ext_int(element: dict[str, Any], url: str) -> int | None:
    for ext in element.get("extension", []):
        if ext.get("url") == url:
            value = ext.get("valueUnsignedInt", ext.get("valuePositiveInt", ext.get("valueInteger")))
            if isinstance(value, int) and value > 0:
                return value
    return None


# -- durable counters ----------------------------------------------------------------------------


def ensure_state(connection: sa.Connection, sub: SubscriptionInfo, now: datetime) -> None:
    """Create the counter row once and keep the heartbeat settings current."""
    state.ensure_state(connection, sub.id, sub.heartbeat, _heartbeat_due(sub, now))


def _heartbeat_due(sub: SubscriptionInfo, now: datetime) -> datetime | None:
    if sub.heartbeat and sub.status == "active":
        return now + timedelta(seconds=sub.heartbeat)
    return None


def next_event_number(connection: sa.Connection, sub: SubscriptionInfo, now: datetime) -> int:
    """Number the next event. The counter row stays locked until commit, so numbers follow
    commit order and no number is used twice, on any number of replicas."""
    for _ in range(2):
        number = state.count_event(connection, sub.id, now, _heartbeat_due(sub, now))
        if number is not None:
            return number
        ensure_state(connection, sub, now)
    raise RuntimeError(f"no counter for Subscription/{sub.id}")


def record_event(
    connection: sa.Connection,
    sub: SubscriptionInfo,
    number: int,
    event_id: str,
    focus: str,
    version: int,
    now: datetime,
) -> None:
    state.record_event(connection, sub.id, number, event_id, focus, version, now)


# read by the worker and the `$status` / `$events` operations
events_since_start = state.events_since_start
state_error = state.state_error
set_state_error = state.set_state_error
stored_events = state.stored_events


# -- SubscriptionStatus and notification bundles -------------------------------------------------


def status_parameters(
    base_url: str,
    sub: SubscriptionInfo,
    *,
    kind: str,
    events_since_start: int,
    events: list[dict[str, Any]] = (),  # type: ignore[assignment]
    error: str | None = None,
) -> dict[str, Any]:
    """The R4 backport SubscriptionStatus (a profiled Parameters resource)."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": _url(base_url, sub.reference)}},
        {"name": "status", "valueCode": sub.status or "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    if sub.topic:  # topic-based (Backport IG): say which topic the events are about
        params.append({"name": "topic", "valueCanonical": sub.topic})
    for event in events:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event["eventNumber"])},
            {"name": "timestamp", "valueInstant": event["timestamp"]},
        ]
        if sub.content != "empty" and event.get("focus"):
            part.append({"name": "focus", "valueReference": {"reference": _url(base_url, event["focus"])}})
        params.append({"name": "notification-event", "part": part})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification_bundle(
    base_url: str,
    sub: SubscriptionInfo,
    *,
    kind: str,
    events_since_start: int,
    events: list[dict[str, Any]],
    resources: dict[str, dict[str, Any]],
    bundle_id: str,
    now: datetime,
    bundle_type: str = "history",
) -> dict[str, Any]:
    """A notification Bundle: SubscriptionStatus first, then the focus per content mode."""
    status = status_parameters(base_url, sub, kind=kind, events_since_start=events_since_start, events=events)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{bundle_id}",
            "resource": status,
            "request": {"method": "GET", "url": _url(base_url, f"{sub.reference}/$status")},
            "response": {"status": "200"},
        }
    ]
    if sub.content != "empty":
        for event in events:
            focus = event.get("focus")
            if not focus:
                continue
            entry: dict[str, Any] = {
                "fullUrl": _url(base_url, focus),
                "request": {"method": "PUT", "url": focus},
                "response": {"status": "200"},
            }
            resource = resources.get(f"{focus}/_history/{event.get('version')}")
            if sub.content == "full-resource" and resource is not None:
                entry["resource"] = resource
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": bundle_type,
        "timestamp": format_instant(now),
        "entry": entries,
    }


def _url(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}/{path}" if base_url else path
