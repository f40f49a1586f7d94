"""What each document contributes to the municipality report's read model (`store/report_rows.py`).

The rules live here once, as pure functions from a document to row values; the writer (`keep`,
an `on_write` listener registered by `workflow/context.py`, so every write of every process
runs it inside its transaction) and the backfill (`rebuild`, run by migration 0011 and by the
benchmark) both call them, so rows kept up to date and rows rebuilt from scratch are the same.
The writer reads nothing: every row belongs to the one document that was written.

  * a Task version → its `report_referrals` row: the values the report reads, plus `intake_at`
    (this version's time if its businessStatus carries the WoR milestone intake-held) and
    `ever_accepted` (its status is one of ACCEPTED_STATES); `merge` folds versions: the earliest
    intake and the or of accepted (the upsert in SQL applies the same fold);
  * a ServiceRequest → its indexed `authored` low, authoredOn as an instant, its ICPC group;
  * a QuestionnaireResponse → its Positive Health scores (a list in PH_DIMENSIONS order);
  * a feedback Communication → one row per (Task it is part of, feedback kind), pushed when the
    delivery queued a push for it (`feedback_pushed`), delivered when one push was delivered
    (`feedback_delivered`) — sticky, so purging delivered outbox rows changes no figure (the old
    report, reading the outbox, lost them; a rebuild after a purge would too: the backfill is
    meant to run once, at migration 0011).

The cohort is selected on the same values the search index holds (`store.index.param_entries`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.mapping.dates import dutch_naive_utc
from fhir_gateway.store import report_rows
from fhir_gateway.store.database import before_commit, scratch
from fhir_gateway.store.index import param_entries
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import (
    ACTIVITY_CATEGORIES,
    FEEDBACK_KINDS,
    ICPC,
    MILESTONES,
    PH_DIMENSIONS,
    PH_OUTPUT_CODES,
    Milestone,
)

# A Task that reached one of these was accepted by the welfare organisation at some point.
ACCEPTED_STATES = ("accepted", "in-progress", "on-hold", "completed", "failed")
FINISHED = ("completed", "cancelled", "failed", "rejected")
DROP_OUT_MILESTONES = (Milestone.CLIENT_DECLINED, Milestone.NO_SHOW)
PUSH_KINDS = ("fhir-push", "mllp")
_DESCRIPTION_PLACE = re.compile(r"\bin\s+(?P<place>[^,.;:]+?)\s*$")
_BATCH = 1000


def _fit(value: str | None, width: int = 255) -> str | None:
    """None for a value longer than its column: such an id or name matches nothing real."""
    return value if value is not None and len(value) <= width else None


def _first_code(concept: dict[str, Any] | None, system: str) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def _has_code(concept: dict[str, Any] | None, system: str, code: str) -> bool:
    return any(
        c.get("system") == system and c.get("code") == code
        for c in (concept or {}).get("coding", [])
        if isinstance(c, dict)
    )


def _reference(element: dict[str, Any] | None) -> str:
    return normalise_reference((element or {}).get("reference", "")) or ""


def services(task: dict[str, Any]) -> list[str]:
    """The HealthcareService ids in Task.input (where the router sent the referral)."""
    out = []
    for item in task.get("input", []):
        ref = _reference(item.get("valueReference"))
        if ref.startswith("HealthcareService/"):
            out.append(ref.partition("/")[2])
    return out


def _place(task: dict[str, Any]) -> str | None:
    """The municipality the router wrote at the end of Task.description ("… in <place>")."""
    m = _DESCRIPTION_PLACE.search(task.get("description") or "")
    return _fit(m["place"]) if m else None


def outcome(task: dict[str, Any]) -> str | None:
    """completed | rejected | cancelled | failed | client-declined | no-show, or None while open."""
    status = task.get("status")
    if status not in FINISHED:
        return None
    milestone = _first_code(task.get("businessStatus"), MILESTONES)
    if milestone in DROP_OUT_MILESTONES:
        return milestone
    return str(status)


def _ph_refs(task: dict[str, Any]) -> dict[str, str]:
    """{'intake'|'closure': QuestionnaireResponse id} from Task.output."""
    found: dict[str, str] = {}
    for out in task.get("output", []):
        codes = [c.get("code") for c in (out.get("type") or {}).get("coding", [])]
        moment = next((PH_OUTPUT_CODES[c] for c in codes if c in PH_OUTPUT_CODES), None)
        ref = _reference(out.get("valueReference"))
        if moment and ref.startswith("QuestionnaireResponse/"):
            found[moment] = ref.partition("/")[2]
    return found


def _activities(task: dict[str, Any]) -> list[str]:
    return sorted(
        {
            code
            for out in task.get("output", [])
            if (code := _first_code(out.get("type"), ACTIVITY_CATEGORIES)) is not None
        }
    )


def _index_value(resource_type: str, resource: dict[str, Any], name: str, base_url: str) -> str | None:
    return next((e[1] for e in param_entries(resource_type, resource, name, base_url) if e[1]), None)


def referral_row(
    pk: int, task: dict[str, Any], at: datetime, deleted: bool, base_url: str = ""
) -> dict[str, Any]:
    """What one Task version (written at `at`) contributes to its `report_referrals` row."""
    focus = _index_value("Task", task, "focus", base_url) or ""
    ph = _ph_refs(task)
    status = task.get("status")
    return {
        "task_pk": pk,
        "task_id": task["id"],
        "sr_id": _fit(focus.partition("/")[2], 64) if focus.startswith("ServiceRequest/") else None,
        "owner": _index_value("Task", task, "owner", base_url),
        "requester": _fit(_reference(task.get("requester"))),
        "patient_id": _fit(_reference(task.get("for")).partition("/")[2]),
        "services": services(task),
        "place": _place(task),
        "status": _fit(status, 32) if isinstance(status, str) else None,
        "outcome": outcome(task),
        "activities": _activities(task),
        "intake_qr": _fit(ph.get("intake"), 64),
        "closure_qr": _fit(ph.get("closure"), 64),
        "intake_at": at if _has_code(task.get("businessStatus"), MILESTONES, Milestone.INTAKE_HELD) else None,
        "ever_accepted": status in ACCEPTED_STATES,
        "last_updated": at,
        "deleted": deleted,
    }


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A later version's row over an earlier one: the earliest intake, accepted once is for good."""
    intakes = [t for t in (old["intake_at"], new["intake_at"]) if t is not None]
    return {
        **new,
        "intake_at": min(intakes, default=None),
        "ever_accepted": old["ever_accepted"] or new["ever_accepted"],
    }


