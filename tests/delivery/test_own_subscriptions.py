"""Practices and welfare organisations set up their own Subscriptions: owned, confined, minimised."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.vocabulary import BACKPORT_FILTER_CRITERIA, SUBSCRIPTION_OWNER, WORKLIST_TOPIC
from fhir_gateway.workflow.resources import subscriber_view
from fhir_gateway.workflow.subscriptions import endpoint_problem
from tests.conftest import authorize
from tests.delivery.conftest import drain, gateway, subscribe, worker
from tests.delivery.receivers import Receiver
from tests.wor import DE_BRUG, FHIR_JSON, IJSSELSTEIN, load_directory, send_referral

W1, W2, GP = "welzijn-de-brug-cms", "welzijn-ijsselstein-samen-cms", "praktijk-de-geinoord-his"
WORKLIST = f"Task?owner={DE_BRUG}&status=requested"


def owner_of(sub: dict[str, Any]) -> list[str]:
    return [
        e["valueReference"]["reference"] for e in sub.get("extension", []) if e["url"] == SUBSCRIPTION_OWNER
    ]


def events(receiver: Receiver) -> list[dict[str, Any]]:
    return [n for n in receiver.notifications() if n["type"] == "event-notification"]


def test_welfare_org_subscribes_to_its_worklist_and_others_get_nothing(any_gw: TestClient) -> None:
    mine, theirs = Receiver().start(), Receiver().start()
    try:
        authorize(any_gw, W1)
        sub = subscribe(any_gw, mine.url, WORKLIST, content="full-resource")
        assert sub["status"] == "requested" and owner_of(sub) == [DE_BRUG]
        authorize(any_gw, W2)  # names welfare 1 as owner in criteria and extension: still its own
        spoof = {"url": SUBSCRIPTION_OWNER, "valueReference": {"reference": DE_BRUG}}
        other = subscribe(any_gw, theirs.url, WORKLIST, extension=[spoof])
        assert owner_of(other) == [IJSSELSTEIN]
        assert any_gw.get(f"/fhir/Subscription/{sub['id']}").status_code == 404
        assert any_gw.get(f"/fhir/Subscription/{sub['id']}/$status").status_code == 404
        drain(worker(any_gw))  # handshakes: both active
        authorize(any_gw, GP)
        sr = send_referral(any_gw)
        drain(worker(any_gw))
        [event] = events(mine)
        task = event["bundle"]["entry"][1]["resource"]
        assert task["resourceType"] == "Task" and task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
        assert events(theirs) == []  # its criteria match, but the Task is not in its compartment
        authorize(any_gw, W1)
        assert any_gw.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "active"
        replay = any_gw.get(f"/fhir/Subscription/{sub['id']}/$events").json()
        assert replay["entry"][1]["resource"]["id"] == task["id"]
    finally:
        mine.stop()
        theirs.stop()


def test_full_resource_is_the_owners_minimised_view(any_gw: TestClient) -> None:
    authorize(any_gw, GP)
    sr = send_referral(any_gw)
    ctx = any_gw.app.state.ctx  # type: ignore[attr-defined]
    with ctx.database.connection(write=False) as conn:
        repo = ctx.repository(conn, "")
        raw = repo.find("ServiceRequest", sr["id"]).content
        mine = subscriber_view(repo, ctx, DE_BRUG, f"ServiceRequest/{sr['id']}", 1)
        theirs = subscriber_view(repo, ctx, IJSSELSTEIN, f"ServiceRequest/{sr['id']}", 1)
        practice = subscriber_view(
            repo, ctx, "Organization/praktijk-de-geinoord", f"ServiceRequest/{sr['id']}", 1
        )
    assert theirs is None  # outside its compartment: no resource at all
    assert mine is not None and set(mine) < set(raw)  # minimised: the consent leaves elements out
    assert any(s.get("code") == "REDACTED" for s in mine["meta"]["security"])
    assert practice == raw  # the referring practice sees its own referral whole


def test_criteria_limited_to_what_the_owner_may_search(gw: TestClient) -> None:
    authorize(gw, W1)

    def create(criteria: str, endpoint: str = "http://127.0.0.1:9/hook", **extra: Any) -> Any:
        body = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "test",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
            **extra,
        }
        return gw.post("/fhir/Subscription", json=body, headers=FHIR_JSON)

    assert create("ServiceRequest?reason-code=x").status_code == 403  # the view withholds reasonCode
    assert create("Consent?status=active").status_code == 403  # no search scope for Consent
    assert create("Task?no-such-param=1").status_code == 422
    r = create("https://example.org/SubscriptionTopic/unknown")
    assert r.status_code == 422, r.text
    assert create(WORKLIST, endpoint="http://10.1.2.3/hook").status_code == 422
    assert create(WORKLIST, endpoint="https://169.254.169.254/latest").status_code == 422
    resp = create(WORKLIST)
    assert resp.status_code == 201 and resp.json()["status"] == "requested"  # not active by saying so
    sub = resp.json()
    off = gw.put(f"/fhir/Subscription/{sub['id']}", json={**sub, "status": "off"}, headers=FHIR_JSON)
    assert off.status_code == 200 and off.json()["status"] == "off"
    assert gw.delete(f"/fhir/Subscription/{sub['id']}").status_code == 204


def test_topic_based_worklist_subscription(any_gw: TestClient, receiver: Receiver) -> None:
    authorize(any_gw, W1)
    criteria_ext = {"extension": [{"url": BACKPORT_FILTER_CRITERIA, "valueString": WORKLIST}]}
    sub = subscribe(any_gw, receiver.url, WORKLIST_TOPIC, _criteria=criteria_ext)
    drain(worker(any_gw))
    authorize(any_gw, GP)
    send_referral(any_gw)
    drain(worker(any_gw))
    [event] = events(receiver)
    status = event["bundle"]["entry"][0]["resource"]["parameter"]
    assert {"name": "topic", "valueCanonical": WORKLIST_TOPIC} in status
    assert event["bundle"]["entry"][1]["fullUrl"].split("/")[-2] == "Task"
    authorize(any_gw, W1)
    assert any_gw.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "active"


@pytest.mark.parametrize(
    ("url", "loopback", "ok"),
    [
        ("https://welzijn.example.nl/hook", False, True),
        ("http://welzijn.example.nl/hook", False, False),
        ("http://127.0.0.1:8080/hook", False, False),
        ("http://127.0.0.1:8080/hook", True, True),
        ("http://localhost/hook", True, True),
        ("http://10.0.0.5/hook", True, False),
        ("https://192.168.1.1/hook", False, False),
        ("https://[::1]/hook", False, False),
        ("https://user:pw@welzijn.example.nl/hook", False, False),
        ("ftp://welzijn.example.nl/hook", False, False),
    ],
)
def test_endpoint_rule(url: str, loopback: bool, ok: bool) -> None:
    assert (endpoint_problem(url, loopback_http=loopback) is None) is ok


def test_capability_statement_declares_the_worklist_topic(gw: TestClient) -> None:
    rest = gw.get("/fhir/metadata").json()["rest"][0]
    [sub] = [r for r in rest["resource"] if r["type"] == "Subscription"]
    assert {"create", "read", "update", "delete", "search-type"} <= {i["code"] for i in sub["interaction"]}
    assert [e["valueCanonical"] for e in sub["extension"]] == [WORKLIST_TOPIC]
    assert {o["name"] for o in sub["operation"]} == {"status", "events"}


def test_example_welfare_subscription_is_accepted(gw: TestClient) -> None:
    """examples/subscriptions/: what README shows a welfare system sending (endpoint swapped)."""
    import json
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "subscriptions"
    authorize(gw, W1)
    for path in sorted(example.glob("*.json")):
        body = json.loads(path.read_text())
        body["channel"]["endpoint"] = "http://127.0.0.1:9/hook"
        resp = gw.post("/fhir/Subscription", json=body, headers=FHIR_JSON)
        assert resp.status_code == 201, (path.name, resp.text)
        assert owner_of(resp.json()) == [DE_BRUG]


def test_a_replica_sees_a_subscription_made_on_another(database_url: str) -> None:
    """Subscriptions are kept between transactions, keyed by their fingerprint in the database:
    a replica whose list is warm (and empty) still notifies for one another replica created."""
    receiver = Receiver().start()
    with gateway(database_url) as first, gateway(database_url) as second:
        try:
            load_directory(first)
            authorize(first, GP)
            send_referral(first)  # warms the first replica's caches: no Subscription yet
            authorize(second, W1)
            sub = subscribe(second, receiver.url, WORKLIST, content="full-resource")
            drain(worker(second))  # handshake: active
            authorize(first, GP)
            sr = send_referral(first)
            drain(worker(first))
            [event] = events(receiver)
            focus = event["bundle"]["entry"][1]["resource"]["focus"]["reference"]
            assert focus == f"ServiceRequest/{sr['id']}"
            authorize(first, W1)
            assert first.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "active"
        finally:
            receiver.stop()
