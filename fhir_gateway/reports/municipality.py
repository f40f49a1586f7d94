"""The municipality report: what a municipality wants to know about its WoR loop, as a MeasureReport.

Definitions (also in the report's narrative, so a reader of the figures sees them):
  * cohort — referrals whose ServiceRequest.authoredOn lies in the period (Dutch local dates),
    with what is known of them now;
  * municipality — of the welfare service the referral was routed to (Task.input →
    HealthcareService, its wor-coverage `municipality`); when that service covers several
    municipalities, the one the router recorded in Task.description, else the patient's
    Address.district;
  * intake date — the first Task version (resource_history) whose businessStatus is intake-held;
    days are counted from ServiceRequest.authoredOn;
  * finished — Task status completed, cancelled, failed or rejected; drop-out = finished without
    completion: cancelled, failed, rejected, or closed with businessStatus client-declined / no-show.
"""

from __future__ import annotations

import math
import re
import statistics
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway import __version__
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.searchparams import format_instant, normalise_reference
from fhir_gateway.reports import data
from fhir_gateway.reports.measure import Cell, concept, count, group, rate, stratifier
from fhir_gateway.routing import Directory
from fhir_gateway.store.repository import Repository
from fhir_gateway.vocabulary import (
    ACTIVITY_CATEGORIES,
    AMSTERDAM,
    FEEDBACK_KINDS,
    ICPC,
    MEASURE_IMPROVEMENT_NOTATION,
    MILESTONES,
    MUNICIPALITY_REPORT_MEASURE,
    POSITIVE_HEALTH_DIMENSIONS,
    REPORT_MUNICIPALITY,
    Milestone,
)
from fhir_gateway.workflow.feedback import PH_DIMENSIONS, PH_OUTPUT_CODES

FINISHED = ("completed", "cancelled", "failed", "rejected")
DROP_OUT_MILESTONES = (Milestone.CLIENT_DECLINED, Milestone.NO_SHOW)
PH_DISPLAY = {
    "lichaamsfuncties": "Lichaamsfuncties",
    "mentaalWelbevinden": "Mentaal welbevinden",
    "zingeving": "Zingeving",
    "kwaliteitVanLeven": "Kwaliteit van leven",
    "meedoen": "Meedoen",
    "dagelijksFunctioneren": "Dagelijks functioneren",
}
REPORT_ROLES = frozenset({"admin", "system", "municipality"})
_DESCRIPTION_PLACE = re.compile(r"\bin\s+(?P<place>[^,.;:]+?)\s*$")


@dataclass(frozen=True)
class Period:
    """Inclusive Dutch calendar dates; `bounds()` gives the naive-UTC half-open range the store keeps."""

    start: date
    end: date

    def bounds(self) -> tuple[datetime, datetime]:
        def utc(d: date) -> datetime:
            local = datetime(d.year, d.month, d.day, tzinfo=AMSTERDAM)
            return local.astimezone(UTC).replace(tzinfo=None)

        return utc(self.start), utc(self.end + timedelta(days=1))


def parse_period(text: str) -> Period:
    """`2026`, `2026-Q4`, `2026-03`, or `2026-01-01/2026-12-31` (inclusive dates)."""
    text = (text or "").strip()
    try:
        if "/" in text:
            low, _, high = text.partition("/")
            period = Period(date.fromisoformat(low.strip()), date.fromisoformat(high.strip()))
        elif m := re.fullmatch(r"(\d{4})-[Qq]([1-4])", text):
            year, quarter = int(m[1]), int(m[2])
            start = date(year, 3 * quarter - 2, 1)
            end = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
            period = Period(start, end - timedelta(days=1))
        elif m := re.fullmatch(r"(\d{4})-(\d{2})", text):
            start = date(int(m[1]), int(m[2]), 1)
            nxt = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
            period = Period(start, nxt - timedelta(days=1))
        elif re.fullmatch(r"\d{4}", text):
            period = Period(date(int(text), 1, 1), date(int(text), 12, 31))
        else:
            raise ValueError(text)
    except ValueError:
        raise FhirError(
            400,
            [
                error(
                    "invalid",
                    f"period '{text}' is not YYYY, YYYY-Qn, YYYY-MM or YYYY-MM-DD/YYYY-MM-DD",
                    "period",
                )
            ],
        ) from None
    if period.end < period.start:
        raise FhirError(400, [error("invalid", "period ends before it starts", "period")])
    return period


