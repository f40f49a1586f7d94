"""`/console/referrals`: every referral with its loop as a timeline, filtered and paged.

Only administrators get here, so patient names are shown — never a BSN — and each page view is
written down as an AuditEvent naming the patients on it (NEN 7513), like any other read of
personal data.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.datastructures import QueryParams
from fastapi.responses import Response

from fhir_gateway.api.console import data
from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.web import Console
from fhir_gateway.fhir.search import ascii_int
from fhir_gateway.security import audit
from fhir_gateway.workflow.context import GatewayContext

DEFAULT_PER_PAGE = 25
MAX_AUDITED_PATIENTS = 500


def number(raw: str | None) -> int | None:
    """A non-negative filter or page number in ASCII digits (else None), at most 100 000: an
    age in days past year 1 (OverflowError) or a number past int()'s 4300 digits was a 500."""
    value = ascii_int(raw or "")
    return None if value is None else min(value, 100_000)


def filters_of(q: QueryParams) -> data.Filters:
    """The filter form's fields; an unknown state or a bad number is no filter."""
    return data.Filters(
        practice=q.get("practice", ""),
        welfare=q.get("welfare", ""),
        municipality=q.get("municipality", ""),
        state=q.get("state", "") if q.get("state", "") in data.STAGES else "",
        min_age=number(q.get("min_age")),
        max_age=number(q.get("max_age")),
        page=number(q.get("page")) or 1,
        per_page=number(q.get("per_page")) or DEFAULT_PER_PAGE,
    )


def href(path: str, **params: object) -> str:
    """A link with a query string of the non-empty parameters (the template escapes it)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def pager(base: str, f: data.Filters, result: data.Page) -> dict[str, str] | None:
    """Links to the previous and next page, keeping the filters; None for a single page."""
    if result.pages <= 1:
        return None
    params: dict[str, Any] = {
        "practice": f.practice,
        "welfare": f.welfare,
        "municipality": f.municipality,
        "state": f.state,
        "min_age": f.min_age,
        "max_age": f.max_age,
        "per_page": f.per_page if f.per_page != DEFAULT_PER_PAGE else None,
    }
    return {
        "prev": href(f"{base}/referrals", **params, page=result.page - 1) if result.page > 1 else "",
        "next": href(f"{base}/referrals", **params, page=result.page + 1)
        if result.page < result.pages
        else "",
    }


def audit_view(ctx: GatewayContext, who: sessions.Session, query: str, patients: list[str]) -> None:
    """NEN 7513: the console showed these patients' names to this administrator."""
    if not patients:
        return
    trail = audit.AuditTrail(who.principal, interaction="search-type", query=query)
    for ref in patients:
        if ref not in trail.patients and len(trail.patients) < MAX_AUDITED_PATIENTS:
            trail.patients.append(ref)
    with ctx.database.connection(write=True) as conn:
        audit.write(ctx.repository(conn), trail, 200)


def referrals_page(console: Console, request: Request) -> Response:
    who = console.current(request)
    if who is None:
        return console.to_login(request)
    filters = filters_of(request.query_params)
    ctx = console.ctx
    with ctx.database.connection(write=False) as conn:
        directory = ctx.directory(ctx.repository(conn))
        result = data.referrals(conn, directory, filters, console.clock())
        practices = data.practices(directory)
        welfare = data.welfare_organizations(directory)
        municipalities = [(m, m) for m in data.municipalities(directory)]
    audit_view(ctx, who, "console/referrals", [r.patient_ref for r in result.rows if r.patient_ref])
    return console.page(
        request,
        "referrals.html",
        "Verwijzingen",
        who,
        active="referrals",
        filters=filters,
        practices=practices,
        welfare=welfare,
        municipalities=municipalities,
        states=[(s, data.STAGE_LABELS[s]) for s in data.STAGES[1:]],
        stages=[(s, data.STAGE_LABELS[s]) for s in data.STAGES],
        result=result,
        pager=pager(console.base(request), filters, result),
    )


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/referrals")
    def referrals(request: Request) -> Response:
        return referrals_page(console, request)

    return api
