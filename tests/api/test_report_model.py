"""The report's read model (store/report_rows.py) stays equal to what the documents say.

Varied loops are played through the gateway — accepted, rejected, intake, completed with Positive
Health questionnaires (some amended or deleted afterwards), cancelled, failed with a drop-out
milestone, on hold, feedback pushed to a practice and delivered by the worker or still queued —
and then the rows kept up to date write by write must equal the rows rebuilt from scratch from
the documents (`read_model.rebuild`, which the migration's backfill runs), and so must the
report. The backfill is also run for real: migration 0011 downgraded and upgraded again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from fhir_gateway.reports import data, read_model
from fhir_gateway.reports.municipality import parse_period
from fhir_gateway.rest.operations.wor_report import wor_report
from fhir_gateway.store import report_rows
from tests.api.test_reports import _qr, _refer, _step
from tests.delivery.conftest import drain, gateway, worker
from tests.delivery.receivers import Receiver
from tests.wor import FHIR_JSON, completion_output, load_directory, milestone, reason

PRACTICE_ENDPOINT = "praktijk-de-geinoord-fhir"


def _snapshot(client: TestClient) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the four tables, in a stable order (JSON columns as sorted text)."""
    db = client.app.state.ctx.database  # type: ignore[attr-defined]
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.connection(write=False) as conn:
        for table in report_rows.TABLES:
            rows = conn.execute(sa.select(table)).all()
            out[table.name] = sorted(
                (tuple(sorted(v.items()) if isinstance(v, dict) else v for v in r) for r in rows), key=repr
            )
    return out


def _rebuild(client: TestClient) -> None:
    with client.app.state.ctx.database.connection(write=True) as conn:  # type: ignore[attr-defined]
        read_model.rebuild(conn)


def _report(client: TestClient, period: str) -> list[dict[str, Any]]:
    resp = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": period})
    assert resp.status_code == 200, resp.text
    return resp.json()["group"]  # id and date differ per run; the figures are the groups


def _loop(client: TestClient, rng: random.Random, now: datetime) -> None:
    """One referral down a random path of the workflow."""
    task = _refer(client, now - timedelta(days=rng.randint(1, 40)), code=rng.choice(["Z12", "P03", "Z05"]))
    path = rng.choice(
        ["open", "accept", "reject", "intake", "complete", "complete", "cancel", "fail", "hold"]
    )
    if path == "open":
        return
    if path == "reject":
        _step(client, task, status="rejected", statusReason=reason("Geen capaciteit"))
        return
    task = _step(client, task, status="accepted")
    if path == "cancel":
        _step(client, task, status="cancelled", statusReason=reason("Verhuisd"))
        return
    if path == "accept":
        return
    task = _step(client, task, status="in-progress", businessStatus=milestone("intake-held"))
    if path == "hold":
        task = _step(client, task, status="on-hold", businessStatus=milestone("waitlisted"))
        task = _step(client, task, status="in-progress", businessStatus=milestone("activity-found"))
        _step(client, task, businessStatus=milestone("intake-held"))  # again: the first one counts
    elif path == "fail":
        drop = rng.choice(["no-show", "client-declined"])
        _step(client, task, status="failed", statusReason=reason("Uitval"), businessStatus=milestone(drop))
    elif path == "complete":
        _complete_with_scores(client, task, rng)


def _complete_with_scores(client: TestClient, task: dict[str, Any], rng: random.Random) -> None:
    patient = task["for"]["reference"]
    intake, closure = _qr(client, patient, rng.randint(0, 10)), _qr(client, patient, rng.randint(0, 10))
    output = completion_output(intake, closure)
    _step(client, task, status="completed", businessStatus=milestone("closed-goal-reached"), output=output)
    change = rng.random()
    if change < 0.25:  # the closure questionnaire amended afterwards
        qr = client.get(f"/fhir/QuestionnaireResponse/{closure}").json()
        qr["item"][0]["answer"] = [{"valueInteger": rng.randint(0, 10)}]
        assert (
            client.put(f"/fhir/QuestionnaireResponse/{closure}", json=qr, headers=FHIR_JSON).status_code
            == 200
        )
    elif change < 0.35:  # or deleted
        assert client.delete(f"/fhir/QuestionnaireResponse/{intake}").status_code in (200, 204)


