"""Writes → outbox rows, in the writer's transaction: a notification exists iff its change committed.

`install(ctx)` appends one listener to `ctx.on_write`. For every create/update it
  * numbers and queues a rest-hook event for each active Subscription whose criteria match the
    written resource (criteria evaluated by the real search engine inside the transaction, so
    they see the change) and whose owner may see it;
  * runs the Subscription lifecycle: status `requested` queues a handshake;
  * queues feedback Communications for practices that asked for a push (directory Endpoint:
    `hl7-fhir-rest` → `fhir-push`, `hl7v2-mllp` → `mllp`);
  * schedules workflow timers for Tasks (`workflow.timers`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fhir_gateway.delivery.outbox import naive_utc
from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.fhir.search import parse_search
from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.reports import read_model
from fhir_gateway.store.repository import Repository, Stored, new_id
from fhir_gateway.store.subscriptions import subscription_contents
from fhir_gateway.vocabulary import FEEDBACK_KINDS, REMINDER_KINDS
from fhir_gateway.workflow import subscriptions as subs
from fhir_gateway.workflow import timers
from fhir_gateway.workflow.context import GatewayContext

log = logging.getLogger(__name__)

PUSHED_CATEGORIES = (FEEDBACK_KINDS, REMINDER_KINDS)
_V2_VERSION = re.compile(r"(?<![\d.])(2\.\d(?:\.\d)?)(?![\d.])")


def install(ctx: GatewayContext) -> None:
    """Hook delivery (and timer scheduling) into every Repository the app builds. Idempotent."""
    if any(getattr(listener, "_delivery", False) for listener in ctx.on_write):
        return

    def on_write(repo: Repository, stored: Stored) -> None:
        handle_write(ctx, repo, stored)

    on_write._delivery = True  # type: ignore[attr-defined]
    ctx.on_write.append(on_write)


def handle_write(ctx: GatewayContext, repo: Repository, stored: Stored) -> None:
    now = naive_utc(ctx.clock())
    if stored.resource_type == "Subscription" and not stored.deleted:
        _lifecycle(repo, stored, now)
    if stored.deleted:
        return
    for sub in _active_subscriptions(ctx, repo):
        if sub.resource_type == stored.resource_type and _matches(repo, sub, stored):
            _notify(repo, sub, stored, now)
    if stored.resource_type == "Communication" and stored.version_id == 1 and _is_pushed(stored.content):
        _push_feedback(ctx, repo, stored)
    if stored.resource_type == "Task":
        timers.schedule(ctx, repo, stored)


# -- subscriptions -------------------------------------------------------------------------------


def _lifecycle(repo: Repository, stored: Stored, now: Any) -> None:
    sub = subs.info(stored.content)
    if sub is None or sub.channel_type != "rest-hook":
        return
    subs.ensure_state(repo.session, sub, now)
    if sub.status == "requested" and sub.endpoint:
        # One handshake per requested version; it sets the Subscription active (or error).
        repo.enqueue(
            "rest-hook",
            sub.endpoint,
            {"type": "handshake", "subscription": sub.reference, "subscriptionVersion": sub.version},
            subject=sub.reference,
            event_id=f"hs-{sub.id}-{sub.version}"[:64],
        )


def _active_subscriptions(ctx: GatewayContext, repo: Repository) -> list[subs.SubscriptionInfo]:
    """Active rest-hook Subscriptions: kept between transactions while the Subscriptions'
    fingerprint stays the same (every write asks, so no reading every Subscription each time);
    a Subscription written in this transaction makes the next write read them again."""

    def load() -> list[subs.SubscriptionInfo]:
        return [
            s
            for s in (subs.info(content) for content in subscription_contents(repo.session))
            if s is not None and s.status == "active" and s.channel_type == "rest-hook" and s.endpoint
        ]

    return ctx.cached(repo, "subscriptions", ("Subscription",), load)


def _matches(repo: Repository, sub: subs.SubscriptionInfo, stored: Stored) -> bool:
    try:
        query = parse_search(
            stored.resource_type, [*sub.params, ("_id", stored.id)], strict=True, base_url=repo.base_url
        )
    except FhirError:
        log.warning("Subscription/%s has criteria the search engine refuses; skipped", sub.id)
        return False
    query.count = 1
    query.total = False
    query.includes = []
    if not repo.search(query).matches:
        return False
    return _visible(repo, stored, sub.owner)


_missing_compartments_logged = False


def _visible(repo: Repository, stored: Stored, organization: str | None) -> bool:
    """The subscriber's compartment decides (security layer); no owner = admin/system."""
    global _missing_compartments_logged
    try:
        from fhir_gateway.security.compartments import visible_to
    except ImportError:
        if organization is None:
            return True
        if not _missing_compartments_logged:
            _missing_compartments_logged = True
            log.warning("security.compartments missing: owned Subscriptions get no events")
        return False
    return bool(visible_to(repo, stored, organization))


