"""OpenTelemetry tracing: set-up from the standard `OTEL_*` variables, and `span()` for our own steps.

Off by default. `OTEL_TRACES_EXPORTER=console` prints spans, `=otlp` sends them to a collector
(`OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318); `OTEL_SERVICE_NAME` names the
service (default `fhir-gateway`), `OTEL_TRACES_SAMPLER` / `OTEL_SDK_DISABLED` as the SDK reads them.
While off, `span()` is a shared no-op context manager: no tracer call, no attributes built.

Imports nothing of the gateway: workflow, validation, routing, mapping, delivery and v2 all use
`span()`, the HTTP layer adds the FastAPI instrumentation with `instrument_app()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

log = logging.getLogger(__name__)

SERVICE_NAME = "fhir-gateway"
_EXCLUDED_URLS = "healthz,readyz,metrics"  # probes every few seconds would drown the real traces

_lock = threading.Lock()
_provider: Any = None  # an SDK TracerProvider once tracing is on
_tracer: trace.Tracer = trace.NoOpTracer()
_configured = False


class _NoSpan:
    """What `span()` returns while tracing is off: one shared object, its own context manager,
    that takes attributes and drops them (no generator, no allocation per call)."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        return None


_NO_SPAN = _NoSpan()


def enabled() -> bool:
    return _provider is not None


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (ours are named `<area>.<step>`). Never pass patient data
    as an attribute: types, codes, counts and outcomes only."""
    if _provider is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        name, attributes={k: v for k, v in attributes.items() if v is not None}
    )


def install(provider: Any) -> None:
    """Use `provider` (an SDK TracerProvider) for our spans and the instrumentations. Tests pass
    one with an in-memory exporter; `configure_from_env` passes the one the variables describe."""
    global _provider, _tracer, _configured
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer("fhir_gateway")
        _configured = True


def uninstall() -> None:
    """Back to off (tests)."""
    global _provider, _tracer, _configured
    with _lock:
        _provider, _tracer, _configured = None, trace.NoOpTracer(), False


def configure_from_env(environ: Mapping[str, str] | None = None) -> Any:
    """Turn tracing on when `OTEL_TRACES_EXPORTER` names an exporter; once per process (a later
    call returns the same provider). Returns the provider, or None while tracing is off."""
    global _configured
    with _lock:
        if _configured:
            return _provider
        _configured = True
    try:
        provider = provider_from_env(os.environ if environ is None else environ)
    except ValueError as exc:  # a typo in tracing set-up must not stop referrals: say so, stay off
        log.error("tracing off: %s", exc, extra={"event": "tracing.misconfigured"})
        return None
    if provider is None:
        return None
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on", extra={"event": "tracing.on"})
    return provider


def provider_from_env(environ: Mapping[str, str]) -> Any:
    """The SDK TracerProvider the `OTEL_*` variables ask for, None when they ask for none."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    attributes = {"service.name": environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME}
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes = {}  # named there: leave it to the SDK, which reads OTEL_RESOURCE_ATTRIBUTES
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter '{name}' (console, otlp or none)")
    return provider


def instrument_app(app: Any, route_name: Callable[[str], str] | None = None) -> None:
    """The HTTP server span of every request (FastAPI/ASGI), when tracing is on. `route_name`:
    the path's label in logs and metrics, which also names the span (the FHIR API is one
    catch-all route to FastAPI, so its own name would be `GET /fhir/{path:path}` for all)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    def name_span(span: Any, scope: dict[str, Any]) -> None:
        if route_name is not None and span.is_recording():
            label = route_name(scope.get("path", ""))
            span.update_name(f"{scope.get('method', '')} {label}")
            span.set_attribute("gateway.route", label)

    FastAPIInstrumentor.instrument_app(
        app,
        server_request_hook=name_span,
        tracer_provider=_provider,
        excluded_urls=_EXCLUDED_URLS,
        exclude_spans=["receive", "send"],  # a span per body chunk says nothing an operator needs
    )


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement of this SQLAlchemy engine, when tracing is on. Per engine, not the
    global instrumentor: that one instruments once per process, and tests build many apps."""
    if _provider is None or getattr(engine, "_gateway_traced", False):
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeter

    connections = NoOpMeter("fhir_gateway").create_up_down_counter("db.client.connections.usage")
    EngineTracer(_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"), engine, connections)
    engine._gateway_traced = True


def instrument_httpx(client: Any) -> None:
    """A client span per outbound HTTP call of this httpx client, when tracing is on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_provider)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the span this code runs in, None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
