"""create_app(settings): wire the store, routers and middleware together; nothing else."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fhir_gateway import __version__, gc_pauses, tracing
from fhir_gateway.api.admin_outbox import build_admin_outbox_api
from fhir_gateway.api.auth import MAX_TOKEN_REQUEST_BYTES, NO_STORE, TOKEN_PATH, install_auth, oauth_too_large
from fhir_gateway.api.body_limit import BodyLimit, BodyLimitMiddleware
from fhir_gateway.api.console import build_console_api
from fhir_gateway.api.errors import install_error_handlers
from fhir_gateway.api.guard import ExceptionGuard
from fhir_gateway.api.http import build_fhir_api
from fhir_gateway.api.monitoring import build_ops_api
from fhir_gateway.api.openapi import install_docs, install_openapi
from fhir_gateway.api.rate_limit import RateLimitMiddleware, TokenBuckets
from fhir_gateway.api.transport import install_transport
from fhir_gateway.api.v2_http import build_v2_api, too_large_ack
from fhir_gateway.delivery import events as delivery_events
from fhir_gateway.delivery.worker import Worker
from fhir_gateway.fhir.strict_json import JsonLimits
from fhir_gateway.observability import Metrics, RequestContextMiddleware, route_label
from fhir_gateway.rest import build_router
from fhir_gateway.settings import Settings
from fhir_gateway.v2.service import V2Service
from fhir_gateway.workflow.context import GatewayContext


def _start_worker(ctx: GatewayContext) -> tuple[threading.Event, threading.Thread]:
    """Deliveries and timers in a thread of this process (one per replica is safe)."""
    worker = Worker(ctx)
    stop = threading.Event()

    def run() -> None:
        try:
            worker.run_forever(stop)
        finally:
            worker.close()

    thread = threading.Thread(target=run, name="outbox-worker", daemon=True)
    thread.start()
    return stop, thread


def install_limits(
    app: FastAPI, settings: Settings, metrics: Metrics
) -> tuple[TokenBuckets | None, TokenBuckets | None]:
    """Body size limits per path (checked while the body streams) and the per-client rate limit,
    which sits outside them so a throttled request is answered without reading its body. Returns
    the per-client buckets (the token endpoint charges them itself, per proven client) and the
    budget of failed authentications per address (None: off)."""
    app.add_middleware(
        BodyLimitMiddleware,
        limits=[
            BodyLimit("/v2", settings.max_v2_message_bytes, too_large_ack),
            BodyLimit(TOKEN_PATH, MAX_TOKEN_REQUEST_BYTES, oauth_too_large, tuple(NO_STORE.items())),
            BodyLimit("/", settings.max_body_bytes),
        ],
    )
    rate = settings.rate_limit_per_second
    if rate <= 0:
        return None, None
    buckets = TokenBuckets(rate, settings.rate_limit_burst or math.ceil(2 * rate))
    app.add_middleware(
        RateLimitMiddleware,
        buckets=buckets,
        on_throttle=_counter(metrics),
        self_limited=frozenset({TOKEN_PATH}),
    )
    failures = settings.rate_limit_auth_failures_per_second
    return buckets, TokenBuckets(failures, math.ceil(2 * failures)) if failures > 0 else None


def _counter(metrics: Metrics) -> Callable[[str], None]:
    return lambda kind: metrics.throttled.labels(kind).inc()


def create_app(settings: Settings | None = None, ctx: GatewayContext | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    ctx = ctx or GatewayContext.create(settings)
    delivery_events.install(ctx)  # after the CompartmentKeeper: visibility is decided first
    metrics = ctx.metrics
    router = build_router(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop, thread = _start_worker(ctx) if settings.worker_in_app else (None, None)
        gc_pauses.freeze_startup_heap()
        yield
        gc_pauses.thaw()
        if stop is not None and thread is not None:
            stop.set()
            thread.join(timeout=30)
        ctx.close()

    app = FastAPI(
        title="fhir-gateway",
        version=__version__,
        lifespan=lifespan,
        description="Welzijn op Recept referral gateway (FHIR R4).",
        docs_url=None,  # install_docs: the same pages, their assets served from here
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.router = router
    app.state.metrics = metrics
    app.state.base_url = settings.base_url.rstrip("/")
    app.include_router(build_ops_api(ctx.database, metrics, lambda: ctx.clock()))
    app.include_router(build_admin_outbox_api(ctx))
    json_limits = JsonLimits(settings.max_json_depth, settings.max_bundle_entries)
    app.include_router(build_fhir_api(router, json_limits, settings.max_query_parameters))
    app.state.v2 = V2Service(router, settings.base_url, insecure_dev=settings.insecure_dev)
    app.include_router(build_v2_api(app.state.v2))
    app.include_router(build_console_api(ctx, settings))
    install_error_handlers(app)  # FastAPI's own errors and a refusing store outside /fhir: OperationOutcome
    install_openapi(app)
    install_docs(app)
    # install_limits before install_auth: the rate limit runs inside it and sees the principal
    requests, failures = install_limits(app, settings, metrics)
    install_auth(
        app, settings, ctx.database, failures=failures, on_throttle=_counter(metrics), requests=requests
    )
    install_transport(app, settings)  # CORS and gzip: outside auth (a preflight has no token)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    # last, so outermost: whatever escapes the app or a middleware is a 500 OperationOutcome
    app.add_middleware(ExceptionGuard, oauth_paths=frozenset({TOKEN_PATH}))
    tracing.instrument_app(app, route_label)  # outside all of them: the server span holds the access log line
    return app
