"""What the console shows, read straight from the store (admins see every organisation).

Why the store's read model (`store/console_queries.py`) and not the FHIR router: one page needs
Tasks with their version history, the feedback Communications and the outbox rows of those —
through the router that is dozens of calls per row. These queries are a handful per page,
driven by the search index, and never select identifiers: the console never shows a BSN (only
the Patient's name, to admins). Here: the filters' meaning, loop stages, what a row shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fhir_gateway.delivery import outbox
from fhir_gateway.routing import Directory
from fhir_gateway.routing.directory import house_number
from fhir_gateway.store import console_queries as queries
from fhir_gateway.store import v2_journal
from fhir_gateway.vocabulary import ACTIVITY_CATEGORIES, FEEDBACK_KINDS, MILESTONES, Milestone
from fhir_gateway.vocabulary import CHANNEL as CHANNEL_SYSTEM

STAGES = ("received", "routed", "accepted", "intake", "activity", "closed")
STAGE_LABELS = {
    "received": "ontvangen",
    "routed": "gerouteerd",
    "accepted": "geaccepteerd",
    "intake": "intake",
    "activity": "activiteit",
    "closed": "afgesloten",
}
FINAL = ("completed", "cancelled", "rejected", "failed")
OPEN = ("requested", "received")
# Task.status values that can be at a stage (SQL pre-filter; the stage itself is decided in Python)
STAGE_STATUSES = {
    "routed": OPEN,
    "accepted": ("accepted",),
    "intake": ("in-progress", "on-hold"),
    "activity": ("in-progress", "on-hold"),
    "closed": FINAL,
}
INTAKE_CODES = frozenset({Milestone.INTAKE_HELD, Milestone.ACTIVITY_FOUND})


@dataclass
class Filters:
    practice: str = ""  # Organization id
    welfare: str = ""  # Organization id
    municipality: str = ""
    state: str = ""  # one of STAGES[1:]
    min_age: int | None = None  # days since the referral
    max_age: int | None = None
    page: int = 1
    per_page: int = 25


@dataclass
class Feedback:
    communication: str  # Communication/<id>
    kind: str
    sent: str
    delivery: str  # delivered | pending | delivering | dead | cancelled | poll (practice fetches it)


@dataclass
class ReferralRow:
    task_id: str
    service_request: str
    status: str
    business: str
    stage: str
    practice: str
    welfare: str
    municipality: str
    referred: datetime | None
    age_days: int | None
    intake_due: str
    patient: str = ""
    patient_ref: str = ""
    timeline: dict[str, datetime | None] = field(default_factory=dict)
    feedback: list[Feedback] = field(default_factory=list)


@dataclass
class Page:
    rows: list[ReferralRow]
    total: int
    page: int
    pages: int


# -- small helpers ------------------------------------------------------------------------------
def parse_moment(text: str | None) -> datetime | None:
    """FHIR date / dateTime / instant → aware UTC (a bare date counts as its start, UTC)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def codes(concept: dict[str, Any] | None, system: str | None = None) -> list[str]:
    return [
        c["code"]
        for c in (concept or {}).get("coding", [])
        if c.get("code") and (system is None or c.get("system") == system)
    ]


def ref_of(value: dict[str, Any] | None) -> str:
    ref = (value or {}).get("reference") or ""
    parts = ref.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


def org_name(directory: Directory, reference: str) -> str:
    org = directory.resolve(reference)
    return str(org.get("name") or reference) if org else reference


def patient_name(patient: dict[str, Any] | None) -> str:
    """Given names + family name; never an identifier (no BSN anywhere in the console)."""
    if not patient:
        return ""
    for name in patient.get("name", []):
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("given", []), name.get("family", "")]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return ""


def stage_of(task: dict[str, Any]) -> str:
    status = task.get("status", "")
    business = set(codes(task.get("businessStatus"), MILESTONES))
    if status in FINAL:
        return "closed"
    if Milestone.ACTIVITY_FOUND in business or _has_activity(task):
        return "activity"
    if business & INTAKE_CODES or status in ("in-progress", "on-hold"):
        return "intake"
    if status == "accepted":
        return "accepted"
    return "routed"


