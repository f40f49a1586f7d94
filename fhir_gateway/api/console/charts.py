"""Server-side SVG bar charts of the municipality MeasureReport (no chart library, no script).

Reads the MeasureReport generically — every group's populations and score, every stratifier
as one horizontal bar chart — so new measures appear without a console change. Suppressed
cells (data-absent-reason `masked`, fewer than 5 people) are drawn as an empty, labelled stub,
never as zero. Colours are SVG presentation attributes, so the console's strict CSP holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_gateway.api.console.html import Safe, join, render
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


def bar_chart(title: str, bars: list[Bar]) -> Safe:
    """Horizontal bars; negative values extend left of the zero line."""
    if not bars:
        return Safe("")
    values = [b.value for b in bars if b.value is not None]
    low, high = min([0.0, *values]), max([0.0, *values])
    span = (high - low) or 1.0
    plot_w = WIDTH - LABEL_W - VALUE_W
    zero_x = LABEL_W + (0 - low) / span * plot_w
    height = ROW_H * len(bars) + 8
    rows = []
    for i, bar in enumerate(bars):
        y = 4 + i * ROW_H
        if bar.value is None:
            shape = render(
                '<rect x="{x}" y="{y}" width="36" height="16" fill="none" stroke="#999" stroke-dasharray="3 2"/>',
                x=f"{zero_x:.1f}",
                y=y + 2,
            )
        else:
            x1 = LABEL_W + (min(bar.value, 0) - low) / span * plot_w
            w = abs(bar.value) / span * plot_w
            shape = render(
                '<rect x="{x}" y="{y}" width="{w}" height="16" fill="{fill}"/>',
                x=f"{x1:.1f}",
                y=y + 2,
                w=f"{max(w, 1):.1f}",
                fill=NEG_COLOUR if bar.value < 0 else BAR_COLOUR,
            )
        rows.append(
            render(
                "<g><title>{label}: {text}</title>"
                '<text x="{lx}" y="{ty}" text-anchor="end" font-size="12">{short}</text>{shape}'
                '<text x="{vx}" y="{ty}" font-size="12">{text}</text></g>',
                label=bar.label,
                short=bar.label if len(bar.label) <= 38 else bar.label[:36] + "…",
                text=bar.text,
                lx=LABEL_W - 8,
                ty=y + 15,
                vx=WIDTH - VALUE_W + 6,
                shape=shape,
            )
        )
    axis = render(
        '<line x1="{x}" y1="0" x2="{x}" y2="{h}" stroke="#444" stroke-width="1"/>',
        x=f"{zero_x:.1f}",
        h=height,
    )
    return render(
        '<figure class="chart"><figcaption>{title}</figcaption>'
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{title}" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" font-family="sans-serif">{axis}{rows}</svg></figure>',
        title=title,
        w=WIDTH,
        h=height,
        axis=axis,
        rows=join(rows),
    )


def report_charts(report: dict[str, Any]) -> Safe:
    """One section per MeasureReport group: its figures, then a chart per stratifier."""
    sections = []
    overview = []
    for group in report.get("group", []):
        title = _title(group.get("code"))
        if "measureScore" not in group and "_measureScore" not in group:  # counts only: one scale
            overview.append(Bar(title, *_score(group)))
        figures = join(
            render(
                "<li>{code}: {count}</li>",
                code=_population_code(pop),
                count=pop["count"]
                if "count" in pop
                else ("onderdrukt (<5)" if _masked(pop.get("_count")) else "-"),
            )
            for pop in group.get("population", [])
        )
        charts = []
        for strat in group.get("stratifier", []):
            name = ", ".join(_title(c) for c in strat.get("code", [])) or "strata"
            bars = [Bar(_title(s.get("value")), *_score(s)) for s in strat.get("stratum", [])]
            charts.append(bar_chart(f"{title} — per {name}", bars))
        sections.append(
            render(
                '<section class="measure"><h3>{title}</h3><ul class="figures">{figures}</ul>{charts}</section>',
                title=title,
                figures=figures,
                charts=join(charts),
            )
        )
    head = bar_chart("Overzicht: aantallen", overview)
    return join([head, *sections])
