"""Server-side SVG bar charts of the municipality MeasureReport (no chart library, no script).

Reads the MeasureReport generically — every group's populations and score, every stratifier
as one horizontal bar chart — so new measures appear without a console change. Suppressed
cells (data-absent-reason `masked`, fewer than 5 people) are drawn as an empty, labelled stub,
never as zero. Colours are SVG presentation attributes, so the console's strict CSP holds.
The geometry is worked out here; `templates/charts.html` writes the SVG, escaping every label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from fhir_gateway.api.console.templating import render
from fhir_gateway.vocabulary import DATA_ABSENT_REASON

WIDTH = 680
LABEL_W = 250
VALUE_W = 90
ROW_H = 24
BAR_COLOUR = "#2f6f8f"
NEG_COLOUR = "#b5523b"


@dataclass
class Bar:
    label: str
    value: float | None  # None = suppressed
    text: str


@dataclass
class Row:
    """One bar as drawn: `fill` empty for a suppressed cell (a dashed stub at the zero line)."""

    label: str
    short: str
    text: str
    x: str
    y: int
    width: str
    fill: str
    text_y: int


@dataclass
class Chart:
    title: str
    height: int
    zero_x: str
    rows: list[Row]
    width: int = WIDTH
    label_x: int = LABEL_W - 8
    value_x: int = WIDTH - VALUE_W + 6


@dataclass
class Section:
    """A MeasureReport group: its population figures and a chart per stratifier."""

    title: str
    figures: list[tuple[str, object]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)


def _masked(element: dict[str, Any] | None) -> bool:
    return any(e.get("url") == DATA_ABSENT_REASON for e in (element or {}).get("extension", []))


def _title(concept: dict[str, Any] | None) -> str:
    concept = concept or {}
    if concept.get("text"):
        return str(concept["text"])
    coding = (concept.get("coding") or [{}])[0]
    return str(coding.get("display") or coding.get("code") or "?")


def _population_code(pop: dict[str, Any]) -> str:
    return str(((pop.get("code") or {}).get("coding") or [{}])[0].get("code") or "population")


def _score(element: dict[str, Any]) -> tuple[float | None, str]:
    """(value, text) of a measureScore, or of the first population count when there is no score."""
    score = element.get("measureScore")
    if score is not None or "_measureScore" in element:
        if score is None or _masked(score) or _masked(element.get("_measureScore")) or "value" not in score:
            return None, "onderdrukt (<5)"
        value = float(score["value"])
        unit = score.get("unit") or score.get("code") or ""
        return value, f"{value:g} {unit}".strip()
    for pop in element.get("population", []):
        if "count" in pop:
            return float(pop["count"]), str(pop["count"])
        if _masked(pop.get("_count")):
            return None, "onderdrukt (<5)"
    return None, "-"


def bar_chart(title: str, bars: list[Bar]) -> Chart | None:
    """Horizontal bars; negative values extend left of the zero line. None without bars."""
    if not bars:
        return None
    values = [b.value for b in bars if b.value is not None]
    low, high = min([0.0, *values]), max([0.0, *values])
    span = (high - low) or 1.0
    plot_w = WIDTH - LABEL_W - VALUE_W
    zero_x = LABEL_W + (0 - low) / span * plot_w
    rows = []
    for i, bar in enumerate(bars):
        y = 4 + i * ROW_H
        short = bar.label if len(bar.label) <= 38 else bar.label[:36] + "…"
        if bar.value is None:
            x, width, fill = f"{zero_x:.1f}", "36", ""
        else:
            x = f"{LABEL_W + (min(bar.value, 0) - low) / span * plot_w:.1f}"
            width = f"{max(abs(bar.value) / span * plot_w, 1):.1f}"
            fill = NEG_COLOUR if bar.value < 0 else BAR_COLOUR
        rows.append(Row(bar.label, short, bar.text, x, y + 2, width, fill, y + 15))
    return Chart(title, ROW_H * len(bars) + 8, f"{zero_x:.1f}", rows)


def _figure(pop: dict[str, Any]) -> tuple[str, object]:
    """(population code, count) — a suppressed count says so, a missing one is "-"."""
    if "count" in pop:
        return _population_code(pop), pop["count"]
    return _population_code(pop), "onderdrukt (<5)" if _masked(pop.get("_count")) else "-"


def report_charts(report: dict[str, Any]) -> Markup:
    """One section per MeasureReport group: its figures, then a chart per stratifier."""
    sections = []
    overview = []
    for group in report.get("group", []):
        section = Section(_title(group.get("code")))
        if "measureScore" not in group and "_measureScore" not in group:  # counts only: one scale
            overview.append(Bar(section.title, *_score(group)))
        section.figures = [_figure(pop) for pop in group.get("population", [])]
        for strat in group.get("stratifier", []):
            name = ", ".join(_title(c) for c in strat.get("code", [])) or "strata"
            bars = [Bar(_title(s.get("value")), *_score(s)) for s in strat.get("stratum", [])]
            chart = bar_chart(f"{section.title} — per {name}", bars)
            if chart is not None:
                section.charts.append(chart)
        sections.append(section)
    return render("charts.html", overview=bar_chart("Overzicht: aantallen", overview), sections=sections)
