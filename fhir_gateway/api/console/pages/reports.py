"""`/console/reports`: the municipality report as charts, read through `$wor-report`.

The console asks the FHIR router as the signed-in administrator, so the report (and its
suppression of small numbers) is exactly what the API gives; the console only draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from fhir_gateway.api.console import data
from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.charts import report_charts
from fhir_gateway.api.console.web import Console, fhir_base
from fhir_gateway.rest.request import FhirRequest


@dataclass
class ReportView:
    """What the page shows of a `$wor-report` answer: its period and charts, or the error."""

    start: str = "?"
    end: str = "?"
    charts: Markup = field(default_factory=Markup)
    error: str = ""


def fetch_report(request: Request, who: sessions.Session, municipality: str, period: str) -> ReportView:
    """`$wor-report` through the router, as the signed-in administrator."""
    req = FhirRequest(
        "GET",
        "$wor-report",
        params=[("municipality", municipality), ("period", period)],
        principal=who.principal,
        base_url=fhir_base(request),
    )
    response = request.app.state.router.handle(req)
    body = response.body or {}
    if response.status == 200 and body.get("resourceType") == "MeasureReport":
        span = body.get("period", {})
        return ReportView(span.get("start", "?"), span.get("end", "?"), report_charts(body))
    issues = "; ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))
    return ReportView(error=f"$wor-report antwoordde {response.status}: {issues}")


def reports_page(console: Console, request: Request, municipality: str, period: str) -> Response:
    who = console.current(request)
    if who is None:
        return console.to_login(request)
    period = period.strip() or str(console.clock().year)
    ctx = console.ctx
    with ctx.database.connection(write=False) as conn:
        choices = data.municipalities(ctx.directory(ctx.repository(conn)))
    report = fetch_report(request, who, municipality, period) if municipality else None
    return console.page(
        request,
        "reports.html",
        "Rapportage gemeente",
        who,
        active="reports",
        municipalities=[(m, m) for m in choices],
        municipality=municipality,
        period=period,
        report=report,
    )


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/reports")
    def reports(request: Request, municipality: str = "", period: str = "") -> Response:
        return reports_page(console, request, municipality, period)

    return api
