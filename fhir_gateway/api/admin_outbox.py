"""Operators' view of the outbox: list rows by status, put a dead letter back in the queue.

Admin and system principals only (set by the auth middleware on `request.state.principal`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fhir_gateway.delivery import outbox
from fhir_gateway.workflow.context import GatewayContext

FHIR_JSON = "application/fhir+json"


def _outcome(status: int, code: str, text: str) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _forbidden(request: Request) -> JSONResponse | None:
    principal = getattr(request.state, "principal", None)
    if principal is None or getattr(principal, "role", None) not in ("admin", "system"):
        return _outcome(403, "forbidden", "The outbox is for administrators only")
    return None


def build_admin_outbox_api(ctx: GatewayContext) -> APIRouter:
    api = APIRouter()

    @api.get("/admin/outbox")
    def list_outbox(request: Request, status: str | None = None, limit: int = 100) -> Any:
        denied = _forbidden(request)
        if denied is not None:
            return denied
        if status is not None and status not in outbox.STATUSES:
            return _outcome(400, "invalid", f"status must be one of {', '.join(outbox.STATUSES)}")
        with ctx.database.connection(write=False) as conn:
            rows = outbox.list_rows(conn, status, max(1, min(limit, 1000)))
            counts = outbox.counts(conn)
        return JSONResponse({"counts": counts, "rows": rows})

    @api.post("/admin/outbox/{event_id}/retry")
    def retry_outbox(request: Request, event_id: str) -> Any:
        denied = _forbidden(request)
        if denied is not None:
            return denied
        with ctx.database.connection(write=True) as conn:
            changed = outbox.retry(conn, outbox.naive_utc(ctx.clock()), event_id=event_id)
        if not changed:
            return _outcome(404, "not-found", f"No dead or cancelled outbox row {event_id}")
        return JSONResponse({"eventId": event_id, "status": "pending"})

    return api
