"""Operational endpoints outside /fhir: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from fhir_gateway.observability import Metrics
from fhir_gateway.store.database import Database

log = logging.getLogger(__name__)


def build_ops_api(database: Database, metrics: Metrics) -> APIRouter:
    api = APIRouter(include_in_schema=False)

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
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api
