"""`POST /console/outbox/{event_id}/requeue`: put a dead letter back in the delivery queue.

A state change, so it needs the session, the session's CSRF value and our own origin; the
answer is a redirect to the stuck page with a flash message (post/redirect/get).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.web import Console, read_form, same_origin
from fhir_gateway.delivery import outbox

log = logging.getLogger(__name__)


def requeue_dead_letter(console: Console, event_id: str) -> int:
    """Rows moved back to pending (0: no dead or cancelled delivery with that id)."""
    ctx = console.ctx
    with ctx.database.connection(write=True) as conn:
        return outbox.retry(conn, outbox.naive_utc(ctx.clock()), event_id=event_id)


async def requeue(console: Console, request: Request, event_id: str) -> Response:
    who = console.current(request)
    if who is None:
        return console.refused(request, 401, "Log eerst in.")
    fields = await read_form(request)
    if not sessions.csrf_ok(who, fields.get("csrf")) or not same_origin(request):
        return console.refused(request, 403, "Formulier ongeldig (CSRF).")
    changed = await run_in_threadpool(requeue_dead_letter, console, event_id)
    log.info("console requeue %s by %s: %d row(s)", event_id, who.subject, changed, extra={"event": "outbox"})
    return console.redirect(request, f"/stuck?done={'requeued' if changed else 'notfound'}")


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.post("/outbox/{event_id}/requeue")
    async def requeue_route(request: Request, event_id: str) -> Response:
        return await requeue(console, request, event_id)

    return api
