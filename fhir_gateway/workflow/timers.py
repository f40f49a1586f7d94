"""Workflow deadlines as database rows, fired by the worker loop (never by sleeping).

Kinds (one row per kind and Task, unique `key`, so scheduling is idempotent):
  intake-overdue   Task.restriction.period.end passed while the Task is still requested/received:
                   a reminder Communication to the owner + `no-intake-yet` feedback to the practice.
  trajectory-end   CarePlan.period.end passed while the Task is in progress: a reminder to the
                   owner (the flag) and, when the region allows, an auto-close timer.
  auto-close       `auto_close.grace_days` later and still in progress: the Task is completed with
                   milestone `auto_close.milestone` through the normal workflow (If-Match, state
                   machine, CarePlan/ServiceRequest follow-up, closing feedback).

Exactly once: a timer is locked (FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE), re-checked and
marked fired in the same transaction as its effects, so a second worker skips it or sees it done,
and a failure rolls the effects back with the mark. Time comes from `ctx.clock`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from fhir_gateway.fhir.searchparams import format_instant, normalise_reference
from fhir_gateway.mapping import feedback_for
from fhir_gateway.mapping.dates import dutch_naive_utc
from fhir_gateway.store import timers as timer_rows
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import (
    AMSTERDAM,
    MILESTONES,
    REMINDER_KINDS,
    FeedbackKind,
    Milestone,
    ReminderKind,
)
from fhir_gateway.workflow.context import GatewayContext

log = logging.getLogger(__name__)

WAITING = frozenset({"requested", "received"})
RUNNING = frozenset({"in-progress", "on-hold"})
MAX_ATTEMPTS = 10
REMINDER_TEXT = {
    ReminderKind.INTAKE_OVERDUE: "De intaketermijn van deze Welzijn op Recept-verwijzing is verstreken zonder intake.",
    ReminderKind.TRAJECTORY_OVERDUE: "Het traject Welzijn op Recept is over de geplande einddatum heen en nog niet afgesloten.",
}


def _now(ctx: GatewayContext) -> datetime:
    moment = ctx.clock()
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def end_of(value: str | None) -> datetime | None:
    """A FHIR date (the whole day counts, Dutch time) or dateTime → naive UTC moment it ends."""
    if not value:
        return None
    try:
        if len(value) <= 10:
            day = date.fromisoformat(value) + timedelta(days=1)
            local = datetime.combine(day, time.min, tzinfo=AMSTERDAM)
        else:
            local = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dutch_naive_utc(local)


# -- scheduling (write listener, inside the writer's transaction) -------------------------------


def schedule(ctx: GatewayContext, repo: Repository, task: Stored) -> None:
    """Called for every Task write; adds the timer the Task's new state needs (if none yet)."""
    content = task.content
    status = content.get("status")
    if status in WAITING:
        due = end_of(((content.get("restriction") or {}).get("period") or {}).get("end"))
        if due is not None:
            add(repo.session, "intake-overdue", task.reference, due, _now(ctx))
    elif status == "in-progress":
        due = end_of(_planned_end(repo, ctx, content))
        if due is not None:
            add(repo.session, "trajectory-end", task.reference, due, _now(ctx))


def add(connection: sa.Connection, kind: str, target: str, due: datetime, now: datetime) -> None:
    """Insert-or-ignore on the unique key (kind + target): runs for every Task write."""
    timer_rows.add(connection, kind, target, due, now)


def _planned_end(repo: Repository, ctx: GatewayContext, task: dict[str, Any]) -> str | None:
    """CarePlan.period.end of the referral; else the region's trajectory length from now."""
    from fhir_gateway.mapping.dates import add_months
    from fhir_gateway.workflow.feedback import region_of_task
    from fhir_gateway.workflow.tasks import care_plans_for

    focus = normalise_reference((task.get("focus") or {}).get("reference", ""), repo.base_url) or ""
    sr = repo.find("ServiceRequest", focus.partition("/")[2]) if focus.startswith("ServiceRequest/") else None
    if sr is not None:
        for plan in care_plans_for(repo, sr):
            end = ((plan.content.get("period") or {}).get("end")) or None
            if end:
                return str(end)
    settings = ctx.mappings.region_settings(region_of_task(task, ctx.directory(repo)))
    months = int(((settings.get("trajectory") or {}).get("months")) or 4)
    return add_months(ctx.clock().astimezone(AMSTERDAM).date(), months).isoformat()


# -- firing (worker loop) -----------------------------------------------------------------------


def run_due(ctx: GatewayContext, *, limit: int = 100) -> int:
    """Fire every timer that is due; returns how many fired (obsolete ones are closed silently)."""
    now = _now(ctx)
    with ctx.database.connection(write=False) as conn:
        pks = timer_rows.due_pks(conn, now, limit)
    fired = 0
    for pk in pks:
        try:
            fired += _fire_one(ctx, pk, now)
        except Exception as exc:  # effects rolled back; count the attempt, try again later
            log.warning("timer %s failed: %s", pk, type(exc).__name__)
            _failed(ctx, pk, now, f"{type(exc).__name__}: {exc}")
    return fired