@cache
def _displays(path: Path) -> dict[str, str]:
    """Dutch displays of a CodeSystem in profiles/ (empty when the file is missing)."""
    try:
        cs = orjson.loads(path.read_bytes())
    except OSError:
        return {}
    return {c["code"]: c.get("display", c["code"]) for c in cs.get("concept", [])}


def _first_code(concept_: dict[str, Any] | None, system: str) -> str | None:
    for coding in (concept_ or {}).get("coding", []):
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def _services(task: dict[str, Any]) -> list[str]:
    out = []
    for item in task.get("input", []):
        ref = normalise_reference((item.get("valueReference") or {}).get("reference", "")) or ""
        if ref.startswith("HealthcareService/"):
            out.append(ref.partition("/")[2])
    return out


class MunicipalityResolver:
    """Decides the municipality of a referral (see the module docstring) from the directory."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._munis: dict[str, list[str]] = {}

    def municipalities(self, service_id: str) -> list[str]:
        if service_id not in self._munis:
            self._munis[service_id] = self.directory.municipalities_of(service_id)
        return self._munis[service_id]

    def owners_for(self, municipality: str) -> set[str]:
        """The welfare organisations whose WoR service covers the municipality (SQL pre-filter)."""
        wanted = municipality.casefold()
        owners = set()
        for service in self.directory.wor_services():
            if any(m.casefold() == wanted for m in self.municipalities(service["id"])):
                ref = normalise_reference((service.get("providedBy") or {}).get("reference", ""))
                if ref:
                    owners.add(ref)
        return owners

    def resolve(self, task: dict[str, Any], patient: dict[str, Any] | None = None) -> str | bool | None:
        """The municipality; True when the patient's district is needed to decide."""
        candidates = sorted({m for s in _services(task) for m in self.municipalities(s)})
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return None
        m = _DESCRIPTION_PLACE.search(task.get("description") or "")
        if m and m["place"] in candidates:
            return m["place"]
        if patient is None:
            return True
        for address in patient.get("address", []):
            district = (address.get("district") or "").strip()
            if district in candidates:
                return district
        return None


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that occurs in the data (the usual choice for reports)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _icpc_group(sr: dict[str, Any]) -> str:
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


ICPC_GROUPS = {
    "Z": "ICPC Z (sociale problemen)",
    "P": "ICPC P (psychische klachten)",
    "other": "Overig / niet gecodeerd",
}