def icpc_group(sr: dict[str, Any]) -> str:
    codes = [
        str(c.get("code", "")).upper()
        for rc in sr.get("reasonCode", [])
        for c in rc.get("coding", [])
        if c.get("system") == ICPC
    ]
    if any(c.startswith("Z") for c in codes):
        return "Z"
    if any(c.startswith("P") for c in codes):
        return "P"
    return "other"


def _aware(text: str | None) -> datetime | None:
    """authoredOn as naive UTC; a date or a local time without zone is Dutch local time."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dutch_naive_utc(moment)


def request_row(pk: int, sr: dict[str, Any], base_url: str = "") -> dict[str, Any]:
    """A ServiceRequest's `report_requests` row (`authored`: the low its index row has)."""
    lows = [e[3] for e in param_entries("ServiceRequest", sr, "authored", base_url) if e[3] is not None]
    authored_on = sr.get("authoredOn")
    return {
        "sr_pk": pk,
        "sr_id": sr["id"],
        "authored": lows[0] if lows else None,
        "authored_at": _aware(authored_on) if isinstance(authored_on, str) else None,
        "icpc_group": icpc_group(sr),
    }


def scores(qr: dict[str, Any] | None) -> list[float | None]:
    """Positive Health scores (0..10) of a QuestionnaireResponse, in PH_DIMENSIONS order (None
    where a dimension has no valid answer): a short list, not a map, so the report reads little."""
    found: dict[str, float] = {}
    for item in (qr or {}).get("item", []):
        if item.get("linkId") in PH_DIMENSIONS:
            for answer in item.get("answer", []):
                value = answer.get("valueInteger", answer.get("valueDecimal"))
                if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10:
                    found[item["linkId"]] = float(value)
    return [found.get(d) for d in PH_DIMENSIONS]


def feedback_rows(
    pk: int, comm: dict[str, Any], base_url: str = "", *, pushed: bool = False, delivered: bool = False
) -> list[dict[str, Any]]:
    """One row per (Task the Communication is part of, feedback kind among its categories)."""
    tasks = [
        v.partition("/")[2]
        for _s, v, *_ in param_entries("Communication", comm, "part-of", base_url)
        if v and v.startswith("Task/")
    ]
    if not tasks:
        return []
    kinds = [
        v
        for s, v, *_ in param_entries("Communication", comm, "category", base_url)
        if s == FEEDBACK_KINDS and v
    ]
    return [
        {
            "comm_pk": pk,
            "task_id": t,
            "kind": k,
            "comm_id": comm["id"],
            "pushed": pushed,
            "delivered": delivered,
        }
        for t in tasks
        for k in kinds
        if _fit(t) and _fit(k, 64)
    ]


# -- the writer ------------------------------------------------------------------------------------


