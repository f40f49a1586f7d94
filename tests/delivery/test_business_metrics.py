"""The figures an operator alerts on, read from /metrics after real requests and real deliveries:
referrals received/routed/refused by reason, Task transitions, feedback delivered, outbox depth,
age and dead letters (from the store at scrape time), HL7 v2 ACK codes both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from fhir_gateway import tracing
from tests.conftest import authorize
from tests.delivery.conftest import drain, gateway, worker
from tests.delivery.receivers import MllpReceiver, Receiver
from tests.wor import (
    FHIR_JSON,
    fresh_bsn,
    load_directory,
    milestone,
    put_task,
    referral_bundle,
    send_referral,
    service_request,
    task_for,
)

ROOT = Path(__file__).resolve().parents[2]
ER7 = "x-application/hl7-v2+er7"


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def point_feedback_at(client: TestClient, receiver: Receiver) -> None:
    endpoint = client.get("/fhir/Endpoint/praktijk-de-geinoord-fhir").json()
    endpoint["address"] = receiver.url
    assert client.put(f"/fhir/Endpoint/{endpoint['id']}", json=endpoint, headers=FHIR_JSON).status_code == 200


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


def test_referral_figures_move_on_real_requests(any_gw: TestClient, receiver: Receiver) -> None:
    gw = any_gw  # SQLite and PostgreSQL: the outbox figures are SQL
    point_feedback_at(gw, receiver)
    before = scrape(gw)
    assert value(before, "gateway_outbox_pending") == 0
    assert value(before, "gateway_outbox_oldest_pending_age_seconds") == 0
    sr = send_referral(gw)
    assert (
        gw.post(
            "/fhir", json=referral_bundle("M-2", bsn=fresh_bsn(), postcode="9999 ZZ"), headers=FHIR_JSON
        ).status_code
        == 422
    )
    bad = {**service_request("Patient/nobody", "Consent/none", "M-4"), "status": "bogus"}
    assert gw.post("/fhir/ServiceRequest", json=bad, headers=FHIR_JSON).status_code in (400, 422)
    bundle = referral_bundle("M-3")
    del bundle["entry"][2]["resource"]["subject"]  # a transaction entry invalid for the profile
    assert gw.post("/fhir", json=bundle, headers=FHIR_JSON).status_code in (400, 422)
    got = scrape(gw)
    assert value(got, "gateway_referrals_total", outcome="accepted") == 1
    assert value(got, "gateway_referrals_total", outcome="rejected") == 3
    assert value(got, "gateway_referrals_refused_total", reason="no-route") == 1
    assert value(got, "gateway_referrals_refused_total", reason="invalid") == 2
    assert value(got, "gateway_referrals_routed_total", reason="postcode") == 1
    assert value(got, "gateway_task_transitions_total", from_status="new", to_status="requested") == 1

    authorize(gw, "welzijn-de-brug-cms")
    task = task_for(gw, sr["id"])
    assert put_task(gw, task, status="accepted").status_code == 200
    task = task_for(gw, sr["id"])
    assert (
        put_task(gw, task, status="in-progress", businessStatus=milestone("intake-held")).status_code == 200
    )
    gw.app.state.ctx.clock.move(seconds=90)  # type: ignore[attr-defined]
    got = scrape(gw)
    assert value(got, "gateway_task_transitions_total", from_status="requested", to_status="accepted") == 1
    assert value(got, "gateway_task_transitions_total", from_status="accepted", to_status="in-progress") == 1
    assert value(got, "gateway_outbox_pending") == 2  # two Communications for the practice
    assert value(got, "gateway_outbox_oldest_pending_age_seconds") >= 90
    assert drain(worker(gw)) == 2
    got = scrape(gw)
    assert value(got, "gateway_feedback_delivered_total", channel="fhir-push") == 2
    assert value(got, "gateway_outbox_deliveries_total", kind="fhir-push", outcome="delivered") == 2
    assert value(got, "gateway_outbox_pending") == 0
    assert value(got, "gateway_outbox_oldest_pending_age_seconds") == 0
    assert len(receiver.received) == 2


def test_dead_letters_retries_and_the_delivery_span(
    gw: TestClient, receiver: Receiver, traced: InMemorySpanExporter
) -> None:
    point_feedback_at(gw, receiver)
    receiver.status = 503  # the practice is down: retry
    sr = send_referral(gw)
    authorize(gw, "welzijn-de-brug-cms")
    assert put_task(gw, task_for(gw, sr["id"]), status="accepted").status_code == 200
    w = worker(gw)
    w.run_once()
    receiver.status = 400  # now it refuses the content: dead letter
    drain(w)
    got = scrape(gw)
    assert value(got, "gateway_outbox_deliveries_total", kind="fhir-push", outcome="retry") == 1
    assert value(got, "gateway_outbox_deliveries_total", kind="fhir-push", outcome="dead") == 1
    assert value(got, "gateway_outbox_dead_letters") == 1
    assert value(got, "gateway_feedback_delivered_total", channel="fhir-push") == 0
    finished = traced.get_finished_spans()
    deliveries = [s for s in finished if s.name == "outbox.deliver"]
    assert [(s.attributes or {}).get("outbox.outcome") for s in deliveries] == ["retry", "dead"]
    # the outbound HTTP call (httpx instrumentation) is a client span inside each delivery
    calls = [s for s in finished if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert {c.parent.span_id for c in calls if c.parent} == {d.context.span_id for d in deliveries}


def test_v2_ack_codes_sent_and_received(sqlite_url: str) -> None:
    with gateway(sqlite_url) as http:
        load_directory(http)
        examples = ROOT / "examples" / "v2"
        authorize(http, "praktijk-hollandse-ijssel-his")
        good = (examples / "ref-i12-v24.hl7").read_bytes()
        assert b"MSA|AA" in http.post("/v2", content=good, headers={"content-type": ER7}).content
        authorize(http, "praktijk-batau-his")
        uncovered = (examples / "ref-i12-postcode-not-covered.hl7").read_bytes()
        assert b"MSA|AE" in http.post("/v2", content=uncovered, headers={"content-type": ER7}).content
        assert b"MSA|AR" in http.post("/v2", content=b"hello", headers={"content-type": ER7}).content
        got = scrape(http)
        assert value(got, "gateway_v2_acks_total", direction="sent", code="AA") == 1
        assert value(got, "gateway_v2_acks_total", direction="sent", code="AE") == 1
        assert value(got, "gateway_v2_acks_total", direction="sent", code="AR") == 1
        assert value(got, "gateway_referrals_refused_total", reason="no-route") == 1

        listener = MllpReceiver("AE").start()  # a v2 practice that refuses our RRI^I12
        try:
            authorize(http, "gateway-admin")
            endpoint = http.get("/fhir/Endpoint/praktijk-batau-mllp").json()
            endpoint["address"] = f"mllp://127.0.0.1:{listener.port}"
            assert (
                http.put(f"/fhir/Endpoint/{endpoint['id']}", json=endpoint, headers=FHIR_JSON).status_code
                == 200
            )
            authorize(http, "praktijk-batau-his")
            v2_referral = (examples / "ref-i12-v25.hl7").read_bytes()
            assert b"MSA|AA" in http.post("/v2", content=v2_referral, headers={"content-type": ER7}).content
            authorize(http, "gateway-admin")
            [sr] = [
                e["resource"]
                for e in http.get("/fhir/ServiceRequest").json()["entry"]
                if e["resource"]["identifier"][0]["value"] == "REF-2026-0001"
            ]
            authorize(http, "welzijn-de-brug-cms")
            assert put_task(http, task_for(http, sr["id"]), status="accepted").status_code == 200
            drain(worker(http))
        finally:
            listener.stop()
        got = scrape(http)
        assert listener.messages and "RRI^I12" in listener.messages[0]
        assert value(got, "gateway_v2_acks_total", direction="received", code="AE") == 1
        assert value(got, "gateway_outbox_deliveries_total", kind="mllp", outcome="dead") == 1
        assert value(got, "gateway_outbox_dead_letters") == 1


def test_resends_reused_identifiers_and_consent_refusals_are_told_apart(gw: TestClient) -> None:
    bsn = fresh_bsn()
    first = referral_bundle("M-R", bsn=bsn)
    assert gw.post("/fhir", json=first, headers=FHIR_JSON).status_code == 200
    assert gw.post("/fhir", json=first, headers=FHIR_JSON).status_code == 200  # the same again: a resend
    other = referral_bundle("M-R", bsn=fresh_bsn())  # the same referral number for another patient
    assert gw.post("/fhir", json=other, headers=FHIR_JSON).status_code == 409
    withdrawn = referral_bundle("M-W", bsn=fresh_bsn())
    withdrawn["entry"][1]["resource"]["status"] = "inactive"  # no active consent
    assert gw.post("/fhir", json=withdrawn, headers=FHIR_JSON).status_code == 422
    got = scrape(gw)
    assert value(got, "gateway_referrals_total", outcome="accepted") == 1
    assert value(got, "gateway_referrals_total", outcome="resend") == 1
    assert value(got, "gateway_referrals_total", outcome="rejected") == 2
    assert value(got, "gateway_referrals_refused_total", reason="identifier-reused") == 1
    assert value(got, "gateway_referrals_refused_total", reason="consent") == 1


def test_a_transaction_rolled_back_after_routing_counts_nothing(gw: TestClient) -> None:
    bundle = referral_bundle("M-T", bsn=fresh_bsn())
    org = gw.get("/fhir/Organization/welzijn-de-brug").json()
    bundle["entry"].append(  # PUTs run after the POSTs: the referral is routed, then this fails
        {
            "fullUrl": f"{gw.base_url}/fhir/Organization/{org['id']}",
            "resource": org,
            "request": {"method": "PUT", "url": f"Organization/{org['id']}", "ifMatch": 'W/"999"'},
        }
    )
    assert gw.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 412
    got = scrape(gw)
    assert value(got, "gateway_referrals_total", outcome="accepted") == 0
    assert value(got, "gateway_referrals_routed_total", reason="postcode") == 0
    assert value(got, "gateway_task_transitions_total", from_status="new", to_status="requested") == 0
    found = gw.get("/fhir/ServiceRequest", params={"identifier": "M-T", "_summary": "count"})
    assert found.json()["total"] == 0  # rolled back
    bundle["entry"].pop()
    assert gw.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    got = scrape(gw)
    assert value(got, "gateway_referrals_total", outcome="accepted") == 1
    assert value(got, "gateway_task_transitions_total", from_status="new", to_status="requested") == 1
