"""What the console shows, read straight from the store (admins see every organisation).

Why the store's read model (`store/console_queries.py`) and not the FHIR router: one page needs
Tasks with their version history, the feedback Communications and the outbox rows of those —
through the router that is dozens of calls per row. These queries are a handful per page,
driven by the search index, and never select identifiers: the console never shows a BSN (only
the Patient's name, to admins). Here: the filters' meaning, loop stages, what a row shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fhir_gateway.delivery import outbox
from fhir_gateway.routing import Directory
from fhir_gateway.routing.directory import house_number
from fhir_gateway.store import console_queries as queries
from fhir_gateway.vocabulary import ACTIVITY_CATEGORIES, FEEDBACK_KINDS, MILESTONES, Milestone
from fhir_gateway.vocabulary import BSN as BSN_SYSTEM
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
    kinds: list[str]
    sent: str
    delivery: str  # delivered | pending | delivering | dead | cancelled | poll (practice fetches it)


@dataclass
class ReferralRow:
    task_id: str
    service_request: str
    status: str
    business: list[str]
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
        with_content=bool(filters.state or filters.municipality),  # else only the page's are read
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
    if chosen and not chosen[0][1]:  # ids only so far: read the page's Tasks
        found = queries.contents(conn, "Task", (rid for rid, _ in chosen))
        chosen = [(rid, found[rid]) for rid, _ in chosen if rid in found]
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
                business=codes(task.get("businessStatus")),
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
                    kinds=kinds or ["?"],
                    sent=str(content.get("sent", "")),
                    delivery=statuses[-1] if statuses else "poll",
                )
            )
    return out


# -- stuck items ----------------------------------------------------------------------------------
@dataclass
class Overdue:
    task_id: str
    service_request: str
    number: str
    status: str
    welfare: str
    practice: str
    intake_due: str
    days_over: int


def overdue_intakes(conn: sa.Connection, directory: Directory, now: datetime) -> list[Overdue]:
    """Tasks still requested/received after their intake window (Task.restriction.period.end)."""
    out = []
    tasks = queries.tasks_with_status(conn, OPEN)
    srs = queries.contents(
        conn, "ServiceRequest", (ref_of(t.get("focus")).partition("/")[2] for _, t in tasks)
    )
    for rid, task in tasks:
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
                    service_request=(sr_id := ref_of(task.get("focus")).partition("/")[2]),
                    number=", ".join(
                        str(i.get("value", "")) for i in srs.get(sr_id, {}).get("identifier", [])
                    ),
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
    about = {row["eventId"]: str((row.get("payload") or {}).get("communication") or "") for row in rows}
    referral = _referrals_of(conn, [ref for ref in about.values() if ref.startswith("Communication/")])
    for row in rows:
        row.pop("payload", None)
        row["lastError"] = masked((row.get("lastError") or "")[:300])
        row["referral"] = referral.get(about[row["eventId"]], "")
    return rows


def _referrals_of(conn: sa.Connection, communication_refs: list[str]) -> dict[str, str]:
    """Communication reference → the ServiceRequest id of the referral it reports on (via partOf Task)."""
    comms = queries.contents(conn, "Communication", (r.partition("/")[2] for r in communication_refs))
    task_of = {
        f"Communication/{cid}": ref_of(p).partition("/")[2]
        for cid, c in comms.items()
        for p in c.get("partOf", [])[:1]
    }
    tasks = queries.contents(conn, "Task", task_of.values())
    return {
        ref: ref_of(tasks[tid].get("focus")).partition("/")[2] for ref, tid in task_of.items() if tid in tasks
    }


def outbox_counts(conn: sa.Connection) -> dict[str, int]:
    return outbox.counts(conn)


@dataclass
class Refusal:
    when: str
    channel: str  # FHIR | HL7 v2
    who: str
    detail: str
    reason: str = ""  # the OperationOutcome's code and diagnostics, or the ACK's ERR (BSN-safe)


def refused_referrals(conn: sa.Connection, limit: int = 100) -> tuple[int, list[Refusal]]:
    """Refused referral posts. A 422 stores nothing, so they are counted where they leave a trace:
    AuditEvents of failed creates (outcome 4) by GP-practice clients — `outcomeDesc` carries the
    OperationOutcome's code and diagnostics — and HL7 v2 messages acknowledged AE/AR in the v2
    journal, whose ACK's ERR segment says why. A refused v2 message also leaves an AuditEvent
    (subtype channel `hl7v2`); it is counted once, from the journal. (A v2 message refused for
    its sender — not authenticated, or not registered for MSH-4 — is in neither count: it was
    never a referral; its AuditEvent records it.)"""
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
            Refusal(
                str(event.get("recorded", "")),
                "FHIR",
                str(who),
                f"aanmaken geweigerd voor {org}",
                masked(str(event.get("outcomeDesc") or "reden niet vastgelegd")),
            )
        )
    v2 = [
        Refusal(
            f"{received.isoformat()}Z",
            "HL7 v2",
            str(sender),
            f"{mtype} {control} → ACK {ack}",
            masked(ack_reason(text or "")),
        )
        for received, sender, mtype, ack, control, text in queries.refused_v2(conn)
    ]
    everything = sorted(fhir + v2, key=lambda r: r.when, reverse=True)
    return len(everything), everything[:limit]


def ack_reason(ack: str) -> str:
    """Why an ACK refused: each ERR segment's code (ERR-3) and user message (ERR-8), else MSA-3."""
    reasons = []
    fallback = ""
    for segment in ack.replace("\n", "\r").split("\r"):
        fields = segment.split("|")
        if fields[0] == "ERR":
            code = fields[3].split("^")[1] if len(fields) > 3 and "^" in fields[3] else ""
            message = fields[8] if len(fields) > 8 else ""
            reasons.append(": ".join(p for p in (code, message) if p))
        elif fields[0] == "MSA" and len(fields) > 3:
            fallback = fields[3]
    return "; ".join(r for r in reasons if r) or fallback


