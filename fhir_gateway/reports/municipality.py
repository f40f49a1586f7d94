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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway import __version__
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.searchparams import format_instant, normalise_reference
from fhir_gateway.mapping.dates import dutch_naive_utc
from fhir_gateway.reports import data
from fhir_gateway.reports.data import Referral
from fhir_gateway.reports.measure import Cell, concept, count, group, rate, stratifier
from fhir_gateway.reports.read_model import ACCEPTED_STATES, DROP_OUT_MILESTONES
from fhir_gateway.routing import Directory
from fhir_gateway.store.repository import Repository
from fhir_gateway.vocabulary import (
    ACTIVITY_CATEGORIES,
    AMSTERDAM,
    FEEDBACK_KINDS,
    ICPC,
    MEASURE_IMPROVEMENT_NOTATION,
    MUNICIPALITY_REPORT_MEASURE,
    PH_DIMENSIONS,
    POSITIVE_HEALTH_DIMENSIONS,
    REPORT_MUNICIPALITY,
)

PH_DISPLAY = {
    "lichaamsfuncties": "Lichaamsfuncties",
    "mentaalWelbevinden": "Mentaal welbevinden",
    "zingeving": "Zingeving",
    "kwaliteitVanLeven": "Kwaliteit van leven",
    "meedoen": "Meedoen",
    "dagelijksFunctioneren": "Dagelijks functioneren",
}
REPORT_ROLES = frozenset({"admin", "system", "municipality"})


@dataclass(frozen=True)
class Period:
    """Inclusive Dutch calendar dates; `bounds()` gives the naive-UTC half-open range the store keeps."""

    start: date
    end: date

    def bounds(self) -> tuple[datetime, datetime]:
        def utc(d: date) -> datetime:
            return dutch_naive_utc(datetime(d.year, d.month, d.day))

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

    def resolve(
        self, services: list[str], place: str | None, patient: dict[str, Any] | None = None
    ) -> str | bool | None:
        """The municipality of a referral routed to `services` whose Task.description ends in
        `place`; True when the patient's district is needed to decide."""
        candidates = sorted({m for s in services for m in self.municipalities(s)})
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return None
        if place and place in candidates:
            return place
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


ICPC_GROUPS = {
    "Z": "ICPC Z (sociale problemen)",
    "P": "ICPC P (psychische klachten)",
    "other": "Overig / niet gecodeerd",
}


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
    found, task_ids = data.cohort(session, start, end, owners)
    referrals = list(_in_municipality(session, resolver, found, municipality))
    feedback = data.feedback_counts(session, task_ids, referrals, start, end, owners)
    profiles = profiles_dir or Path("profiles")
    groups = [
        _referrals_group(referrals, directory),
        _accepted_group(referrals),
        *_intake_groups(referrals),
        *_outcome_groups(referrals),
        _activities_group(referrals, _displays(profiles / "CodeSystem-wor-activity-categories.json")),
        _positive_health_group(referrals),
        _feedback_group(feedback, _displays(profiles / "CodeSystem-wor-feedback-kinds.json")),
    ]
    return _measure_report(municipality, period, now, groups)


@lru_cache(maxsize=4096)
def _json_list(text: str | None) -> tuple[str, ...]:
    """A JSON list column (text): few distinct values among many rows, so decoded once each."""
    return tuple(orjson.loads(text)) if text else ()


def _in_municipality(
    session: sa.Connection, resolver: MunicipalityResolver, referrals: dict[str, Referral], municipality: str
) -> Iterator[Referral]:
    """The referrals of this municipality; the patient is read (in bulk) only where the service
    they went to covers several municipalities and the Task does not say which."""
    by_route: dict[tuple[str, str | None], str | bool | None] = {}
    decided: list[tuple[Referral, str | bool | None]] = []
    for r in referrals.values():
        route = (r.services, r.place)
        if route not in by_route:
            by_route[route] = resolver.resolve(list(_json_list(r.services)), r.place)
        decided.append((r, by_route[route]))
    undecided = [r for r, v in decided if v is True]
    patients = data.patients_of(session, undecided) if undecided else {}
    wanted = municipality.casefold()
    for r, v in decided:
        if v is True:
            v = resolver.resolve(list(_json_list(r.services)), r.place, patients.get(r.task_pk, {}))
        if isinstance(v, str) and v.casefold() == wanted:
            yield r


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
    by_requester: Counter[str] = Counter(r.requester or "" for r in refs)  # a few practices, many rows
    by_owner: Counter[str] = Counter(r.owner or "unknown" for r in refs)
    icpc: Counter[str] = Counter(r.icpc_group for r in refs)
    for requester, n in by_requester.items():
        practice = directory.practice_of(requester)
        practices[
            (f"Organization/{practice['id']}", practice.get("name", "")) if practice else ("unknown", "Onbekend")
        ] += n
    for owner, n in by_owner.items():
        org = directory.resolve(owner) or {}
        owners[(owner, org.get("name", owner))] += n
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
    accepted = sum(1 for r in refs if r.ever_accepted or r.status in ACCEPTED_STATES)
    return group("accepted", "Aandeel geaccepteerde verwijzingen", rate(accepted, len(refs)))


def _intake_groups(referrals: Any) -> list[dict[str, Any]]:
    days: list[float] = []
    for r in referrals:
        if r.intake_at is None or r.authored_at is None:
            continue
        days.append((r.intake_at - r.authored_at).total_seconds() / 86400)
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
    outcomes = Counter(r.outcome for r in referrals if r.outcome is not None)
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
        found = _json_list(r.activities)
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


def _positive_health_group(referrals: Any) -> dict[str, Any]:
    changes: dict[str, list[float]] = defaultdict(list)
    people = 0
    for r in referrals:
        if r.intake_scores is None or r.closure_scores is None:
            continue
        intake, closure = orjson.loads(r.intake_scores), orjson.loads(r.closure_scores)
        paired = False
        for d, before, after in zip(PH_DIMENSIONS, intake, closure, strict=True):
            if before is not None and after is not None:
                changes[d].append(after - before)
                paired = True
        people += paired
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


def _feedback_group(counts: dict[str, list[int]], displays: dict[str, str]) -> dict[str, Any]:
    sent = Counter({kind: c[0] for kind, c in counts.items()})
    pushed = Counter({kind: c[1] for kind, c in counts.items()})
    delivered = Counter({kind: c[2] for kind, c in counts.items()})
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
