"""`/console` itself and the stylesheet: the only console routes that need no session."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_gateway.api.console.web import Console

STATIC = Path(__file__).resolve().parents[1] / "static"


def stylesheet() -> Response:
    """console.css, cacheable for five minutes (the CSP allows only same-origin styles)."""
    path = STATIC / "console.css"
    css = path.read_text(encoding="utf-8") if path.is_file() else ""
    return Response(
        css,
        media_type="text/css",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("")
    @api.get("/")
    def root(request: Request) -> Response:
        return console.redirect(request, "/referrals")

    api.add_api_route("/static/console.css", stylesheet, methods=["GET"])
    return api
