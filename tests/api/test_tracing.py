"""OpenTelemetry spans through real requests, caught by the SDK's in-memory exporter.

A referral Bundle posted over HTTP gives the HTTP server span with the ingest, validation,
routing and mapping spans (and the SQL statements) under it, and the access log line carries the
same trace id. An HL7 v2 message over a real MLLP socket gives its own span. Without `OTEL_*`
tracing is off: no span, no trace id in the logs.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fhir_gateway import tracing
from fhir_gateway.observability import JsonFormatter
from fhir_gateway.v2.mllp import ServerThread
from tests.conftest import make_client
from tests.wor import FHIR_JSON, load_directory, referral_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The access log lines as the gateway writes them (JSON, formatted where they are logged)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fhir_gateway.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def test_a_referral_is_traced_under_its_http_request(
    sqlite_url: str, spans: InMemorySpanExporter, access_log: io.StringIO
) -> None:
    with make_client(sqlite_url) as client:
        load_directory(client)
        spans.clear()
        access_log.seek(0)
        access_log.truncate()
        resp = client.post("/fhir", json=referral_bundle("TRACE-1"), headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name == "POST /fhir"
    assert server.attributes is not None and server.attributes.get("http.route") == "/fhir"
    names = {s.name for s in finished}
    assert {"referral.ingest", "validation.validate", "referral.route", "mapping.apply"} <= names
    for name in ("referral.ingest", "validation.validate", "referral.route", "mapping.apply"):
        for span in (s for s in finished if s.name == name):
            assert span.context.trace_id == server.context.trace_id, name
            assert server in _ancestors(span, by_id), name
    [ingest] = [s for s in finished if s.name == "referral.ingest"]
    assert ingest.attributes is not None and ingest.attributes["referral.outcome"] == "accepted"
    [routed] = [s for s in finished if s.name == "referral.route"]
    assert routed.attributes is not None and routed.attributes["referral.route_reason"] in (
        "postcode",
        "performer",
    )
    assert ingest in _ancestors(routed, by_id)
    mappings = {(s.attributes or {}).get("mapping.name") for s in finished if s.name == "mapping.apply"}
    assert {"servicerequest-to-task", "servicerequest-to-careplan"} <= mappings
    sql = [s for s in finished if s.kind == SpanKind.CLIENT and (s.attributes or {}).get("db.system")]
    assert sql and all(server in _ancestors(s, by_id) for s in sql)  # SQLAlchemy, per statement
    # the access log line of that request names the same trace and the server span
    [line] = [orjson.loads(x) for x in access_log.getvalue().splitlines() if x.strip()]
    assert line["route"] == "/fhir" and line["status"] == 200
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert int(line["span_id"], 16) in by_id
    # and no patient data in any attribute
    text = str([dict(s.attributes or {}) for s in finished])
    for secret in ("999911120", "Jansen", "Dorpsstraat"):
        assert secret not in text


def test_a_refused_referral_says_why_in_its_span(sqlite_url: str, spans: InMemorySpanExporter) -> None:
    with make_client(sqlite_url) as client:
        load_directory(client)
        bundle = referral_bundle("TRACE-2", postcode="9999 ZZ")  # no welfare organisation there
        resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert resp.status_code == 422, resp.text
    [ingest] = [s for s in spans.get_finished_spans() if s.name == "referral.ingest"]
    assert ingest.attributes is not None
    assert ingest.attributes["referral.outcome"] == "rejected"
    assert ingest.attributes["referral.refused_reason"] == "no-route"


def test_an_mllp_message_has_its_span(sqlite_url: str, spans: InMemorySpanExporter) -> None:
    from fhir_gateway.v2.mllp import MLLPServer, frame
    from fhir_gateway.v2.service import V2Service
    from tests.e2e.test_mllp import ack_code, raw_exchange, register_mllp, variant

    with make_client(sqlite_url) as client:
        load_directory(client)
        app = client.app
        register_mllp(app, "praktijk-batau-his", mllp_addresses=["127.0.0.0/8"])
        service = V2Service(app.state.router, "http://gateway.test/fhir")  # type: ignore[attr-defined]
        server = MLLPServer(host="127.0.0.1", port=0, for_peer=service.for_peer, max_message_bytes=65536)
        thread = ServerThread(server).start()
        try:
            spans.clear()
            [ack] = raw_exchange(thread.port, [frame(variant("TRACE-3"))], 1)
        finally:
            thread.stop()
    assert ack_code(ack) == "AA"
    finished = spans.get_finished_spans()
    [message] = [s for s in finished if s.name == "v2.message"]
    assert message.parent is None  # a root span: MLLP carries no trace context
    assert message.attributes is not None and message.attributes["v2.ack_code"] == "AA"
    by_id = {s.context.span_id: s for s in finished}
    [ingest] = [s for s in finished if s.name == "referral.ingest"]
    assert message in _ancestors(ingest, by_id)


def test_off_by_default_no_spans_and_no_trace_id(sqlite_url: str, access_log: io.StringIO) -> None:
    assert not tracing.enabled()
    assert tracing.provider_from_env({}) is None
    assert tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None
    with make_client(sqlite_url) as client:
        assert client.get("/fhir/metadata").status_code == 200
        assert not hasattr(client.app, "_original_build_middleware_stack")  # not instrumented
    [line] = [orjson.loads(x) for x in access_log.getvalue().splitlines() if x.strip()]
    assert "trace_id" not in line and line["route"] == "/fhir/metadata"
    with tracing.span("referral.ingest", a=1) as span:
        span.set_attribute("b", 2)  # the shared no-op takes attributes and drops them


def test_the_variables_choose_the_exporter() -> None:
    provider = tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "gw-test"})
    assert provider is not None and provider.resource.attributes["service.name"] == "gw-test"
    provider.shutdown()
    provider = tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert provider is not None and provider.resource.attributes["service.name"] == "fhir-gateway"
    provider.shutdown()
    with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
        tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    # the gateway itself starts, with tracing off and an error in the log
    assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "zipkin"}) is None
    assert not tracing.enabled()
    tracing.uninstall()
