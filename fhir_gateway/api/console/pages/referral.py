"""`/console/referrals/{id}`: one referral's whole loop on one page.

The ServiceRequest, every version of its Task (who wrote it, when), the CarePlan, the feedback
Communications with each delivery attempt (outbox), the HL7 v2 messages of the journal and the
AuditEvents that name any of them. Every list in the console links here; links stay inside the
console (a `/fhir` link needs a bearer token a browser does not have). Each view is audited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_gateway.api.console import data
from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.web import Console
from fhir_gateway.security import audit
from fhir_gateway.workflow.context import GatewayContext


def audit_loop(ctx: GatewayContext, who: sessions.Session, loop: data.Loop) -> None:
    """NEN 7513: this administrator saw this referral's loop (and so its patient)."""
    trail = audit.AuditTrail(who.principal, interaction="read")
    trail.entities.extend(loop.references[:400])
    if loop.patient_ref.startswith("Patient/"):
        trail.patients.append(loop.patient_ref)
    with ctx.database.connection(write=True) as conn:
        audit.write(ctx.repository(conn), trail, 200)


def referral_page(console: Console, request: Request, sr_id: str) -> Response:
    who = console.current(request)
    if who is None:
        return console.to_login(request)
    ctx = console.ctx
    with ctx.database.connection(write=False) as conn:
        loop = data.referral_loop(conn, ctx.directory(ctx.repository(conn)), sr_id[:64])
    if loop is None:
        return console.page(
            request, "notfound.html", "Verwijzing niet gevonden", who, active="referrals", status=404
        )
    audit_loop(ctx, who, loop)
    return console.page(
        request,
        "referral.html",
        f"Verwijzing {loop.number or loop.sr_id}",
        who,
        active="referrals",
        referral=loop,
    )


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/referrals/{sr_id}")
    def referral(request: Request, sr_id: str) -> Response:
        return referral_page(console, request, sr_id)

    return api