def _notify(repo: Repository, sub: subs.SubscriptionInfo, stored: Stored, now: Any) -> None:
    number = subs.next_event_number(repo.session, sub, now)
    event_id = new_id()
    subs.record_event(repo.session, sub, number, event_id, stored.reference, stored.version_id, now)
    repo.enqueue(
        "rest-hook",
        sub.endpoint,
        {
            "type": "event-notification",
            "subscription": sub.reference,
            "eventNumber": number,
            "focus": stored.reference,
            "version": stored.version_id,
            "content": sub.content,
            "timestamp": stored.content.get("meta", {}).get("lastUpdated"),
        },
        subject=sub.reference,
        event_id=event_id,
    )


# -- feedback pushed to practices ---------------------------------------------------------------


def _is_pushed(communication: dict[str, Any]) -> bool:
    return any(
        coding.get("system") in PUSHED_CATEGORIES
        for category in communication.get("category", [])
        for coding in category.get("coding", [])
    )


def _push_feedback(ctx: GatewayContext, repo: Repository, stored: Stored) -> None:
    directory = ctx.directory(repo)
    practices: dict[str, dict[str, Any]] = {}
    for recipient in stored.content.get("recipient", []):
        ref = normalise_reference(recipient.get("reference", ""), repo.base_url) or ""
        for org in directory.practices_of(ref):
            practices.setdefault(org["id"], org)
    comm = stored.content
    task = next(
        (normalise_reference(p.get("reference", ""), repo.base_url) for p in comm.get("partOf", [])), None
    )
    sr = next(
        (normalise_reference(b.get("reference", ""), repo.base_url) for b in comm.get("basedOn", [])), None
    )
    pushed = False
    for org_id in sorted(practices):
        subject = f"Organization/{org_id}"
        fhir_eps = directory.endpoints_of(org_id, "hl7-fhir-rest")
        mllp_eps = [] if fhir_eps else directory.endpoints_of(org_id, "hl7v2-mllp")
        if not (fhir_eps or mllp_eps):
            continue
        pushed = True
        # Pk order = commit order per practice, so pushes arrive in the order things happened.
        repo.lock(f"outbox:{subject}")
        for ep in fhir_eps:
            repo.enqueue(
                "fhir-push",
                ep["address"],
                {
                    "type": "fhir-push",
                    "communication": stored.reference,
                    "version": stored.version_id,
                    "endpoint": f"Endpoint/{ep['id']}",
                    "headers": [h for h in ep.get("header", []) if isinstance(h, str)],
                },
                subject=subject,
            )
        for ep in mllp_eps:
            repo.enqueue(
                "mllp",
                ep["address"],
                {
                    "type": "mllp",
                    "communication": stored.reference,
                    "version": stored.version_id,
                    "task": task,
                    "serviceRequest": sr,
                    "practice": subject,
                    "endpoint": f"Endpoint/{ep['id']}",
                    "v2Version": _v2_version(ep),
                },
                subject=subject,
            )
    if pushed:  # the report counts it as pushed (its rows were written by `read_model.keep`)
        read_model.feedback_pushed(repo, stored)


def _v2_version(endpoint: dict[str, Any]) -> str:
    for payload in endpoint.get("payloadType", []):
        found = _V2_VERSION.search(str(payload.get("text") or ""))
        if found:
            return found.group(1)
    return "2.5"
