"""`/console/stuck`: what needs a person — overdue intakes, dead letters, refused referrals."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_gateway.api.console import data
from fhir_gateway.api.console.web import Console

FLASH = {
    "requeued": "De bezorging staat weer in de wachtrij.",
    "notfound": "Geen dode of geannuleerde bezorging met dat id.",
    "csrf": "Het formulier was verlopen; probeer het opnieuw.",
}


def stuck_page(console: Console, request: Request, done: str) -> Response:
    """The three lists; `done` names the flash message after a requeue (see pages/outbox.py)."""
    who = console.current(request)
    if who is None:
        return console.to_login(request)
    ctx = console.ctx
    with ctx.database.connection(write=False) as conn:
        directory = ctx.directory(ctx.repository(conn))
        overdue = data.overdue_intakes(conn, directory, console.clock())
        dead = data.dead_letters(conn)
        counts = data.outbox_counts(conn)
        refused_total, refusals = data.refused_referrals(conn)
    return console.page(
        request,
        "stuck.html",
        "Vastgelopen",
        who,
        active="stuck",
        flash=FLASH.get(done, ""),
        overdue=overdue,
        dead=dead,
        counts=sorted(counts.items()),
        refused_total=refused_total,
        refusals=refusals,
    )


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/stuck")
    def stuck(request: Request, done: str = "") -> Response:
        return stuck_page(console, request, done)

    return api
