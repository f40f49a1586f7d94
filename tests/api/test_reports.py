"""The municipality report ($wor-report and `fhir-gateway report`) over loops played through the API.

Dates are made known without touching the clock: the GP system writes ServiceRequest.authoredOn,
so each referral is authored a known number of days before the test runs, and the intake
(the Task version with businessStatus intake-held) is written by the test a moment later.
Days referral → intake are therefore the chosen numbers plus a few seconds."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from fhir.resources.R4B.measurereport import MeasureReport

from fhir_gateway.commands.report import report as report_command
from fhir_gateway.delivery import events
from fhir_gateway.rest.operations.wor_report import wor_report
from fhir_gateway.settings import Settings
from fhir_gateway.vocabulary import DATA_ABSENT_REASON as DATA_ABSENT
from tests.conftest import authorize, make_client
from tests.wor import (
    FHIR_JSON,
    completion_output,
    load_directory,
    milestone,
    put_task,
    reason,
    referral_bundle,
    task_for,
)

INTAKE_DAYS = [2, 4, 6, 8, 10, 20]  # median 7, p90 (nearest rank: 6th of 6) 20
DIMENSIONS = (
    "lichaamsfuncties",
    "mentaalWelbevinden",
    "zingeving",
    "kwaliteitVanLeven",
    "meedoen",
    "dagelijksFunctioneren",
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _refer(
    client: TestClient,
    authored: datetime,
    *,
    code: str = "Z12",
    postcode: str = "3431 AB",
    bsn: str = "999911120",
) -> dict[str, Any]:
    bundle = referral_bundle(postcode=postcode, bsn=bsn)
    bundle["entry"][2]["resource"]["authoredOn"] = _iso(authored)
    bundle["entry"][2]["resource"]["reasonCode"][0]["coding"][0]["code"] = code
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]
    return task_for(client, sr["id"])


def _step(client: TestClient, task: dict[str, Any], **changes: Any) -> dict[str, Any]:
    resp = put_task(client, task, **changes)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _qr(client: TestClient, patient_ref: str, score: int) -> str:
    body = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": patient_ref},
        "authored": "2026-11-10T10:00:00+01:00",
        "item": [{"linkId": d, "answer": [{"valueInteger": score}]} for d in DIMENSIONS],
    }
    resp = client.post("/fhir/QuestionnaireResponse", json=body, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _complete(client: TestClient, task: dict[str, Any], intake: int, closure: int) -> None:
    patient = task["for"]["reference"]
    output = completion_output(_qr(client, patient, intake), _qr(client, patient, closure))
    _step(client, task, status="completed", businessStatus=milestone("closed-goal-reached"), output=output)


def _play(url: str) -> Iterator[tuple[TestClient, str]]:
    """Eight Nieuwegein referrals (six with intake, five completed, two rejected P-codes), one for
    IJsselstein and one authored before the period."""
    with make_client(url) as client:
        client.app.state.router.operations[(None, "$wor-report")] = wor_report  # type: ignore[attr-defined]
        events.install(client.app.state.ctx)  # type: ignore[attr-defined]  # feedback pushes → outbox
        load_directory(client)
        now = datetime.now(UTC)
        for i, days in enumerate(INTAKE_DAYS):
            task = _refer(client, now - timedelta(days=days))
            task = _step(client, task, status="accepted")
            task = _step(client, task, status="in-progress", businessStatus=milestone("intake-held"))
            if i < 5:
                _complete(client, task, intake=4, closure=4 + i)  # changes 0..4: mean 2.0
        for _ in range(2):
            task = _refer(client, now - timedelta(days=3), code="P03")
            _step(client, task, status="rejected", statusReason=reason("Geen capaciteit"))
        _refer(client, now - timedelta(days=3), postcode="3404 AA", bsn="999999151")  # IJsselstein
        _refer(client, now - timedelta(days=400))  # before the period
        period = f"{(now - timedelta(days=60)).date()}/{now.date()}"
        yield client, period


@pytest.fixture
def played_any(database_url: str) -> Iterator[tuple[TestClient, str]]:
    """The played loops on SQLite and on PostgreSQL (the queries differ per dialect)."""
    yield from _play(database_url)


@pytest.fixture
def played(sqlite_url: str) -> Iterator[tuple[TestClient, str]]:
    yield from _play(sqlite_url)


def _group(report: dict[str, Any], code: str) -> dict[str, Any]:
    return next(g for g in report["group"] if g["code"]["coding"][0]["code"] == code)


def _pop(part: dict[str, Any], code: str = "initial-population") -> int | None:
    pop = next(p for p in part["population"] if p["code"]["coding"][0]["code"] == code)
    if "count" in pop:
        return int(pop["count"])
    assert pop["_count"]["extension"][0] == {"url": DATA_ABSENT, "valueCode": "masked"}
    return None


def _strata(group: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    strat = next(s for s in group["stratifier"] if s["code"][0]["text"] == name)
    return {s["value"]["coding"][0]["code"]: s for s in strat["stratum"]}


def _masked(score: dict[str, Any]) -> bool:
    return "value" not in score and score["extension"][0]["valueCode"] == "masked"


def test_municipality_report_figures_and_suppression(played_any: tuple[TestClient, str]) -> None:
    client, period = played_any
    resp = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": period})
    assert resp.status_code == 200, resp.text
    report = resp.json()
    MeasureReport.model_validate(report)  # a valid FHIR R4 MeasureReport
    assert report["status"] == "complete" and report["type"] == "summary"
    assert report["measure"] == "https://wor.example.nl/fhir/Measure/wor-municipality-report"
    assert "geen gevalideerde meting" in report["text"]["div"]

    referrals = _group(report, "referrals")
    assert _pop(referrals) == 8  # IJsselstein and the old referral are not counted
    assert _pop(_strata(referrals, "practice")["Organization/praktijk-de-geinoord"]) == 8
    assert _pop(_strata(referrals, "welfare-organization")["Organization/welzijn-de-brug"]) == 8
    icpc = _strata(referrals, "icpc-group")
    assert _pop(icpc["P"]) is None  # 2: small
    assert _pop(icpc["Z"]) is None  # 6, but would reveal P as 8 - 6: complementary suppression
    assert '"count":2' not in resp.text.replace(" ", "")

    accepted = _group(report, "accepted")
    assert _pop(accepted, "numerator") == 6 and _pop(accepted, "denominator") == 8
    assert _masked(accepted["measureScore"])  # 2 not accepted would be recoverable

    median, p90 = _group(report, "days-to-intake-median"), _group(report, "days-to-intake-p90")
    assert _pop(median, "measure-population") == 6
    assert median["measureScore"]["value"] == 7.0 and median["measureScore"]["code"] == "d"
    assert p90["measureScore"]["value"] == 20.0

    completion = _group(report, "completion")
    assert _pop(completion, "numerator") == 5 and _pop(completion, "denominator") == 7
    assert _masked(completion["measureScore"])
    drop_out = _group(report, "drop-out")
    assert _pop(drop_out, "numerator") is None  # 2 rejected
    assert _pop(_strata(drop_out, "reason")["rejected"], "numerator") is None

    activities = _group(report, "activity-categories")
    assert _pop(_strata(activities, "activity-category")["volunteering"]) == 5
    ph = _strata(_group(report, "positive-health-change"), "dimension")
    assert set(ph) == set(DIMENSIONS)
    assert _pop(ph["zingeving"], "measure-population") == 5
    assert ph["zingeving"]["measureScore"]["value"] == 2.0

    feedback = _strata(_group(report, "feedback-delivery"), "feedback-kind")
    assert _pop(feedback["accepted"]) == 6 and _pop(feedback["intake-held"]) == 6
    assert _pop(feedback["rejected"]) is None  # 2
    assert _pop(feedback["completed"]) is None  # 5, the smallest other: complementary suppression
    assert _pop(feedback["accepted"], "denominator") == 6  # De Geinoord gets feedback pushed
    assert _pop(feedback["accepted"], "numerator") is None  # none delivered yet (no worker ran)


def test_other_municipality_and_bad_parameters(played: tuple[TestClient, str]) -> None:
    client, period = played
    other = client.get("/fhir/$wor-report", params={"municipality": "IJsselstein", "period": period}).json()
    assert _pop(_group(other, "referrals")) is None  # one referral: suppressed
    quarter = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": "1999-Q4"})
    assert quarter.status_code == 200 and _pop(_group(quarter.json(), "referrals")) is None
    bad = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": "last year"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["period"]
    assert client.get("/fhir/$wor-report", params={"period": "2026"}).status_code == 400


def test_only_admins_may_run_the_report(played: tuple[TestClient, str]) -> None:
    client, period = played
    for client_id in ("praktijk-de-geinoord-his", "welzijn-de-brug-cms"):
        authorize(client, client_id)
        resp = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": period})
        assert resp.status_code == 403 and resp.json()["issue"][0]["code"] == "forbidden"
    del client.headers["Authorization"]
    assert (
        client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": period}).status_code
        == 401
    )


def test_cli_prints_csv_and_json(played: tuple[TestClient, str]) -> None:
    client, period = played
    settings: Settings = client.app.state.ctx.settings  # type: ignore[attr-defined]
    runner = CliRunner()
    args = ["--municipality", "Nieuwegein", "--period", period]
    result = runner.invoke(report_command, [*args, "--csv"], obj={"settings": settings})
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    total = next(r for r in rows if r["measure"] == "referrals" and not r["stratifier"])
    assert total["initial_population"] == "8"
    p_codes = next(r for r in rows if r["stratifier"] == "icpc-group" and r["stratum"] == "P")
    assert p_codes["initial_population"] == "suppressed"
    median = next(r for r in rows if r["measure"] == "days-to-intake-median")
    assert median["score"] == "7.0" and median["unit"] == "d"
    assert all(not v.isdigit() or int(v) >= 5 for r in rows for k, v in r.items() if k != "score")
    as_json = runner.invoke(report_command, args, obj={"settings": settings})
    assert as_json.exit_code == 0 and '"resourceType": "MeasureReport"' in as_json.output
    bad = runner.invoke(
        report_command, ["--municipality", "X", "--period", "soon"], obj={"settings": settings}
    )
    assert bad.exit_code != 0 and "period" in bad.output
