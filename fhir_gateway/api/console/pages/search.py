"""`/console/search`: find a referral by its number (ServiceRequest.identifier) or by BSN.

A referral number is no personal data and is searched with GET. A BSN is: it is posted (never in
a URL, the browser history or an access log), needs the session's CSRF value and our origin, is
never shown back, and every BSN search is an AuditEvent naming the operator and the patients
found (NEN 7513) — also a search that found nobody.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.api.console import data
from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.pages.referrals import audit_view
from fhir_gateway.api.console.web import Console, read_form, same_origin
from fhir_gateway.security import audit
from fhir_gateway.vocabulary import BSN
from fhir_gateway.workflow.context import GatewayContext


def search_number(ctx: GatewayContext, number: str) -> list[data.Hit]:
    with ctx.database.connection(write=False) as conn:
        return data.find_by_number(conn, number[:64])


def search_bsn(ctx: GatewayContext, who: sessions.Session, bsn: str) -> list[data.Hit]:
    """The referrals of the patient with this BSN; the search is audited whatever it found."""
    with ctx.database.connection(write=False) as conn:
        patients, hits = data.find_by_bsn(conn, bsn)
    trail = audit.AuditTrail(
        who.principal, interaction="search-type", query=f"console/search Patient?identifier={BSN}|{bsn}"
    )
    trail.patients.extend(patients[:100])
    with ctx.database.connection(write=True) as conn:
        audit.write(ctx.repository(conn), trail, 200)
    return hits


def show(console: Console, request: Request, who: sessions.Session, **values: object) -> Response:
    defaults: dict[str, object] = {"number": "", "hits": None, "kind": "", "error": ""}
    return console.page(request, "search.html", "Zoeken", who, active="search", **{**defaults, **values})


def number_page(console: Console, request: Request, number: str) -> Response:
    who = console.current(request)
    if who is None:
        return console.to_login(request)
    number = number.strip()
    if not number:
        return show(console, request, who)
    hits = search_number(console.ctx, number)
    audit_view(
        console.ctx, who, "console/search number", [f"Patient/{h.patient_id}" for h in hits if h.patient_id]
    )
    return show(console, request, who, number=number, hits=hits, kind="number")


async def bsn_page(console: Console, request: Request) -> Response:
    who = console.current(request)
    if who is None:
        return console.refused(request, 401, "Log eerst in.")
    fields = await read_form(request)
    if not sessions.csrf_ok(who, fields.get("csrf")) or not same_origin(request):
        return console.refused(request, 403, "Formulier ongeldig (CSRF).")
    bsn = "".join(ch for ch in fields.get("bsn", "") if ch.isdigit() and ch.isascii())
    if len(bsn) != 9:
        return show(console, request, who, kind="bsn", error="Een BSN heeft 9 cijfers.")
    hits = await run_in_threadpool(search_bsn, console.ctx, who, bsn)
    return show(console, request, who, hits=hits, kind="bsn")


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/search")
    def search(request: Request, number: str = "") -> Response:
        return number_page(console, request, number)

    @api.post("/search")
    async def search_post(request: Request) -> Response:
        return await bsn_page(console, request)

    return api
