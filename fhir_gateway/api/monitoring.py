"""Operational endpoints outside /fhir: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from fhir_gateway.observability import MULTIPROC_DIR, Metrics
from fhir_gateway.store import outbox
from fhir_gateway.store.database import Database

log = logging.getLogger(__name__)


class OutboxCollector(Collector):
    """Outbox depth, the age of its oldest undelivered row and the dead letters, read from the
    store at scrape time: one truth for every replica and worker process, and no gauge left
    stale by a process that stopped."""

    def __init__(self, database: Database, clock: Callable[[], datetime]) -> None:
        self.database = database
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.connection(write=False) as conn:
                counts, oldest = outbox.depth(conn)
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # the HTTP counters still get scraped
            log.warning("outbox metrics not read: %s", type(exc).__name__)
            return
        now = self.clock().astimezone(UTC).replace(tzinfo=None)  # the store keeps naive UTC
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "gateway_outbox_pending",
            "Outbox rows waiting for delivery (pending or being delivered)",
            value=counts.get("pending", 0) + counts.get("delivering", 0),
        )
        yield GaugeMetricFamily(
            "gateway_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row waiting for delivery (0: none waits)",
            value=age,
        )
        yield GaugeMetricFamily(
            "gateway_outbox_dead_letters", "Outbox rows in dead letter", value=counts.get("dead", 0)
        )


def exposition(metrics: Metrics, store: Collector) -> bytes:
    """The /metrics text. Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set) the counters
    of every worker process, added up from their files; else this process's registry."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR):
        MultiProcessCollector(registry)
    else:
        registry.register(_Registry(metrics.registry))
    registry.register(store)
    return generate_latest(registry)


class _Registry(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()


def build_ops_api(
    database: Database, metrics: Metrics, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> APIRouter:
    api = APIRouter(include_in_schema=False)
    store = OutboxCollector(database, clock)

    @api.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        def check() -> tuple[bool, str]:
            try:
                if not database.is_current():
                    return False, "schema is not at the newest migration (run `fhir-gateway db upgrade`)"
                return True, "ok"
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                return False, f"database not reachable ({type(exc).__name__})"

        ok, detail = await run_in_threadpool(check)
        if not ok:
            return JSONResponse({"status": "not-ready", "detail": detail}, status_code=503)
        # Still 200: every replica shares the one database, so taking them all out of the load
        # balancer would stop the reads too. The latest write's outcome, no test write per probe.
        refused = database.write_refused
        if refused is not None:
            return JSONResponse({"status": "degraded", "detail": refused.condition})
        return JSONResponse({"status": "ready", "detail": detail})

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        body = await run_in_threadpool(exposition, metrics, store)  # reads the store and files
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return api
