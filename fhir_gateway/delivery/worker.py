"""The delivery worker: timers, heartbeats, then outbox rows — safe to run on every replica.

At-least-once: a row is marked delivered only after the receiver said so; a crash in between
means the lease expires and the row is delivered again (receivers dedupe on `X-Event-Id`).
Per-subject order: see `outbox.claim`. Outcomes: 2xx / MLLP AA → delivered; 408, 429, 5xx,
network errors, MLLP AR / timeouts → retry with exponential backoff and jitter until
`max_attempts`, then dead letter; other 4xx (e.g. 410 Gone) and MLLP AE → dead letter at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import sqlalchemy as sa

from fhir_gateway import tracing
from fhir_gateway.delivery import outbox
from fhir_gateway.delivery.outbox import Claimed, naive_utc
from fhir_gateway.reports import read_model
from fhir_gateway.store import subscriptions as subscription_state
from fhir_gateway.store import v2_journal
from fhir_gateway.store.repository import Repository, new_id
from fhir_gateway.workflow import subscriptions as subs
from fhir_gateway.workflow import timers
from fhir_gateway.workflow.context import GatewayContext
from fhir_gateway.workflow.resources import subscriber_view

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRYABLE_4XX = frozenset({408, 429})


FEEDBACK_KINDS = frozenset({"fhir-push", "mllp"})  # Communications to the referring practice


class Permanent(Exception):
    """The receiver refused the content: retrying cannot help (dead letter at once)."""


class Transient(Exception):
    """Try again later (receiver down, slow, overloaded, or said AR)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: float  # seconds before the 2nd attempt; doubles per attempt
    cap: float

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter (half fixed, half random: no thundering herd)."""
        raw = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return raw / 2 + random.uniform(0, raw / 2)


class Worker:
    """`run_once()` = one pass (timers, heartbeats, a batch of deliveries); `run_forever(stop)`."""

    def __init__(
        self,
        ctx: GatewayContext,
        http_client: httpx.Client | None = None,
        *,
        batch: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        run_timers: bool = True,
    ) -> None:
        self.ctx = ctx
        self.batch = batch or ctx.settings.outbox_batch
        self.lease = lease or float(ctx.settings.outbox_lease_seconds)
        self.timeout = timeout or float(ctx.settings.outbox_timeout_seconds)
        self.retry = retry or RetryPolicy(
            max_attempts=ctx.settings.outbox_max_attempts,
            base=float(ctx.settings.outbox_backoff_seconds),
            cap=float(ctx.settings.outbox_backoff_max_seconds),
        )
        self.run_timers = run_timers
        self._own_client = http_client is None
        self.http = http_client or httpx.Client(timeout=self.timeout, follow_redirects=False)
        tracing.instrument_httpx(self.http)
        self.base_url = ctx.settings.base_url.rstrip("/")

    def close(self) -> None:
        if self._own_client:
            self.http.close()

    def now(self) -> datetime:
        return naive_utc(self.ctx.clock())

    # -- loop ------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """One pass; returns the number of rows delivered."""
        if self.run_timers:
            timers.run_due(self.ctx)
            self.heartbeats()
        with self.ctx.database.connection(write=True) as conn:
            claimed = outbox.claim(conn, self.now(), batch=self.batch, lease=self.lease)
        done: list[tuple[Claimed, str]] = []
        failed_subjects: set[str] = set()
        for row in claimed:
            if row.subject is not None and row.subject in failed_subjects:
                self._release(row)  # keep order: its predecessor has to go first
                continue
            outcome = self._deliver(row)
            if outcome is not None:
                done.append((row, outcome))
            elif row.subject is not None:
                failed_subjects.add(row.subject)
        if done:  # one commit for the batch; a crash before it means redelivery (at-least-once)
            with self.ctx.database.connection(write=True) as conn:
                for row, outcome in done:
                    if outbox.finish(conn, row, outcome):
                        read_model.feedback_delivered(conn, row.kind, row.payload, outcome)
                    if row.payload.get("type") == "handshake" and outcome == "delivered":
                        self._subscription_status(conn, row, "active", None)
        return sum(1 for _, outcome in done if outcome == "delivered")

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Until `stop` is set; sleeps `interval` only when a pass found nothing to do."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # a database hiccup must not end the worker
                log.exception("worker pass failed")
                busy = 0
            if not busy:
                stop.wait(interval)

    # -- one row ---------------------------------------------------------------------------------
    def _deliver(self, row: Claimed) -> str | None:
        """Try one row: 'delivered' / 'cancelled' to record, or None (retry or dead recorded)."""
        with tracing.span("outbox.deliver", **{"outbox.kind": row.kind, "outbox.attempt": row.attempts}) as span:
            recorded, outcome = self._attempt(row)
            span.set_attribute("outbox.outcome", outcome)
        metrics = self.ctx.metrics
        metrics.deliveries.labels(row.kind, outcome).inc()
        if outcome == "delivered" and row.kind in FEEDBACK_KINDS:
            metrics.feedback.labels(row.kind).inc()
        return recorded

    def _attempt(self, row: Claimed) -> tuple[str | None, str]:
        """(what to record, None when recorded already; the outcome: delivered, cancelled, retry, dead)."""
        try:
            handler = {"rest-hook": self._rest_hook, "fhir-push": self._fhir_push, "mllp": self._mllp}.get(
                row.kind
            )
            if handler is None:
                raise Permanent(f"no delivery for kind '{row.kind}'")
            done = handler(row)
            return done, done
        except Permanent as exc:
            return None, self._dead(row, str(exc))
        except (TimeoutError, Transient, httpx.HTTPError, OSError) as exc:
            return None, self._later(row, _describe(exc))
        except Exception as exc:  # a bug or bad data: keep the row, make it visible
            log.exception("delivery of %s failed", row.event_id)
            return None, self._later(row, _describe(exc))

    def _later(self, row: Claimed, error: str) -> str:
        if row.attempts >= self.retry.max_attempts:
            return self._dead(row, f"{error} (gave up after {row.attempts} attempts)")
        retry_at = self.now() + timedelta(seconds=self.retry.delay(row.attempts))
        with self.ctx.database.connection(write=True) as conn:
            outbox.finish(conn, row, "pending", error=error[:2000], retry_at=retry_at)
        return "retry"

    def _dead(self, row: Claimed, error: str) -> str:
        log.warning("outbox %s dead-lettered: %s", row.event_id, error)
        with self.ctx.database.connection(write=True) as conn:
            outbox.finish(conn, row, "dead", error=error[:2000])
            if row.payload.get("type") == "handshake":
                self._subscription_status(conn, row, "error", error)
            elif row.kind == "rest-hook" and row.payload.get("subscription"):
                subs.set_state_error(conn, row.payload["subscription"].partition("/")[2], error[:2000])
        return "dead"

    def _release(self, row: Claimed) -> None:
        with self.ctx.database.connection(write=True) as conn:
            outbox.finish(conn, row, "pending", retry_at=self.now(), count_attempt=False)

    def _subscription_status(self, conn: sa.Connection, row: Claimed, status: str, error: str | None) -> None:
        """Handshake outcome → Subscription.status (requested → active | error)."""
        repo = self.ctx.repository(conn, self.base_url)
        sid = row.payload["subscription"].partition("/")[2]
        current = repo.find("Subscription", sid)
        if current is None or current.content.get("status") != "requested":
            return
        updated = {**current.content, "status": status}
        if error:
            updated["error"] = error[:1000]
        else:
            updated.pop("error", None)
        repo.update(updated)

    # -- rest-hook (Subscriptions) ---------------------------------------------------------------
    def _rest_hook(self, row: Claimed) -> str:
        payload = row.payload
        with self.ctx.database.connection(write=False) as conn:
            repo = Repository(conn, base_url=self.base_url)
            sid = payload["subscription"].partition("/")[2]
            stored = repo.find("Subscription", sid)
            sub = subs.info(stored.content) if stored else None
            kind = payload["type"]
            if sub is None or (kind != "handshake" and sub.status != "active"):
                return "cancelled"  # deleted or switched off since: nothing to deliver
            problem = subs.endpoint_problem(
                sub.endpoint, loopback_http=self.ctx.settings.subscription_loopback_http
            )
            if problem:  # stored before the rule, or by a bypass: never call it
                raise Permanent(f"channel.endpoint {problem}")
            events: list[dict[str, Any]] = []
            resources: dict[str, dict[str, Any]] = {}
            if kind == "event-notification":
                events.append(
                    {
                        "eventNumber": payload["eventNumber"],
                        "timestamp": payload.get("timestamp"),
                        "focus": payload.get("focus"),
                        "version": payload.get("version"),
                    }
                )
                if sub.content == "full-resource":
                    resources = _versions(repo, self.ctx, sub, events)
                count = int(payload["eventNumber"])
            else:
                count = subs.events_since_start(conn, sub.id)
        bundle = subs.notification_bundle(
            self.base_url,
            sub,
            kind=kind,
            events_since_start=count,
            events=events,
            resources=resources,
            bundle_id=row.event_id if len(row.event_id) == 36 else new_id(),
            now=self.now(),
        )
        self._post(row, sub.endpoint, bundle, sub.headers, sub.timeout)
        return "delivered"

    # -- fhir-push (practice Endpoint) -----------------------------------------------------------
    def _fhir_push(self, row: Claimed) -> str:
        payload = row.payload
        rtype, _, rid = payload["communication"].partition("/")
        with self.ctx.database.connection(write=False) as conn:
            repo = Repository(conn, base_url=self.base_url)
            try:
                resource = repo.vread(rtype, rid, int(payload.get("version", 1))).content
            except Exception as exc:
                raise Permanent(f"{payload['communication']} is gone: {exc}") from None
        self._post(row, row.destination, resource, tuple(payload.get("headers") or ()), None)
        return "delivered"

    def _post(
        self, row: Claimed, url: str, body: dict[str, Any], headers: tuple[str, ...], timeout: float | None
    ) -> None:
        sent = {"content-type": FHIR_JSON, "accept": FHIR_JSON, "x-event-id": row.event_id}
        for header in headers:
            name, sep, value = header.partition(":")
            if sep and name.strip():
                sent[name.strip()] = value.strip()
        response = self.http.post(
            url, content=orjson.dumps(body), headers=sent, timeout=timeout or self.timeout
        )
        if response.status_code < 300:
            return
        reason = f"HTTP {response.status_code} from {_host(url)}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
            raise Permanent(reason)
        raise Transient(reason)

    # -- MLLP (HL7 v2 practices) -----------------------------------------------------------------
    def _mllp(self, row: Claimed) -> str:
        from fhir_gateway.v2.message import parse_er7
        from fhir_gateway.v2.mllp import send_message
        from fhir_gateway.v2.outbound import rri_for

        payload = row.payload
        target = urlsplit(row.destination)
        if target.scheme != "mllp" or not target.hostname or not target.port:
            raise Permanent(f"'{row.destination}' is not mllp://host:port")
        with self.ctx.database.connection(write=False) as conn:
            repo = Repository(conn, base_url=self.base_url)
            ctype, _, cid = payload["communication"].partition("/")
            communication = repo.vread(ctype, cid, int(payload.get("version", 1))).content
            task = _read(repo, payload.get("task")) or {}
            sr = _read(repo, payload.get("serviceRequest"))
            patient = _read(repo, (task.get("for") or {}).get("reference"))
            requester = _read(repo, ((sr or task).get("requester") or {}).get("reference"))
            original = v2_journal.latest_inbound_for(conn, payload.get("serviceRequest"))
        origin: Any = dict(original._mapping) if original else {"sender": "", "control_id": ""}
        er7 = rri_for(
            communication,
            task,
            origin,
            patient=patient,
            service_request=sr,
            requester=requester,
            version=str(payload.get("v2Version") or "2.5"),
        )
        with tracing.span("v2.send", **{"v2.message_type": "RRI^I12"}) as span:
            try:
                ack_bytes = asyncio.run(send_message(target.hostname, target.port, er7, timeout=self.timeout))
            except Exception as exc:
                raise Transient(f"MLLP {target.hostname}:{target.port}: {_describe(exc)}") from None
            ack = ack_bytes.decode("utf-8", "replace")
            code = _msa_code(ack)
            span.set_attribute("v2.ack_code", code[:4])
        self.ctx.metrics.v2_ack("received", code)
        sent = parse_er7(er7)
        with self.ctx.database.connection(write=True) as conn:
            v2_journal.record_outbound(
                conn,
                sender=f"{sent.msh.value(5)}^{sent.msh.value(6)}"[:255],
                control_id=(sent.control_id or row.event_id)[:64],
                message_type="RRI^I12",
                sent_at=self.now(),
                ack_code=code[:4],
                ack=ack,
                focus=payload["communication"][:128],
            )
        if code == "AA" or code == "CA":
            return "delivered"
        detail = _err_text(ack)
        if code in ("AE", "CE"):
            raise Permanent(f"MLLP {code}: {detail}")
        raise Transient(f"MLLP {code or 'no MSA'}: {detail}")

    # -- heartbeats ------------------------------------------------------------------------------
    def heartbeats(self) -> int:
        """Queue a heartbeat for each active subscription that has been quiet for its period."""
        now = self.now()
        queued = 0
        with self.ctx.database.connection(write=True) as conn:
            due = subscription_state.claim_due_heartbeats(conn, now, limit=100)
            repo = self.ctx.repository(conn, self.base_url)
            for subscription_id in due:
                stored = repo.find("Subscription", subscription_id)
                sub = subs.info(stored.content) if stored else None
                active = sub is not None and sub.status == "active" and sub.heartbeat
                subscription_state.set_heartbeat_due(
                    conn,
                    subscription_id,
                    now + timedelta(seconds=sub.heartbeat) if active else None,  # type: ignore[union-attr,operator]
                )
                if active:
                    assert sub is not None
                    repo.enqueue(
                        "rest-hook",
                        sub.endpoint,
                        {"type": "heartbeat", "subscription": sub.reference},
                        subject=sub.reference,
                    )
                    queued += 1
        return queued


def _versions(
    repo: Repository, ctx: GatewayContext, sub: subs.SubscriptionInfo, events: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The focus of each event as the owner may see it now (never the raw resource)."""
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        focus = str(event.get("focus") or "")
        view = subscriber_view(repo, ctx, sub.owner, focus, int(event.get("version") or 1))
        if view is not None:  # gone, or out of the owner's sight: the entry goes without it
            found[f"{focus}/_history/{event['version']}"] = view
    return found


def _read(repo: Repository, reference: str | None) -> dict[str, Any] | None:
    if not reference or "/" not in reference:
        return None
    rtype, _, rid = reference.partition("/")
    stored = repo.find(rtype, rid.split("/")[0])
    return stored.content if stored else None


def _msa_code(ack: str) -> str:
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(segment[3:4] or "|")
            return fields[1] if len(fields) > 1 else ""
    return ""


def _err_text(ack: str) -> str:
    texts = []
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith(("ERR", "MSA")):
            texts.append(segment)
    return " / ".join(texts)[:500]


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
