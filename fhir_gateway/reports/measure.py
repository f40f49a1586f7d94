"""MeasureReport building blocks with small-number suppression, and the CSV view of a report.

Every published count below `MIN_CELL` is replaced by a data-absent-reason `masked`, as is every
score derived from too few people (a rate whose numerator or complement is small, a mean or
percentile over fewer than `MIN_CELL`). Within a stratifier, a single masked stratum would be
recoverable from the total, so the next smallest stratum is masked too (complementary
suppression). The CSV is flattened from the finished MeasureReport, so it cannot show more.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from fhir_gateway.vocabulary import DATA_ABSENT_REASON, MEASURE_POPULATION, REPORT_MEASURES, UCUM

MIN_CELL = 5
MASKED = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}


@dataclass
class Cell:
    """One stratum or group: its populations and an optional score, before suppression.

    `score_n` is how many people the score rests on; `score_parts` the counts a rate reveals
    (numerator and its complement)."""

    populations: dict[str, int] = field(default_factory=dict)
    score: float | None = None
    unit: str | None = None  # "%" | "d" | "{score}" | None
    score_n: int | None = None
    score_parts: tuple[int, ...] = ()
    masked: set[str] = field(default_factory=set)  # population codes forced masked

    def score_masked(self) -> bool:
        n = self.score_n if self.score_n is not None else min(self.populations.values(), default=0)
        return n < MIN_CELL or any(p < MIN_CELL for p in self.score_parts)


def rate(numerator: int, denominator: int) -> Cell:
    """A percentage; masked when the numerator or the rest of the denominator is small."""
    score = round(100.0 * numerator / denominator, 1) if denominator else None
    return Cell(
        {"numerator": numerator, "denominator": denominator},
        score,
        "%",
        score_n=denominator,
        score_parts=(numerator, denominator - numerator),
    )


def count(n: int, code: str = "initial-population") -> Cell:
    return Cell({code: n})


def suppress_strata(cells: list[Cell], code: str) -> None:
    """Complementary suppression: if exactly one stratum's count is small, mask the next smallest."""
    small = [c for c in cells if c.populations.get(code, 0) < MIN_CELL]
    if len(small) != 1:
        return
    rest = sorted((c for c in cells if c not in small), key=lambda c: c.populations.get(code, 0))
    if rest:
        rest[0].masked.add(code)


def _population(code: str, n: int, masked: bool) -> dict[str, Any]:
    pop: dict[str, Any] = {"code": {"coding": [{"system": MEASURE_POPULATION, "code": code}]}}
    if masked or n < MIN_CELL:
        pop["_count"] = MASKED
    else:
        pop["count"] = n
    return pop


def _score(cell: Cell) -> dict[str, Any] | None:
    if cell.score is None and not cell.populations:
        return None
    if cell.unit is None:
        return None
    if cell.score is None or cell.score_masked() or cell.masked:
        return dict(MASKED)
    quantity: dict[str, Any] = {"value": cell.score, "system": UCUM}
    quantity["unit"], quantity["code"] = {"%": ("%", "%"), "d": ("days", "d")}.get(
        cell.unit, (cell.unit, cell.unit)
    )
    return quantity


def render_cell(cell: Cell) -> dict[str, Any]:
    """The `population` + `measureScore` part of a group or stratum."""
    out: dict[str, Any] = {
        "population": [_population(k, v, k in cell.masked) for k, v in cell.populations.items()]
    }
    score = _score(cell)
    if score is not None:
        out["measureScore"] = score
    return out


def concept(system: str | None, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system:
        coding = {"system": system, **coding}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code}


def group(
    code: str, display: str, cell: Cell, stratifiers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"code": concept(REPORT_MEASURES, code, display), **render_cell(cell)}
    if stratifiers:
        out["stratifier"] = list(stratifiers)
    return out


def stratifier(
    code: str, strata: list[tuple[dict[str, Any], Cell]], main: str = "initial-population"
) -> dict[str, Any]:
    """A stratifier whose strata are (value CodeableConcept, cell); complementary suppression on `main`."""
    suppress_strata([c for _, c in strata], main)
    return {
        "code": [{"text": code}],
        "stratum": [{"value": value, **render_cell(cell)} for value, cell in strata],
    }


# -- CSV ---------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "measure",
    "stratifier",
    "stratum",
    "stratum_display",
    "initial_population",
    "numerator",
    "denominator",
    "measure_population",
    "score",
    "unit",
)
SUPPRESSED = "suppressed"


def _row(measure: str, strat: str, value: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, str]:
    row = dict.fromkeys(CSV_COLUMNS, "")
    row["measure"], row["stratifier"] = measure, strat
    if value:
        coding = (value.get("coding") or [{}])[0]
        row["stratum"] = coding.get("code", value.get("text", ""))
        row["stratum_display"] = coding.get("display") or value.get("text", "")
    for pop in part.get("population", []):
        column = pop["code"]["coding"][0]["code"].replace("-", "_")
        if column in row:
            row[column] = str(pop["count"]) if "count" in pop else SUPPRESSED
    score = part.get("measureScore")
    if score is not None:
        row["score"] = str(score["value"]) if "value" in score else SUPPRESSED
        row["unit"] = score.get("code", "")
    return row


def to_csv(report: dict[str, Any]) -> str:
    """One row per group and per stratum, read back from the (already suppressed) MeasureReport."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for grp in report.get("group", []):
        measure = grp["code"]["coding"][0]["code"]
        writer.writerow(_row(measure, "", None, grp))
        for strat in grp.get("stratifier", []):
            name = strat["code"][0].get("text", "")
            for stratum in strat.get("stratum", []):
                writer.writerow(_row(measure, name, stratum.get("value"), stratum))
    return buffer.getvalue()