def keep(repo: Repository, stored: Stored) -> None:
    """`on_write` listener: the written document's rows, in the same transaction. Task and
    ServiceRequest rows are gathered and written just before the commit, in one statement (a
    referral writes both: one round trip more, not two); the rarer QuestionnaireResponse and
    feedback Communication writes write theirs at once."""
    kind, conn = stored.resource_type, repo.session
    if kind == "Task":
        staged = _staged(conn)
        row = referral_row(stored.pk, stored.content, stored.last_updated, stored.deleted, repo.base_url)
        earlier = staged.referrals.get(stored.pk)
        staged.referrals[stored.pk] = row if earlier is None else merge(earlier, row)
    elif kind == "ServiceRequest":
        row = None if stored.deleted else request_row(stored.pk, stored.content, repo.base_url)
        _staged(conn).requests[stored.pk] = row
    elif kind == "QuestionnaireResponse":
        if stored.deleted:
            report_rows.delete_scores(conn, stored.pk)
        else:
            report_rows.upsert_scores(conn, {"qr_pk": stored.pk, "qr_id": stored.id, "scores": scores(stored.content)})
    elif kind == "Communication":
        rows = [] if stored.deleted else feedback_rows(stored.pk, stored.content, repo.base_url)
        new = stored.version_id == 1
        if rows or not new:
            report_rows.replace_feedback(conn, stored.pk, rows, new=new)


@dataclass(slots=True)
class _Staged:
    """A transaction's referral rows by Task pk, request rows by ServiceRequest pk (None: deleted)."""

    referrals: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: dict[int, dict[str, Any] | None] = field(default_factory=dict)

    def write(self, connection: sa.Connection) -> None:
        report_rows.write_referrals(
            connection,
            list(self.referrals.values()),
            [r for r in self.requests.values() if r is not None],
            [pk for pk, r in self.requests.items() if r is None],
        )


def _staged(connection: sa.Connection) -> _Staged:
    state = scratch(connection)
    staged = state.get("report_rows")
    if staged is None:
        staged = state["report_rows"] = _Staged()
        before_commit(connection, lambda: staged.write(connection))
    return staged  # type: ignore[no-any-return]


def feedback_pushed(repo: Repository, stored: Stored) -> None:
    """The delivery queued a push of this Communication (in the transaction that wrote it)."""
    if feedback_rows(stored.pk, stored.content, repo.base_url):
        report_rows.mark_pushed(repo.session, stored.pk)


def feedback_delivered(connection: sa.Connection, kind: str, payload: dict[str, Any], status: str) -> None:
    """An outbox row reached `status`: a delivered push marks its Communication delivered."""
    ref = str(payload.get("communication") or "")
    if status == "delivered" and kind in PUSH_KINDS and ref.startswith("Communication/"):
        report_rows.mark_delivered(connection, ref.partition("/")[2])


# -- the backfill --------------------------------------------------------------------------------


def rebuild(connection: sa.Connection, base_url: str = "") -> None:
    """Every row from the documents (Task history, current resources, the outbox), from scratch."""
    report_rows.clear(connection)
    batch: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for pk, deleted, at, content in report_rows.task_versions(connection):
        row = referral_row(pk, content, at, deleted, base_url)
        if current is not None and current["task_pk"] == pk:
            row = merge(current, row)
        elif current is not None:
            batch.append(current)
        current = row
        if len(batch) >= _BATCH:
            report_rows.insert_rows(connection, report_rows.RR, batch)
            batch = []
    report_rows.insert_rows(connection, report_rows.RR, [*batch, *([current] if current else [])])
    _rebuild_documents(connection, base_url)


def _rebuild_documents(connection: sa.Connection, base_url: str) -> None:
    """The rows of the current ServiceRequests, QuestionnaireResponses and Communications."""
    statuses: dict[str, set[str]] = {}
    for ref, status in report_rows.pushed_communications(connection, PUSH_KINDS):
        statuses.setdefault(ref, set()).add(status)
    makers = {
        report_rows.RQ: ("ServiceRequest", lambda pk, doc: [request_row(pk, doc, base_url)]),
        report_rows.SC: (
            "QuestionnaireResponse",
            lambda pk, doc: [{"qr_pk": pk, "qr_id": doc["id"], "scores": scores(doc)}],
        ),
        report_rows.FB: (
            "Communication",
            lambda pk, doc: feedback_rows(
                pk,
                doc,
                base_url,
                pushed=bool(statuses.get(f"Communication/{doc['id']}")),
                delivered="delivered" in statuses.get(f"Communication/{doc['id']}", ()),
            ),
        ),
    }
    for table, (resource_type, make) in makers.items():
        batch: list[dict[str, Any]] = []
        for pk, doc in report_rows.current_documents(connection, resource_type):
            batch.extend(make(pk, doc))
            if len(batch) >= _BATCH:
                report_rows.insert_rows(connection, table, batch)
                batch = []
        report_rows.insert_rows(connection, table, batch)