@pytest.fixture
def gw(database_url: str, receiver: Receiver) -> Iterator[TestClient]:
    """A gateway whose feedback to the referring practice is pushed to `receiver`."""
    with gateway(database_url) as client:
        client.app.state.router.operations[(None, "$wor-report")] = wor_report  # type: ignore[attr-defined]
        load_directory(client)
        endpoint = client.get(f"/fhir/Endpoint/{PRACTICE_ENDPOINT}").json()
        endpoint["address"] = receiver.url
        assert (
            client.put(f"/fhir/Endpoint/{PRACTICE_ENDPOINT}", json=endpoint, headers=FHIR_JSON).status_code
            == 200
        )
        yield client


def _delete_some_feedback(client: TestClient, rng: random.Random) -> None:
    found = client.get("/fhir/Communication", params={"_count": "50"}).json().get("entry", [])
    for entry in rng.sample(found, k=min(2, len(found))):
        assert client.delete(f"/fhir/Communication/{entry['resource']['id']}").status_code in (200, 204)


@pytest.mark.parametrize("seed", [7, 2026])
def test_rows_kept_write_by_write_equal_rows_rebuilt_from_the_documents(gw: TestClient, seed: int) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    period = f"{(now - timedelta(days=60)).date()}/{now.date()}"
    for i in range(14):
        _loop(gw, rng, now)
        if i % 5 == 2:  # some feedback delivered, the later ones still queued
            drain(worker(gw))
    _delete_some_feedback(gw, rng)
    kept, report = _snapshot(gw), _report(gw, period)
    assert len(kept["report_referrals"]) == 14
    assert any(r for r in kept["report_feedback"] if r[-1]), "no feedback was delivered"
    assert any(r for r in kept["report_feedback"] if not r[-1]), "all feedback was delivered"
    assert any(r for r in kept["report_scores"])
    _rebuild(gw)
    assert _snapshot(gw) == kept
    assert _report(gw, period) == report


def test_the_migration_backfills_the_same_rows(gw: TestClient) -> None:
    """Rows emptied and the schema taken back to 0010: upgrading again fills them as they were."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    period = f"{(now - timedelta(days=60)).date()}/{now.date()}"
    for _ in range(6):
        _loop(gw, rng, now)
    drain(worker(gw))
    kept, report = _snapshot(gw), _report(gw, period)
    db = gw.app.state.ctx.database  # type: ignore[attr-defined]
    with db.connection(write=True) as conn:
        report_rows.clear(conn)
    assert _report(gw, period) != report  # the report reads the rows, nothing else
    cfg = db._alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    db.upgrade()
    assert _snapshot(gw) == kept
    assert _report(gw, period) == report


def test_feedback_counts_from_either_side(gw: TestClient) -> None:
    """The feedback of the kept referrals is the cohort's sum minus the left-out Tasks', or the
    kept Tasks' own sum when those are fewer: both equal counting the rows one by one."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    for _ in range(6):
        _loop(gw, rng, now)
    drain(worker(gw))
    start, end = parse_period(f"{(now - timedelta(days=60)).date()}/{now.date()}").bounds()
    with gw.app.state.ctx.database.connection(write=False) as conn:  # type: ignore[attr-defined]
        owners = [o for (o,) in conn.execute(sa.select(report_rows.RR.c.owner).distinct())]
        found, task_ids = data.cohort(conn, start, end, owners)
        rows = conn.execute(
            sa.select(
                report_rows.FB.c.task_id,
                report_rows.FB.c.kind,
                report_rows.FB.c.pushed,
                report_rows.FB.c.delivered,
            )
        ).all()
        referrals = sorted(found.values(), key=lambda r: r.task_id)
        assert len(referrals) == 6 and rows
        for kept in (referrals, referrals[:1], referrals[:4], []):
            wanted = {r.task_id for r in kept}
            expected: dict[str, list[int]] = {}
            for task_id, kind, pushed, delivered in rows:
                if task_id in wanted:
                    c = expected.setdefault(kind, [0, 0, 0])
                    c[0], c[1], c[2] = c[0] + 1, c[1] + pushed, c[2] + (pushed and delivered)
            assert data.feedback_counts(conn, task_ids, kept, start, end, owners) == expected