# -- one referral: the whole loop -----------------------------------------------------------------
_DIGITS = re.compile(r"\d{8,}")


def masked(text: str) -> str:
    """Free text for the console with every run of 8+ digits hidden: a refusal's diagnostics may
    quote the BSN that failed the 11-test, and the console never shows a BSN."""
    return _DIGITS.sub("•••", text)


@dataclass
class TaskVersion:
    version: str
    when: datetime | None
    who: str
    status: str
    business: list[str]


@dataclass
class LoopTask:
    task_id: str
    status: str
    owner: str
    intake_due: str
    versions: list[TaskVersion]


@dataclass
class Loop:
    """Everything the console knows about one referral (ServiceRequest)."""

    sr_id: str
    number: str
    status: str
    authored: str
    patient: str
    patient_ref: str
    practice: str
    tasks: list[LoopTask]
    careplans: list[dict[str, Any]]
    communications: list[dict[str, Any]]
    v2: list[dict[str, Any]]
    audits: list[dict[str, Any]]

    @property
    def references(self) -> list[str]:
        """The resources of this loop (what an AuditEvent of it names)."""
        return [
            f"ServiceRequest/{self.sr_id}",
            *(f"Task/{t.task_id}" for t in self.tasks),
            *(f"CarePlan/{c['id']}" for c in self.careplans),
            *(c["ref"] for c in self.communications),
        ]


def referral_loop(conn: sa.Connection, directory: Directory, sr_id: str) -> Loop | None:
    """The referral `sr_id` with its Tasks (every version, who, when), CarePlans, feedback
    Communications with their deliveries, HL7 v2 messages and AuditEvents; None if unknown."""
    sr = queries.contents(conn, "ServiceRequest", [sr_id]).get(sr_id)
    if sr is None:
        return None
    sr_ref = f"ServiceRequest/{sr_id}"
    patient_ref = ref_of(sr.get("subject"))
    patient = queries.contents(conn, "Patient", [patient_ref.partition("/")[2]]).get(
        patient_ref.partition("/")[2]
    )
    task_rows = queries.referencing(conn, "Task", ("focus", "based-on"), [sr_ref])
    task_refs = [f"Task/{rid}" for rid, _ in task_rows]
    authors = _authors(conn, task_refs)
    versions = queries.task_versions(conn, [rid for rid, _ in task_rows])
    tasks = [
        LoopTask(
            task_id=rid,
            status=str(task.get("status", "")),
            owner=org_name(directory, ref_of(task.get("owner"))),
            intake_due=str(((task.get("restriction") or {}).get("period") or {}).get("end", "")),
            versions=[
                TaskVersion(
                    version=str((content.get("meta") or {}).get("versionId", "")),
                    when=_aware(updated),
                    who=_author(authors, rid, (content.get("meta") or {}).get("versionId", "")),
                    status=str(content.get("status", "")),
                    business=codes(content.get("businessStatus")),
                )
                for updated, content in versions.get(rid, [])
            ],
        )
        for rid, task in task_rows
    ]
    careplans = [
        {
            "id": rid,
            "status": c.get("status", ""),
            "title": c.get("title", ""),
            "period": c.get("period") or {},
        }
        for rid, c in queries.referencing(
            conn, "CarePlan", ("supporting-info", "based-on"), [sr_ref, *task_refs]
        )
    ]
    communications = _loop_communications(conn, task_refs, sr_ref)
    loop = Loop(
        sr_id=sr_id,
        number=", ".join(str(i.get("value", "")) for i in sr.get("identifier", []) if i.get("value")),
        status=str(sr.get("status", "")),
        authored=str(sr.get("authoredOn", "")),
        patient=patient_name(patient),
        patient_ref=patient_ref,
        practice=_practice_name(directory, ref_of(sr.get("requester"))),
        tasks=tasks,
        careplans=careplans,
        communications=communications,
        v2=[],
        audits=[],
    )
    loop.v2 = queries.v2_messages_about(conn, loop.references)
    loop.audits = [
        _audit_row(e)
        for _, e in queries.referencing(
            conn, "AuditEvent", ("entity",), loop.references, 200, newest_first=True
        )
    ]
    return loop


