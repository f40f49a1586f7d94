"""Workflow timers: reminders and auto-close fire once, with the clock moved, per region rules."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from fhir_gateway.store.delivery_tables import TimerRow
from fhir_gateway.workflow import timers
from tests.delivery.conftest import worker
from tests.wor import milestone, put_task, send_referral, task_for

FEEDBACK = "https://wor.example.nl/fhir/CodeSystem/wor-feedback-kinds"


def communications(client: TestClient, task_id: str) -> list[tuple[str, str]]:
    found = client.get("/fhir/Communication", params={"about": f"Task/{task_id}", "_count": "100"}).json()
    return [
        (c["category"][0]["coding"][0]["system"].rsplit("/", 1)[1], c["category"][0]["coding"][0]["code"])
        for c in (e["resource"] for e in found.get("entry", []))
    ]


def timer_rows(client: TestClient) -> list[Any]:
    with client.app.state.ctx.database.connection(write=False) as conn:  # type: ignore[attr-defined]
        return list(conn.execute(sa.select(TimerRow.__table__).order_by(TimerRow.__table__.c.pk)).all())


def test_intake_overdue_fires_exactly_once_with_two_workers(any_gw: TestClient) -> None:
    ctx = any_gw.app.state.ctx  # type: ignore[attr-defined]
    task = task_for(any_gw, send_referral(any_gw)["id"])
    assert timers.run_due(ctx) == 0  # not due yet
    ctx.clock.move(days=30)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(timers.run_due(ctx))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1 and timers.run_due(ctx) == 0
    assert sorted(communications(any_gw, task["id"])) == [
        ("wor-feedback-kinds", "no-intake-yet"),
        ("wor-reminder-kinds", "intake-overdue"),
    ]
    [row] = timer_rows(any_gw)
    assert (row.kind, row.status) == ("intake-overdue", "fired")


def test_accepted_in_time_no_reminder(gw: TestClient) -> None:
    ctx = gw.app.state.ctx  # type: ignore[attr-defined]
    task = task_for(gw, send_referral(gw)["id"])
    assert put_task(gw, task, status="accepted").status_code == 200
    ctx.clock.move(days=30)
    assert timers.run_due(ctx) == 0
    assert timer_rows(gw)[0].status == "obsolete"
    assert communications(gw, task["id"]) == [("wor-feedback-kinds", "accepted")]


def _start_trajectory(client: TestClient, **referral: Any) -> dict[str, Any]:
    sr = send_referral(client, **referral)
    task = task_for(client, sr["id"])
    assert put_task(client, task, status="accepted").status_code == 200
    task = task_for(client, sr["id"])
    resp = put_task(client, task, status="in-progress", businessStatus=milestone("intake-held"))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_trajectory_past_its_end_is_flagged_then_auto_closed(gw: TestClient) -> None:
    ctx = gw.app.state.ctx  # type: ignore[attr-defined]
    task = _start_trajectory(gw)  # De Brug, Nieuwegein: 6 months, 30 days grace
    ctx.clock.move(days=6 * 31 + 1)
    w = worker(gw)
    w.run_once()
    assert ("wor-reminder-kinds", "trajectory-overdue") in communications(gw, task["id"])
    assert gw.get(f"/fhir/Task/{task['id']}").json()["status"] == "in-progress"
    ctx.clock.move(days=31)
    w.run_once()
    w.run_once()
    closed = gw.get(f"/fhir/Task/{task['id']}").json()
    assert closed["status"] == "completed"
    assert closed["businessStatus"]["coding"][0]["code"] == "closed-other"
    kinds = communications(gw, task["id"])
    assert kinds.count(("wor-feedback-kinds", "completed")) == 1  # the closing feedback, once
    plan = gw.get("/fhir/CarePlan", params={"supporting-info": task["focus"]["reference"]}).json()
    assert plan["entry"][0]["resource"]["status"] == "completed"  # normal workflow follow-up
    assert [r.status for r in timer_rows(gw)] == ["obsolete", "fired", "fired"]


def test_no_auto_close_where_the_region_disables_it(gw: TestClient) -> None:
    ctx = gw.app.state.ctx  # type: ignore[attr-defined]
    task = _start_trajectory(gw, postcode="3404 AA", number="3")  # IJsselstein
    assert task["owner"]["reference"] == "Organization/welzijn-ijsselstein-samen"
    ctx.clock.move(days=400)
    for _ in range(3):
        timers.run_due(ctx)
    assert gw.get(f"/fhir/Task/{task['id']}").json()["status"] == "in-progress"
    assert [r.kind for r in timer_rows(gw)] == ["intake-overdue", "trajectory-end"]  # no auto-close
    assert ("wor-reminder-kinds", "trajectory-overdue") in communications(gw, task["id"])