def _has_activity(task: dict[str, Any]) -> bool:
    return any(codes(o.get("type"), ACTIVITY_CATEGORIES) for o in task.get("output", []))


def practices(directory: Directory) -> list[tuple[str, str]]:
    """(Organization id, name) of the GP practices in the directory."""
    return sorted(
        (
            (r["id"], str(r.get("name") or r["id"]))
            for r in directory
            if _is_org(r) and directory.is_gp_practice(r)
        ),
        key=lambda x: x[1],
    )


def welfare_organizations(directory: Directory) -> list[tuple[str, str]]:
    ids = {ref_of(s.get("providedBy")).partition("/")[2] for s in directory.wor_services()}
    return sorted(((i, org_name(directory, f"Organization/{i}")) for i in ids if i), key=lambda x: x[1])


def municipalities(directory: Directory) -> list[str]:
    return sorted({m for s in directory.wor_services() for m in directory.municipalities_of(s["id"])})


def _is_org(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Organization"


def _requester_refs(directory: Directory, practice_id: str) -> list[str]:
    """Everything a Task.requester of this practice can point at: the practice, its roles, its people."""
    refs = {f"Organization/{practice_id}"}
    for r in directory:
        if (
            r.get("resourceType") == "PractitionerRole"
            and ref_of(r.get("organization")) == f"Organization/{practice_id}"
        ):
            refs.add(f"PractitionerRole/{r['id']}")
            if ref_of(r.get("practitioner")):
                refs.add(ref_of(r.get("practitioner")))
    return sorted(refs)


def _owners_for(directory: Directory, municipality: str) -> list[str]:
    wanted = municipality.casefold()
    return sorted(
        {
            ref_of(s.get("providedBy"))
            for s in directory.wor_services()
            if any(m.casefold() == wanted for m in directory.municipalities_of(s["id"]))
        }
    )


def municipality_of(directory: Directory, task: dict[str, Any], patient: dict[str, Any] | None) -> str:
    """The municipality of the WoR service the referral went to; a service covering several is
    decided by the patient's address against its coverage."""
    services = [
        ref_of(i.get("valueReference")).partition("/")[2]
        for i in task.get("input", [])
        if ref_of(i.get("valueReference")).startswith("HealthcareService/")
    ]
    found = sorted({m for s in services for m in directory.municipalities_of(s)})
    if len(found) <= 1:
        return found[0] if found else ""
    for address in (patient or {}).get("address", []):
        number = None
        for ext in [x for line in address.get("_line", []) if line for x in line.get("extension", [])]:
            if ext.get("url", "").endswith("houseNumber"):
                number = house_number(ext.get("valueString"))
        for rng in directory.coverage_for(address.get("postalCode") or "", number):
            if rng.service_id in services:
                return rng.municipality
    return " / ".join(found)


# -- referrals ----------------------------------------------------------------------------------
def referrals(conn: sa.Connection, directory: Directory, filters: Filters, now: datetime) -> Page:
    """Referral Tasks matching the filters, newest first, one page of them fully annotated.

    Organisation, status and age filters run in SQL on the search index; the loop stage and an
    ambiguous municipality are decided per Task in Python (they need the Task's content)."""
    owners: list[list[str]] = []
    if filters.welfare:
        owners.append([f"Organization/{filters.welfare}"])
    if filters.municipality:
        owners.append(_owners_for(directory, filters.municipality))
    tasks = queries.referral_tasks(
        conn,
        owners=owners,
        requesters=_requester_refs(directory, filters.practice) if filters.practice else None,
        statuses=STAGE_STATUSES.get(filters.state),
        referred_until=_cutoff(now, filters.min_age),
        referred_since=_cutoff(now, filters.max_age),
    )

    patients: dict[str, dict[str, Any]] = {}
    if filters.municipality:  # decide the ambiguous ones with the patient's address
        patients = queries.contents(
            conn, "Patient", (ref_of(t.get("for")).partition("/")[2] for _, t in tasks)
        )
    kept = []
    for rid, task in tasks:
        if filters.state and stage_of(task) != filters.state:
            continue
        if filters.municipality:
            muni = municipality_of(directory, task, patients.get(ref_of(task.get("for")).partition("/")[2]))
            if muni.casefold() != filters.municipality.casefold():
                continue
        kept.append((rid, task))
    per_page = max(1, min(filters.per_page, 200))
    pages = max(1, -(-len(kept) // per_page))
    page = max(1, min(filters.page, pages))
    chosen = kept[(page - 1) * per_page : page * per_page]
    return Page(_annotate(conn, directory, chosen, now), len(kept), page, pages)


def _cutoff(now: datetime, days: int | None) -> datetime | None:
    """`days` before `now` as naive UTC (how the index keeps dates)."""
    if days is None:
        return None
    return (now - timedelta(days=days)).astimezone(UTC).replace(tzinfo=None)


def _annotate(
    conn: sa.Connection, directory: Directory, tasks: list[tuple[str, dict[str, Any]]], now: datetime
) -> list[ReferralRow]:
    if not tasks:
        return []
    task_ids = [rid for rid, _ in tasks]
    srs = queries.contents(
        conn, "ServiceRequest", (ref_of(t.get("focus")).partition("/")[2] for _, t in tasks)
    )
    patients = queries.contents(conn, "Patient", (ref_of(t.get("for")).partition("/")[2] for _, t in tasks))
    history = _history(conn, task_ids)
    feedback = _feedback(conn, task_ids)
    rows = []
    for rid, task in tasks:
        sr_id = ref_of(task.get("focus")).partition("/")[2]
        sr = srs.get(sr_id, {})
        patient = patients.get(ref_of(task.get("for")).partition("/")[2])
        referred = parse_moment(sr.get("authoredOn")) or parse_moment(task.get("authoredOn"))
        practice = directory.practice_of(ref_of(task.get("requester")))
        timeline = _timeline(history.get(rid, []))
        timeline["received"] = referred
        rows.append(
            ReferralRow(
                task_id=rid,
                service_request=sr_id,
                status=str(task.get("status", "")),
                business=", ".join(codes(task.get("businessStatus"))),
                stage=stage_of(task),
                practice=str(practice.get("name")) if practice else ref_of(task.get("requester")),
                welfare=org_name(directory, ref_of(task.get("owner"))),
                municipality=municipality_of(directory, task, patient),
                referred=referred,
                age_days=(now - referred).days if referred else None,
                intake_due=str(((task.get("restriction") or {}).get("period") or {}).get("end", "")),
                patient=patient_name(patient),
                patient_ref=ref_of(task.get("for")),
                timeline=timeline,
                feedback=feedback.get(rid, []),
            )
        )
    return rows


def _history(conn: sa.Connection, task_ids: list[str]) -> dict[str, list[tuple[datetime, dict[str, Any]]]]:
    return {
        rid: [(_aware(updated), content) for updated, content in versions]  # type: ignore[misc]
        for rid, versions in queries.task_versions(conn, task_ids).items()
    }


def _timeline(versions: list[tuple[datetime, dict[str, Any]]]) -> dict[str, datetime | None]:
    """When each loop stage was first reached, from the Task's versions in `resource_history`."""
    reached: dict[str, datetime | None] = dict.fromkeys(STAGES)
    for i, (moment, task) in enumerate(versions):
        status = task.get("status", "")
        business = set(codes(task.get("businessStatus"), MILESTONES))
        hits = {
            "routed": i == 0,
            "accepted": status in ("accepted", "in-progress", "on-hold", "completed"),
            "intake": bool(business & INTAKE_CODES),
            "activity": Milestone.ACTIVITY_FOUND in business or _has_activity(task),
            "closed": status in FINAL,
        }
        for stage, hit in hits.items():
            if hit and reached[stage] is None:
                reached[stage] = moment
    return reached


def _feedback(conn: sa.Connection, task_ids: list[str]) -> dict[str, list[Feedback]]:
    """Feedback Communications (`partOf` the Task) and how their push went (outbox rows)."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for task_ref, cid, content in queries.communications_part_of(conn, [f"Task/{t}" for t in task_ids]):
        found.setdefault(task_ref.partition("/")[2], []).append((cid, content))
    comm_refs = [f"Communication/{cid}" for items in found.values() for cid, _ in items]
    pushes = queries.push_statuses(conn, comm_refs)
    out: dict[str, list[Feedback]] = {}
    for task_id, items in found.items():
        for cid, content in items:
            kinds = [k for cat in content.get("category", []) for k in codes(cat, FEEDBACK_KINDS)] or [
                k for cat in content.get("category", []) for k in codes(cat)
            ]
            statuses = pushes.get(f"Communication/{cid}", [])
            out.setdefault(task_id, []).append(
                Feedback(
                    communication=f"Communication/{cid}",
                    kind=", ".join(kinds) or "?",
                    sent=str(content.get("sent", "")),
                    delivery=statuses[-1] if statuses else "poll",
                )
            )
    return out


# -- stuck items ----------------------------------------------------------------------------------
@dataclass
class Overdue:
    task_id: str
    status: str
    welfare: str
    practice: str
    intake_due: str
    days_over: int


def overdue_intakes(conn: sa.Connection, directory: Directory, now: datetime) -> list[Overdue]:
    """Tasks still requested/received after their intake window (Task.restriction.period.end)."""
    out = []
    for rid, task in queries.tasks_with_status(conn, OPEN):
        due_text = str(((task.get("restriction") or {}).get("period") or {}).get("end") or "")
        due = parse_moment(due_text)
        if due is None:
            continue
        if len(due_text) == 10:
            due += timedelta(days=1)  # a date: the whole day counts
        if due < now:
            practice = directory.practice_of(ref_of(task.get("requester")))
            out.append(
                Overdue(
                    task_id=rid,
                    status=str(task.get("status")),
                    welfare=org_name(directory, ref_of(task.get("owner"))),
                    practice=str(practice.get("name")) if practice else ref_of(task.get("requester")),
                    intake_due=due_text,
                    days_over=(now - due).days,
                )
            )
    return sorted(out, key=lambda o: -o.days_over)


def dead_letters(conn: sa.Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Dead outbox rows without their payload (it may hold personal data)."""
    rows = outbox.list_rows(conn, "dead", limit)
    for row in rows:
        row.pop("payload", None)
        row["lastError"] = (row.get("lastError") or "")[:300]
    return rows


def outbox_counts(conn: sa.Connection) -> dict[str, int]:
    return outbox.counts(conn)


@dataclass
class Refusal:
    when: str
    channel: str  # FHIR | HL7 v2
    who: str
    detail: str


def refused_referrals(conn: sa.Connection, limit: int = 100) -> tuple[int, list[Refusal]]:
    """Refused referral posts. A 422 stores nothing, so they are counted where they leave a trace:
    AuditEvents of failed creates (outcome 4) by GP-practice clients, and HL7 v2 messages
    acknowledged AE/AR in the v2 journal. The AuditEvent does not say why (unroutable address,
    invalid BSN, missing consent): the console shows the count and who sent it. A refused v2
    message also leaves an AuditEvent (subtype channel `hl7v2`); it is counted once, from the
    journal. (A v2 message refused for its sender — not authenticated, or not registered for
    MSH-4 — is in neither count: it was never a referral; its AuditEvent records it.)"""
    fhir: list[Refusal] = []
    for event in queries.failed_create_audits(conn):
        agents = event.get("agent", [])
        roles = {r.get("text") for a in agents for r in a.get("role", [])}
        who = str(next((a.get("name") for a in agents if a.get("requestor")), "?"))
        channels = {s.get("code") for s in event.get("subtype", []) if s.get("system") == CHANNEL_SYSTEM}
        if "gp-practice" not in roles or "hl7v2" in channels:  # v2 ones are counted from the journal
            continue
        org = next((ref_of(a.get("who")) for a in agents if not a.get("requestor")), "")
        fhir.append(
            Refusal(str(event.get("recorded", "")), "FHIR", str(who), f"create refused (4xx) for {org}")
        )
    v2 = [
        Refusal(f"{received.isoformat()}Z", "HL7 v2", str(sender), f"{mtype} {control} → ACK {ack}")
        for received, sender, mtype, ack, control in v2_journal.refused_inbound(conn)
    ]
    everything = sorted(fhir + v2, key=lambda r: r.when, reverse=True)
    return len(everything), everything[:limit]