def _author(authors: dict[str, str], task_id: str, version: object) -> str:
    """Who wrote a Task version; the first one without a Provenance was made by the gateway's
    routing, inside the practice's referral transaction."""
    found = authors.get(f"Task/{task_id}/_history/{version}", "")
    return found or ("gateway (routering)" if str(version) == "1" else "")


def _practice_name(directory: Directory, requester: str) -> str:
    practice = directory.practice_of(requester)
    return str(practice.get("name")) if practice else requester


def _authors(conn: sa.Connection, task_refs: list[str]) -> dict[str, str]:
    """ "Task/x/_history/n" → who wrote that version (the Provenance agent: client, organisation)."""
    out: dict[str, str] = {}
    for _, prov in queries.referencing(conn, "Provenance", ("target",), task_refs, limit=2000):
        agent = (prov.get("agent") or [{}])[0]
        client = ((agent.get("who") or {}).get("identifier") or {}).get("value", "")
        org = ref_of(agent.get("onBehalfOf"))
        who = f"{client} ({org})" if org else str(client)
        for target in prov.get("target", []):
            out[str(target.get("reference", ""))] = who
    return out


def _loop_communications(conn: sa.Connection, task_refs: list[str], sr_ref: str) -> list[dict[str, Any]]:
    """Feedback (partOf a Task) and other Communications about the referral, with every push."""
    rows = queries.referencing(conn, "Communication", ("part-of", "based-on"), [*task_refs, sr_ref])
    refs = [f"Communication/{rid}" for rid, _ in rows]
    pushes: dict[str, list[dict[str, Any]]] = {}
    for push in queries.outbox_about(conn, refs):
        push["last_error"] = masked((push.get("last_error") or "")[:300])
        pushes.setdefault(push["communication"], []).append(push)
    out = []
    for rid, content in rows:
        kinds = [k for cat in content.get("category", []) for k in codes(cat)]
        ref = f"Communication/{rid}"
        out.append(
            {
                "id": rid,
                "ref": ref,
                "kinds": kinds,
                "status": content.get("status", ""),
                "sent": content.get("sent", ""),
                "recipient": ", ".join(ref_of(r) for r in content.get("recipient", [])),
                "pushes": pushes.get(ref, []),
                "delivery": pushes[ref][-1]["status"] if pushes.get(ref) else "poll",
            }
        )
    return out


def _audit_row(event: dict[str, Any]) -> dict[str, Any]:
    agents = event.get("agent", [])
    who = next((a.get("name") for a in agents if a.get("requestor")), "?")
    subtype = next((s.get("code") for s in event.get("subtype", []) if s.get("code")), "")
    return {
        "when": event.get("recorded", ""),
        "who": str(who),
        "action": event.get("action", ""),
        "subtype": subtype,
        "outcome": event.get("outcome", ""),
        "reason": masked(str(event.get("outcomeDesc", ""))),
    }


# -- search ---------------------------------------------------------------------------------------
@dataclass
class Hit:
    sr_id: str
    number: str
    authored: str
    patient: str
    patient_id: str
    status: str
    task_status: str


def find_by_number(conn: sa.Connection, number: str) -> list[Hit]:
    """Referrals whose ServiceRequest.identifier value is `number` (any system)."""
    return _hits(conn, queries.with_identifier(conn, "ServiceRequest", number.strip()))


def find_by_bsn(conn: sa.Connection, bsn: str) -> tuple[list[str], list[Hit]]:
    """(Patient references, their referrals) for a BSN."""
    patients = [f"Patient/{p}" for p in queries.with_identifier(conn, "Patient", bsn.strip(), BSN_SYSTEM)]
    srs = [rid for rid, _ in queries.referencing(conn, "ServiceRequest", ("subject", "patient"), patients)]
    return patients, _hits(conn, list(reversed(srs)))


def _hits(conn: sa.Connection, sr_ids: list[str]) -> list[Hit]:
    srs = queries.contents(conn, "ServiceRequest", sr_ids)
    patients = queries.contents(
        conn, "Patient", (ref_of(s.get("subject")).partition("/")[2] for s in srs.values())
    )
    tasks = {
        ref_of(t.get("focus")): str(t.get("status", ""))
        for _, t in queries.referencing(conn, "Task", ("focus",), [f"ServiceRequest/{i}" for i in sr_ids])
    }
    return [
        Hit(
            sr_id=rid,
            number=", ".join(str(i.get("value", "")) for i in sr.get("identifier", []) if i.get("value")),
            authored=str(sr.get("authoredOn", "")),
            patient=patient_name(patients.get(ref_of(sr.get("subject")).partition("/")[2])),
            patient_id=ref_of(sr.get("subject")).partition("/")[2],
            status=str(sr.get("status", "")),
            task_status=tasks.get(f"ServiceRequest/{rid}", ""),
        )
        for rid in sr_ids
        if (sr := srs.get(rid)) is not None
    ]
