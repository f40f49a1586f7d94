"""Structured JSON logs with a request id (and the trace id, when tracing is on) on every line,
and Prometheus metrics.

Logs never carry patient data: request lines name the route *pattern* (`/fhir/Patient/{id}`),
never the path or the query string (a query can hold a BSN).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from fhir_gateway import tracing
from fhir_gateway.fhir.models import is_known_type

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        ids = tracing.current_ids()
        if ids is not None:  # the same ids as the spans: from a log line to its trace and back
            line["trace_id"], line["span_id"] = ids
        for key in ("method", "route", "status", "duration_ms", "event", "frames"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return orjson.dumps(line).decode()


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests without paths


@contextlib.contextmanager
def multiprocess_metrics(workers: int) -> Iterator[None]:
    """For `serve --workers N` (N > 1): prometheus-client's multiprocess mode in a fresh directory,
    so /metrics, answered by any one worker, adds up the counters of all of them (without it a
    scrape sees one process's figures, a different one each time). The worker processes inherit
    the variable and keep their values in files there; removed when serve ends. One process
    keeps the plain in-memory registry."""
    if workers <= 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="fhir-gateway-metrics-")
    previous = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = path
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = previous
        shutil.rmtree(path, ignore_errors=True)


ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


class Metrics:
    """One registry per app, so tests and several apps in one process don't collide.

    Under `serve --workers N` prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
    set by `serve`): the values live in files per process and `/metrics` adds them up
    (`api/monitoring.py`). Outbox depth, its oldest row and the dead letters are not kept here:
    they are read from the store at scrape time, so every replica and worker agrees. In that
    mode the values are keyed by name and labels per process: one Metrics per worker process
    (create_app makes one), or two would overwrite each other's counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.referrals = Counter(
            "gateway_referrals_total",
            "Referrals received, by outcome (accepted, rejected, resend): the sum is every referral received",
            ["outcome"],
            registry=self.registry,
        )
        self.routed = Counter(
            "gateway_referrals_routed_total",
            "Referrals routed to a welfare organisation, by how the route was chosen",
            ["reason"],
            registry=self.registry,
        )
        self.refused = Counter(
            "gateway_referrals_refused_total",
            "Referrals refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.task_transitions = Counter(
            "gateway_task_transitions_total",
            "Task status changes (from `new`: a Task made for a referral)",
            ["from_status", "to_status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "gateway_outbox_deliveries_total",
            "Outbox delivery attempts, by kind and outcome (delivered, retry, dead, cancelled)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "gateway_feedback_delivered_total",
            "Feedback (Communications) delivered to the referring practice, by channel",
            ["channel"],
            registry=self.registry,
        )
        self.v2_acks = Counter(
            "gateway_v2_acks_total",
            "HL7 v2 acknowledgements: sent (to a message we received) or received (to one we sent)",
            ["direction", "code"],
            registry=self.registry,
        )
        self.throttled = Counter(
            "gateway_http_throttled_total",
            "Requests refused with 429 by a rate limit (kind: client, address, or console sign-in)",
            ["kind"],
            registry=self.registry,
        )

    def referral_routed(self, reason: str, task_status: str) -> None:
        """A referral stored with its Task (counted once the transaction commits)."""
        self.referrals.labels("accepted").inc()
        self.routed.labels(reason).inc()
        self.task_transition(None, task_status)

    def task_transition(self, old: str | None, new: str) -> None:
        """Count a Task status change; `old` None: the Task was just made."""
        if old != new:
            self.task_transitions.labels(old or "new", _bounded(new)).inc()

    def v2_ack(self, direction: str, code: str) -> None:
        self.v2_acks.labels(direction, code if code in ACK_CODES else "other").inc()


def _bounded(status: str) -> str:
    """A status label of bounded length (the value is checked against the Task codes before)."""
    return status[:32]


_FIXED_SEGMENTS = frozenset(
    {"metadata", "_history", "_search", "$validate", "$process-message", "$wor-report", "$status", "$events"}
)
_MAX_LABELS = 512
_labels: set[str] = set()
_TOP_LEVEL = frozenset(
    {
        "auth",
        "v2",
        "admin",
        "console",
        "docs",
        "redoc",
        "openapi.json",
        "healthz",
        "readyz",
        "metrics",
        ".well-known",
    }
)
_ID_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-.]{1,64})$")


def route_label(path: str) -> str:
    """The metrics/log label of a path: its shape without ids, and at most `_MAX_LABELS` different
    ones, so requests to made-up paths cannot grow the metrics without bound."""
    label = _route_shape(path)
    if label not in _labels:
        if len(_labels) >= _MAX_LABELS:
            return "/{other}"
        _labels.add(label)
    return label


def _route_shape(path: str) -> str:
    """`/fhir/Task/123/_history/2` → `/fhir/Task/{id}/_history/{vid}` (no ids)."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "fhir":
        if not parts:
            return "/"
        if parts[0] not in _TOP_LEVEL:
            return "/{other}"
        return "/" + "/".join(
            parts[:1] + [p if _ID_SEGMENT.match(p) and len(p) <= 40 else "{?}" for p in parts[1:2]]
        )
    out = ["fhir"]
    for i, part in enumerate(parts[1:], start=1):
        if i == 1 and part[:1].isupper():  # only real names: a label per made-up one is unbounded
            out.append(part if is_known_type(part) else "{type}")
        elif part.startswith(("$", "_")) or part == "metadata":
            out.append(part if part in _FIXED_SEGMENTS else "{op}")
        elif out[-1] == "_history":
            out.append("{vid}")
        elif _ID_SEGMENT.match(part):
            out.append("{id}")
        else:
            out.append("{?}")
    return "/" + "/".join(out[:5])


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, access log line, metrics."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger("fhir_gateway.access")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if re.fullmatch(r"[A-Za-z0-9\-_.]{1,64}", incoming or "") else uuid.uuid4().hex
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid  # for the guard outside (api/guard.py)
        status_holder = {"status": 500}
        start = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = route_label(scope.get("path", ""))
            method = scope.get("method", "")
            status = status_holder["status"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            self.log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)
