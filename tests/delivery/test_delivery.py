"""Outbox delivery against real receivers: order, resume, dead letters, two workers, MLLP."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fhir_gateway.api.admin_outbox import build_admin_outbox_api
from fhir_gateway.delivery import outbox
from fhir_gateway.store.tables import OutboxRow
from tests.conftest import authorize
from tests.delivery.conftest import drain, subscribe, worker
from tests.delivery.receivers import MllpReceiver, Receiver
from tests.wor import DE_BRUG, FHIR_JSON, GP_PRACTICE, milestone, put_task, send_referral, task_for

OUT = OutboxRow.__table__


def rows(client: TestClient, **where: Any) -> list[Any]:
    with client.app.state.ctx.database.connection(write=False) as conn:  # type: ignore[attr-defined]
        stmt = sa.select(OUT).order_by(OUT.c.pk)
        for key, value in where.items():
            stmt = stmt.where(OUT.c[key] == value)
        return list(conn.execute(stmt).all())


def active_subscription(client: TestClient, receiver: Receiver, criteria: str, **kw: Any) -> dict[str, Any]:
    sub = subscribe(client, receiver.url, criteria, **kw)
    drain(worker(client))
    assert client.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "active"
    return sub


def test_handshake_events_resume_in_order_nothing_lost(any_gw: TestClient, receiver: Receiver) -> None:
    sub = active_subscription(any_gw, receiver, f"Task?owner={DE_BRUG}")
    assert [n["type"] for n in receiver.notifications()] == ["handshake"]
    receiver.stop()  # the subscriber goes down
    w = worker(any_gw)
    for _ in range(4):
        send_referral(any_gw)
    assert w.run_once() == 0  # refused connection: retry later, nothing delivered
    pending = rows(any_gw, subject=f"Subscription/{sub['id']}", status="pending")
    assert len(pending) == 4 and pending[0].attempts == 1 and "ConnectError" in pending[0].last_error
    assert [r.attempts for r in pending[1:]] == [0, 0, 0]  # held back behind event 1, not tried
    receiver.start()
    receiver.status = 500  # up, but failing
    w.run_once()
    receiver.status = 200
    drain(w)
    numbers = [x for n in receiver.notifications() if n["type"] == "event-notification" for x in n["numbers"]]
    assert sorted(set(numbers)) == [1, 2, 3, 4]  # nothing lost
    assert numbers == sorted(numbers)  # in order per subscription
    assert receiver.duplicates() == 0
    status = any_gw.get(f"/fhir/Subscription/{sub['id']}/$status").json()["entry"][0]["resource"]
    since = next(p for p in status["parameter"] if p["name"] == "events-since-subscription-start")
    assert since["valueString"] == "4"
    replay = any_gw.get(
        f"/fhir/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"}
    ).json()
    events = [p for p in replay["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["2", "3"]
    assert len(replay["entry"]) == 3  # status + the two focus entries (id-only)


def test_full_resource_and_empty_payloads(gw: TestClient, receiver: Receiver) -> None:
    active_subscription(gw, receiver, "Task?status=requested", content="full-resource")
    other = Receiver().start()
    try:
        active_subscription(gw, other, "Task?status=requested", content=None)
        sr = send_referral(gw)
        drain(worker(gw))
        full = next(n for n in receiver.notifications() if n["type"] == "event-notification")["bundle"]
        assert full["entry"][1]["resource"]["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
        empty = next(n for n in other.notifications() if n["type"] == "event-notification")["bundle"]
        assert len(empty["entry"]) == 1  # SubscriptionStatus only
        parts = [p for p in empty["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
        assert not any(x["name"] == "focus" for x in parts[0]["part"])
    finally:
        other.stop()


def test_gone_is_dead_at_once_and_retry_from_dead_letter_works(gw: TestClient, receiver: Receiver) -> None:
    gw.app.include_router(build_admin_outbox_api(gw.app.state.ctx))  # type: ignore[attr-defined]
    sub = active_subscription(gw, receiver, f"Task?owner={DE_BRUG}")
    receiver.status = 410
    send_referral(gw)
    w = worker(gw)
    w.run_once()
    [dead] = rows(gw, subject=f"Subscription/{sub['id']}", status="dead")
    assert dead.attempts == 1 and "HTTP 410" in dead.last_error
    assert "\ngateway_outbox_dead_letters 1.0\n" in gw.get("/metrics").text  # read from the store
    listed = gw.get("/admin/outbox", params={"status": "dead"}).json()
    assert [r["eventId"] for r in listed["rows"]] == [dead.event_id]
    authorize(gw, "welzijn-de-brug-cms")
    assert gw.post(f"/admin/outbox/{dead.event_id}/retry").status_code == 403
    authorize(gw, "gateway-admin")
    receiver.status = 200
    assert gw.post(f"/admin/outbox/{dead.event_id}/retry").status_code == 200
    assert drain(w) == 1
    assert [n["numbers"] for n in receiver.notifications() if n["type"] == "event-notification"] == [[1]]
    assert rows(gw, event_id=dead.event_id)[0].status == "delivered"


def test_gives_up_after_max_attempts(gw: TestClient, receiver: Receiver) -> None:
    active_subscription(gw, receiver, f"Task?owner={DE_BRUG}")
    receiver.status = 503
    send_referral(gw)
    drain(worker(gw))
    [dead] = rows(gw, status="dead")
    assert dead.attempts == 5 and "gave up after 5 attempts" in dead.last_error


def test_outbox_row_exists_iff_the_change_committed(gw: TestClient, receiver: Receiver) -> None:
    active_subscription(gw, receiver, "Task?status=requested")
    ctx = gw.app.state.ctx  # type: ignore[attr-defined]
    before = len(rows(gw))
    with pytest.raises(RuntimeError), ctx.database.connection(write=True) as conn:
        ctx.repository(conn).create({"resourceType": "Task", "status": "requested", "intent": "order"})
        assert len(conn.execute(sa.select(OUT)).all()) == before + 1  # queued inside the transaction
        raise RuntimeError("the change fails")
    assert len(rows(gw)) == before
    with ctx.database.connection(write=True) as conn:
        ctx.repository(conn).create({"resourceType": "Task", "status": "requested", "intent": "order"})
    assert len(rows(gw)) == before + 1


def test_compartment_decides_what_a_subscriber_gets(gw: TestClient, receiver: Receiver) -> None:
    owner_ext = "https://wor.example.nl/fhir/StructureDefinition/subscription-owner"
    ctx = gw.app.state.ctx  # type: ignore[attr-defined]
    ids = {}
    for org in (DE_BRUG, "Organization/welzijn-ijsselstein-samen"):
        with ctx.database.connection(write=True) as conn:
            ids[org] = (
                ctx.repository(conn)
                .create(
                    {
                        "resourceType": "Subscription",
                        "status": "active",
                        "reason": "worklist",
                        "criteria": "Task?status=requested",
                        "channel": {
                            "type": "rest-hook",
                            "endpoint": receiver.url,
                            "payload": "application/fhir+json",
                        },
                        "extension": [{"url": owner_ext, "valueReference": {"reference": org}}],
                    }
                )
                .id
            )
    send_referral(gw)  # routed to De Brug
    drain(worker(gw))
    got = {
        n["bundle"]["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"]
        for n in receiver.notifications()
    }
    assert got == {f"Subscription/{ids[DE_BRUG]}"}


def test_feedback_is_pushed_to_the_practice_fhir_endpoint(gw: TestClient, receiver: Receiver) -> None:
    endpoint = gw.get("/fhir/Endpoint/praktijk-de-geinoord-fhir").json()
    assert (
        gw.put(
            f"/fhir/Endpoint/{endpoint['id']}", json={**endpoint, "address": receiver.url}, headers=FHIR_JSON
        ).status_code
        == 200
    )
    sr = send_referral(gw)
    task = task_for(gw, sr["id"])
    assert put_task(gw, task, status="accepted").status_code == 200
    task = task_for(gw, sr["id"])
    assert (
        put_task(gw, task, status="in-progress", businessStatus=milestone("intake-held")).status_code == 200
    )
    [first, second] = rows(gw, kind="fhir-push")
    assert first.subject == GP_PRACTICE and first.pk < second.pk
    assert drain(worker(gw)) == 2
    kinds = [r["body"]["category"][0]["coding"][0]["code"] for r in receiver.received]
    assert kinds == ["accepted", "intake-held"]  # in the order they happened
    assert all(r["body"]["resourceType"] == "Communication" and r["event_id"] for r in receiver.received)


@pytest.mark.parametrize(("ack", "status"), [("AA", "delivered"), ("AE", "dead")])
def test_mllp_feedback_to_a_v2_practice(gw: TestClient, ack: str, status: str) -> None:
    listener = MllpReceiver(ack).start()
    try:
        endpoint = gw.get("/fhir/Endpoint/praktijk-batau-mllp").json()
        endpoint["address"] = f"mllp://127.0.0.1:{listener.port}"
        assert gw.put(f"/fhir/Endpoint/{endpoint['id']}", json=endpoint, headers=FHIR_JSON).status_code == 200
        sr = send_referral(gw)
        task = task_for(gw, sr["id"])
        ctx = gw.app.state.ctx  # type: ignore[attr-defined]
        with ctx.database.connection(write=True) as conn:  # feedback addressed to the v2 practice
            ctx.repository(conn).create(
                {
                    "resourceType": "Communication",
                    "status": "completed",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "https://wor.example.nl/fhir/CodeSystem/wor-feedback-kinds",
                                    "code": "accepted",
                                }
                            ]
                        }
                    ],
                    "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
                    "partOf": [{"reference": f"Task/{task['id']}"}],
                    "subject": task["for"],
                    "recipient": [{"reference": "PractitionerRole/huisarts-el-amrani-praktijk-batau"}],
                    "payload": [{"contentString": "De welzijnscoach heeft de verwijzing geaccepteerd."}],
                }
            )
        [row] = rows(gw, kind="mllp")
        assert row.payload["v2Version"] == "2.4"
        worker(gw).run_once()
        [row] = rows(gw, kind="mllp")
        assert row.status == status
        [message] = listener.messages
        assert message.startswith("MSH|") and "RRI^I12" in message and "PID|" in message
        if ack == "AE":
            assert "MLLP AE" in row.last_error and "Onbekende" in row.last_error
    finally:
        listener.stop()


@pytest.mark.postgres
def test_two_workers_never_deliver_a_row_twice(postgres_url: str) -> None:
    from tests.conftest import _fresh_postgres
    from tests.delivery.conftest import gateway

    receiver = Receiver().start()
    receiver.delay = 0.002
    try:
        with gateway(_fresh_postgres(postgres_url)) as client:
            ctx = client.app.state.ctx  # type: ignore[attr-defined]
            with ctx.database.connection(write=True) as conn:
                repo = ctx.repository(conn)
                for i in range(300):
                    repo.enqueue("rest-hook", receiver.url, {"type": "x", "n": i}, subject=f"s{i % 6}")
            # rest-hook rows need a Subscription; deliver them as plain pushes of a resource
            with ctx.database.connection(write=True) as conn:
                comm = ctx.repository(conn).create({"resourceType": "Communication", "status": "completed"})
                conn.execute(
                    sa.update(OUT).values(
                        kind="fhir-push",
                        payload=sa.func.jsonb_build_object("communication", comm.reference, "n", OUT.c.pk),
                    )
                )
            stop = threading.Event()
            workers = [worker(client, batch=5) for _ in range(2)]
            threads = [threading.Thread(target=w.run_forever, args=(stop, 0.01)) for w in workers]
            for t in threads:
                t.start()
            import time

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(rows(client, status="delivered")) < 300:
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
            delivered = rows(client, status="delivered")
            assert len(delivered) == 300
            assert receiver.duplicates() == 0 and len(receiver.received) == 300
            by_subject: dict[str, list[int]] = {}
            order = {r.event_id: (r.subject, r.pk) for r in delivered}
            for item in receiver.received:
                subject, pk = order[item["event_id"]]
                by_subject.setdefault(subject, []).append(pk)
            assert all(pks == sorted(pks) for pks in by_subject.values())
    finally:
        receiver.stop()


def test_claim_respects_subject_order_and_leases(sqlite_url: str) -> None:
    from datetime import datetime, timedelta

    from fhir_gateway.store.database import Database
    from fhir_gateway.store.repository import Repository

    db = Database(sqlite_url)
    with db.connection(write=True) as conn:
        repo = Repository(conn)
        for i in range(3):
            repo.enqueue("fhir-push", "http://x", {"n": i}, subject="a")
        repo.enqueue("fhir-push", "http://x", {"n": 9}, subject="b")
    now = datetime.utcnow() + timedelta(seconds=1)
    with db.connection(write=True) as conn:
        first = outbox.claim(conn, now, batch=10, lease=30)
    assert [(c.subject, c.payload["n"]) for c in first] == [("a", 0), ("a", 1), ("a", 2), ("b", 9)]
    with db.connection(write=True) as conn:
        assert outbox.claim(conn, now, batch=10, lease=30) == []  # all held
    with db.connection(write=True) as conn:  # the lease ran out: claimable again, old claim is void
        again = outbox.claim(conn, now + timedelta(seconds=31), batch=10, lease=30)
        assert len(again) == 4
        assert not outbox.finish(conn, first[0], "delivered")
        assert outbox.finish(conn, again[0], "delivered")
    db.dispose()


def test_rri_answers_the_v2_referral_it_belongs_to(gw: TestClient) -> None:
    """The RRI^I12 for a referral that came in over v2 goes back to its sender and names its
    message: MSH-5/6 = the referral's MSH-3/4, MSA-2 = its MSH-10. The worker read the journal
    row's primary key instead of the row, so both were empty and the HIS could not match it."""
    from tests.wor import ROOT

    listener = MllpReceiver("AA").start()
    try:
        authorize(gw, "gateway-admin")
        endpoint = gw.get("/fhir/Endpoint/praktijk-batau-mllp").json()
        endpoint["address"] = f"mllp://127.0.0.1:{listener.port}"
        assert gw.put(f"/fhir/Endpoint/{endpoint['id']}", json=endpoint, headers=FHIR_JSON).status_code == 200
        message = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes().replace(b"\n", b"\r")
        authorize(gw, "praktijk-batau-his")
        ack = gw.post("/v2", content=message, headers={"content-type": "x-application/hl7-v2+er7"}).text
        assert "MSA|AA|BATAU-000123" in ack, ack
        authorize(gw, "welzijn-de-brug-cms")
        [entry] = gw.get("/fhir/Task", params={"status": "requested"}).json()["entry"]
        assert put_task(gw, entry["resource"], status="accepted").status_code == 200
        drain(worker(gw))
        [rri] = listener.messages
        segments = {s.split("|", 1)[0]: s.split("|") for s in rri.replace("\n", "\r").split("\r") if s}
        assert segments["MSH"][4:6] == ["HIS-BATAU", "01053417"], segments["MSH"]
        assert segments["MSA"][1:3] == ["AA", "BATAU-000123"], segments["MSA"]
    finally:
        listener.stop()