def _aware(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # a date or local time without zone: Dutch local time
        moment = moment.replace(tzinfo=AMSTERDAM)
    return moment.astimezone(UTC)


def _outcome(task: dict[str, Any]) -> str | None:
    """completed | rejected | cancelled | failed | client-declined | no-show, or None while open."""
    status = task.get("status")
    if status not in FINISHED:
        return None
    milestone = _first_code(task.get("businessStatus"), MILESTONES)
    if milestone in DROP_OUT_MILESTONES:
        return milestone
    return str(status)


def _scores(qr: dict[str, Any] | None) -> dict[str, float]:
    scores: dict[str, float] = {}
    for item in (qr or {}).get("item", []):
        if item.get("linkId") in PH_DIMENSIONS:
            for answer in item.get("answer", []):
                value = answer.get("valueInteger", answer.get("valueDecimal"))
                if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10:
                    scores[item["linkId"]] = float(value)
    return scores


def _ph_refs(task: dict[str, Any]) -> dict[str, str]:
    """{'intake'|'closure': QuestionnaireResponse id} from Task.output."""
    found: dict[str, str] = {}
    for out in task.get("output", []):
        codes = [c.get("code") for c in (out.get("type") or {}).get("coding", [])]
        moment = next((PH_OUTPUT_CODES[c] for c in codes if c in PH_OUTPUT_CODES), None)
        ref = normalise_reference((out.get("valueReference") or {}).get("reference", "")) or ""
        if moment and ref.startswith("QuestionnaireResponse/"):
            found[moment] = ref.partition("/")[2]
    return found


NARRATIVE = (
    "Welzijn op Recept - gemeenterapportage {municipality}, {start} t/m {end}. "
    "Cohort: verwijzingen met ServiceRequest.authoredOn in de periode, met hun stand op {today}. "
    "Gemeente: die van de welzijnsdienst waarheen verwezen is (wor-coverage). "
    "Intake: eerste Task-versie met businessStatus intake-held; dagen vanaf de verwijsdatum "
    "(mediaan en p90, nearest rank). Uitval: afgewezen, geannuleerd, mislukt, of afgesloten met "
    "client-declined / no-show. Aantallen onder de {minimum} en scores die op minder dan {minimum} "
    "personen rusten zijn onderdrukt (data-absent-reason 'masked'). Positieve Gezondheid is een "
    "gespreksinstrument, geen gevalideerde meting: de gemiddelde verandering per dimensie is een "
    "indicatie, geen effectmaat."
)


def build_report(
    repo: Repository,
    directory: Directory,
    municipality: str,
    period: Period,
    *,
    profiles_dir: Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Compute the MeasureReport for one municipality and period (suppressed, ready to send)."""
    now = now or datetime.now(UTC)
    session = repo.session
    resolver = MunicipalityResolver(directory)
    owners = sorted(resolver.owners_for(municipality))
    start, end = period.bounds()
    referrals = data.cohort(session, start, end, owners)
    referrals = _in_municipality(session, resolver, referrals, municipality)
    data.add_history(session, referrals)
    data.add_feedback(session, referrals)
    pushes = data.outbox_status(session) if referrals else {}
    qr_ids = {i for r in referrals.values() for i in _ph_refs(r.task).values()}
    questionnaires = data.resources_by_id(session, "QuestionnaireResponse", qr_ids)
    groups = _groups(
        list(referrals.values()), directory, pushes, questionnaires, profiles_dir or Path("profiles")
    )
    return _measure_report(municipality, period, now, groups)


def _patient_id(task: dict[str, Any]) -> str:
    return (normalise_reference((task.get("for") or {}).get("reference", "")) or "").partition("/")[2]


def _in_municipality(
    session: sa.Connection, resolver: MunicipalityResolver, referrals: dict[str, Any], municipality: str
) -> dict[str, Any]:
    """The referrals of this municipality; the patient is read (in bulk) only where the service
    they went to covers several municipalities and the Task does not say which."""
    decided: dict[str, str | bool | None] = {k: resolver.resolve(r.task) for k, r in referrals.items()}
    undecided = {k for k, v in decided.items() if v is True}
    if undecided:
        ids = {_patient_id(referrals[k].task) for k in undecided}
        patients = data.resources_by_id(session, "Patient", ids)
        for k in undecided:
            decided[k] = resolver.resolve(referrals[k].task, patients.get(_patient_id(referrals[k].task), {}))
    wanted = municipality.casefold()
    return {
        k: r
        for k, r in referrals.items()
        if isinstance(decided[k], str) and decided[k].casefold() == wanted  # type: ignore[union-attr]
    }


def _groups(
    referrals: list[Any],
    directory: Directory,
    pushes: dict[str, Any],
    questionnaires: dict[str, dict[str, Any]],
    profiles: Path,
) -> list[dict[str, Any]]:
    """The report's groups in their fixed order (code-system displays read from `profiles`)."""
    return [
        _referrals_group(referrals, directory),
        _accepted_group(referrals),
        *_intake_groups(referrals),
        *_outcome_groups(referrals),
        _activities_group(referrals, _displays(profiles / "CodeSystem-wor-activity-categories.json")),
        _positive_health_group(referrals, questionnaires),
        _feedback_group(referrals, pushes, _displays(profiles / "CodeSystem-wor-feedback-kinds.json")),
    ]


def _measure_report(
    municipality: str, period: Period, now: datetime, groups: list[dict[str, Any]]
) -> dict[str, Any]:
    """The MeasureReport around the groups, with the definitions as its narrative."""
    from fhir_gateway.reports.measure import MIN_CELL

    text = NARRATIVE.format(
        municipality=municipality,
        start=period.start.isoformat(),
        end=period.end.isoformat(),
        today=now.astimezone(AMSTERDAM).date().isoformat(),
        minimum=MIN_CELL,
    )
    return {
        "resourceType": "MeasureReport",
        "id": str(uuid.uuid4()),
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{_xml(text)}</p></div>',
        },
        "extension": [{"url": REPORT_MUNICIPALITY, "valueString": municipality}],
        "status": "complete",
        "type": "summary",
        "measure": MUNICIPALITY_REPORT_MEASURE,
        "date": format_instant(now.astimezone(UTC).replace(tzinfo=None)),
        "reporter": {"display": f"fhir-gateway {__version__} (Welzijn op Recept gateway)"},
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "improvementNotation": {
            "coding": [
                {
                    "system": MEASURE_IMPROVEMENT_NOTATION,
                    "code": "increase",
                }
            ]
        },
        "group": groups,
    }


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _referrals_group(referrals: Any, directory: Directory) -> dict[str, Any]:
    refs = list(referrals)
    practices: Counter[tuple[str, str]] = Counter()
    owners: Counter[tuple[str, str]] = Counter()
    icpc: Counter[str] = Counter()
    for r in refs:
        requester = normalise_reference((r.task.get("requester") or {}).get("reference", "")) or ""
        practice = directory.practice_of(requester)
        practices[
            (f"Organization/{practice['id']}", practice.get("name", ""))
            if practice
            else ("unknown", "Onbekend")
        ] += 1
        owner = normalise_reference((r.task.get("owner") or {}).get("reference", "")) or "unknown"
        org = directory.resolve(owner) or {}
        owners[(owner, org.get("name", owner))] += 1
        icpc[_icpc_group(r.service_request)] += 1
    return group(
        "referrals",
        "Verwijzingen",
        count(len(refs)),
        [
            stratifier(
                "practice", [(concept(None, k, name), count(n)) for (k, name), n in sorted(practices.items())]
            ),
            stratifier(
                "welfare-organization",
                [(concept(None, k, name), count(n)) for (k, name), n in sorted(owners.items())],
            ),
            stratifier(
                "icpc-group",
                [(concept(ICPC, g, ICPC_GROUPS[g]), count(icpc[g])) for g in ("Z", "P", "other") if icpc[g]],
            ),
        ],
    )


def _accepted_group(referrals: Any) -> dict[str, Any]:
    refs = list(referrals)
    accepted = sum(1 for r in refs if r.ever_accepted or r.task.get("status") in data.ACCEPTED_STATES)
    return group("accepted", "Aandeel geaccepteerde verwijzingen", rate(accepted, len(refs)))


def _intake_groups(referrals: Any) -> list[dict[str, Any]]:
    days: list[float] = []
    for r in referrals:
        authored = _aware(r.service_request.get("authoredOn"))
        if r.intake_at is None or authored is None:
            continue
        days.append((r.intake_at.replace(tzinfo=UTC) - authored).total_seconds() / 86400)
    out = []
    for code, display, fn in (
        ("days-to-intake-median", "Dagen van verwijzing tot intake (mediaan)", statistics.median),
        (
            "days-to-intake-p90",
            "Dagen van verwijzing tot intake (90e percentiel)",
            lambda v: _percentile(v, 0.9),
        ),
    ):
        score = round(fn(days), 1) if days else None
        out.append(
            group(code, display, Cell({"measure-population": len(days)}, score, "d", score_n=len(days)))
        )
    return out


def _outcome_groups(referrals: Any) -> list[dict[str, Any]]:
    outcomes = Counter(o for r in referrals if (o := _outcome(r.task)) is not None)
    finished = sum(outcomes.values())
    completed = outcomes["completed"]
    dropped = finished - completed
    reasons = [k for k in ("rejected", "cancelled", "failed", *DROP_OUT_MILESTONES) if outcomes[k]]
    return [
        group("completion", "Afgeronde trajecten (van de beëindigde)", rate(completed, finished)),
        group(
            "drop-out",
            "Uitval (van de beëindigde)",
            rate(dropped, finished),
            [
                stratifier(
                    "reason",
                    [(concept(None, k, k), count(outcomes[k], "numerator")) for k in reasons],
                    "numerator",
                )
            ]
            if reasons
            else None,
        ),
    ]


def _activities_group(referrals: Any, displays: dict[str, str]) -> dict[str, Any]:
    per_category: Counter[str] = Counter()
    with_activity = 0
    refs = list(referrals)
    for r in refs:
        found = {
            code
            for out in r.task.get("output", [])
            if (code := _first_code(out.get("type"), ACTIVITY_CATEGORIES)) is not None
        }
        with_activity += bool(found)
        per_category.update(found)
    strata = [
        (concept(ACTIVITY_CATEGORIES, code, displays.get(code, code)), count(n))
        for code, n in sorted(per_category.items())
    ]
    return group(
        "activity-categories",
        "Gevonden activiteiten (trajecten met een activiteit; per categorie)",
        count(with_activity),
        [stratifier("activity-category", strata)] if strata else None,
    )


def _positive_health_group(referrals: Any, questionnaires: dict[str, dict[str, Any]]) -> dict[str, Any]:
    changes: dict[str, list[float]] = defaultdict(list)
    people = 0
    for r in referrals:
        refs = _ph_refs(r.task)
        if "intake" not in refs or "closure" not in refs:
            continue
        intake, closure = (
            _scores(questionnaires.get(refs["intake"])),
            _scores(questionnaires.get(refs["closure"])),
        )
        pairs = [d for d in PH_DIMENSIONS if d in intake and d in closure]
        people += bool(pairs)
        for d in pairs:
            changes[d].append(closure[d] - intake[d])
    strata = []
    for d in PH_DIMENSIONS:
        values = changes.get(d, [])
        mean = round(statistics.fmean(values), 2) if values else None
        strata.append(
            (
                concept(POSITIVE_HEALTH_DIMENSIONS, d, PH_DISPLAY[d]),
                Cell({"measure-population": len(values)}, mean, "{score}", score_n=len(values)),
            )
        )
    return group(
        "positive-health-change",
        "Positieve Gezondheid: gemiddelde verandering intake → afsluiting per dimensie "
        "(gespreksinstrument, geen gevalideerde meting)",
        count(people, "measure-population"),
        [stratifier("dimension", strata, "measure-population")],
    )


def _feedback_group(referrals: Any, pushes: dict[str, set[str]], displays: dict[str, str]) -> dict[str, Any]:
    sent: Counter[str] = Counter()
    pushed: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    for r in referrals:
        for comm_id, kind in r.feedback:
            sent[kind] += 1
            statuses = pushes.get(f"Communication/{comm_id}")
            if statuses:
                pushed[kind] += 1
                delivered[kind] += "delivered" in statuses
    total_pushed, total_delivered = sum(pushed.values()), sum(delivered.values())
    cell = rate(total_delivered, total_pushed)
    cell.populations = {"initial-population": sum(sent.values()), **cell.populations}
    strata = []
    for kind in sorted(sent):
        c = rate(delivered[kind], pushed[kind])
        c.populations = {"initial-population": sent[kind], **c.populations}
        strata.append((concept(FEEDBACK_KINDS, kind, displays.get(kind, kind)), c))
    return group(
        "feedback-delivery",
        "Terugkoppeling aan de praktijk: verzonden berichten (initial-population), "
        "waarvan gepusht (denominator) en afgeleverd (numerator); niet gepusht = de praktijk haalt zelf op",
        cell,
        [stratifier("feedback-kind", strata)] if strata else None,
    )
