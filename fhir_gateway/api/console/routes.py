"""The operator console under `/console`: referrals and their loop, stuck items, report charts.

Server-rendered HTML (Jinja2 templates in `templates/`, autoescaped), no script. The bearer
middleware leaves `/console` alone (it is on the public list); every page checks its own session
cookie instead (see `session.py`) and sends a strict Content-Security-Policy (`web.py`). Each
concern is a module in `pages/`; this module only reads the sign-in settings and includes them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.pages import home, login, outbox, referral, referrals, reports, search, stuck
from fhir_gateway.api.console.web import PREFIX, Console
from fhir_gateway.workflow.context import GatewayContext

log = logging.getLogger(__name__)

PAGES = (home, login, referrals, referral, search, stuck, outbox, reports)


def console_password(configured: str) -> str:
    """The password sign-in accepts: "" (token sign-in only) when unset or too short to be safe."""
    if configured and len(configured) < sessions.MIN_PASSWORD_LENGTH:
        log.warning(
            "GATEWAY_CONSOLE_PASSWORD is shorter than %d characters: password sign-in is off",
            sessions.MIN_PASSWORD_LENGTH,
        )
        return ""
    return configured or ""


def build_console_api(
    ctx: GatewayContext,
    settings: Any = None,
    *,
    password: str | None = None,
    session_seconds: int = sessions.DEFAULT_SESSION_SECONDS,
) -> APIRouter:
    """The console routes. The password is `settings.console_password` (GATEWAY_CONSOLE_PASSWORD);
    without one only admin-token sign-in works."""
    settings = settings or ctx.settings
    configured = settings.console_password if password is None else password
    console = Console(ctx, console_password(configured), session_seconds)
    api = APIRouter(include_in_schema=False)
    for page in PAGES:
        api.include_router(page.routes(console))  # each is under PREFIX already (Console.router)
    return api


__all__ = ["PREFIX", "build_console_api"]