def _fire_one(ctx: GatewayContext, pk: int, now: datetime) -> int:
    with ctx.database.connection(write=True) as conn:
        row = timer_rows.lock_due(conn, pk, now)
        if row is None:
            return 0  # another worker has it or did it
        repo = ctx.repository(conn, ctx.settings.base_url.rstrip("/"))
        outcome, due = FIRE[row.kind](ctx, repo, row, now)
        if outcome == "pending" and due is not None:
            timer_rows.record_outcome(conn, pk, outcome, due_at=due)
        else:
            timer_rows.record_outcome(conn, pk, outcome, fired_at=now)
        return int(outcome == "fired")


def _failed(ctx: GatewayContext, pk: int, now: datetime, error: str) -> None:
    with ctx.database.connection(write=True) as conn:
        attempts = timer_rows.attempts(conn, pk)
        timer_rows.record_failure(
            conn,
            pk,
            attempts=attempts + 1,
            error=error[:2000],
            due_at=now + timedelta(minutes=min(2**attempts, 60)),
            status="failed" if attempts + 1 >= MAX_ATTEMPTS else "pending",
        )


def _task(repo: Repository, target: str) -> Stored | None:
    rtype, _, rid = target.partition("/")
    return repo.find(rtype, rid) if rtype == "Task" else None


def _settings(ctx: GatewayContext, repo: Repository, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from fhir_gateway.workflow.feedback import region_of_task

    region = region_of_task(task, ctx.directory(repo))
    return region, ctx.mappings.region_settings(region)


def _intake_overdue(ctx: GatewayContext, repo: Repository, row: Any, now: datetime) -> tuple[str, None]:
    task = _task(repo, row.target)
    if task is None or task.content.get("status") not in WAITING:
        return "obsolete", None
    region, settings = _settings(ctx, repo, task.content)
    if not (settings.get("reminders") or {}).get("intake_overdue", True):
        return "skipped", None
    _reminder(repo, task, ReminderKind.INTAKE_OVERDUE, now)
    _feedback(ctx, repo, task, region, settings, FeedbackKind.NO_INTAKE_YET)
    return "fired", None


def _trajectory_end(ctx: GatewayContext, repo: Repository, row: Any, now: datetime) -> tuple[str, None]:
    task = _task(repo, row.target)
    if task is None or task.content.get("status") not in RUNNING:
        return "obsolete", None
    _, settings = _settings(ctx, repo, task.content)
    _reminder(repo, task, ReminderKind.TRAJECTORY_OVERDUE, now)
    auto = settings.get("auto_close") or {}
    if auto.get("enabled"):
        add(
            repo.session,
            "auto-close",
            row.target,
            row.due_at + timedelta(days=int(auto.get("grace_days", 14))),
            now,
        )
    return "fired", None


def _auto_close(
    ctx: GatewayContext, repo: Repository, row: Any, now: datetime
) -> tuple[str, datetime | None]:
    from fhir_gateway.security.principal import Principal
    from fhir_gateway.workflow.resources import ResourceService

    task = _task(repo, row.target)
    if task is None or task.content.get("status") not in RUNNING:
        return "obsolete", None
    _, settings = _settings(ctx, repo, task.content)
    auto = settings.get("auto_close") or {}
    if not auto.get("enabled"):
        return "skipped", None
    if task.content.get("status") == "on-hold":  # the state machine closes from in-progress only
        return "pending", now + timedelta(days=1)
    code = str(auto.get("milestone") or Milestone.CLOSED_OTHER)
    display = ((settings.get("feedback") or {}).get("on_milestone") or {}).get(code) or {}
    coding = {"system": MILESTONES, "code": code}
    if isinstance(display, dict) and display.get("display"):
        coding["display"] = display["display"]
    closed = {
        **task.content,
        "status": "completed",
        "businessStatus": {"coding": [coding]},
        "note": [
            *task.content.get("note", []),
            {
                "time": format_instant(now),
                "text": f"Automatisch afgesloten: {int(auto.get('grace_days', 14))} dagen na de geplande einddatum.",
            },
        ],
    }
    service = ResourceService(repo, ctx, Principal.system("timers"))
    service.update("Task", task.id, closed, if_match=task.version_id)
    return "fired", None


def _reminder(repo: Repository, task: Stored, code: str, now: datetime) -> Stored:
    """A Communication to the owner (the welfare organisation's worklist / push endpoint)."""
    content = task.content
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": REMINDER_KINDS, "code": code}]}],
        "about": [{"reference": task.reference}],
        "partOf": [{"reference": task.reference}],
        "sent": format_instant(now),
        "recipient": [content["owner"]] if content.get("owner") else [],
        "payload": [{"contentString": REMINDER_TEXT[code]}],
    }
    if content.get("for"):
        comm["subject"] = content["for"]
    if content.get("focus"):
        comm["basedOn"] = [content["focus"]]
    return repo.create(comm)


def _feedback(
    ctx: GatewayContext, repo: Repository, task: Stored, region: str, settings: dict[str, Any], kind: str
) -> Stored:
    """Feedback to the practice through `milestone-to-communication`, like a Task change."""
    from fhir_gateway.workflow import feedback

    chosen = feedback_for(settings, kind=kind)
    assert chosen is not None
    return feedback.send(repo, ctx, task, region, settings, chosen)


FIRE = {"intake-overdue": _intake_overdue, "trajectory-end": _trajectory_end, "auto-close": _auto_close}
