"""What every console page shares: the session check, the page frame, forms, redirects.

One `Console` per router build holds the gateway context and the sign-in settings, so the page
modules in `pages/` stay plain functions of (console, request). Every response carries the strict
security headers: the console is server-rendered HTML with no script, and says so in its CSP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.templating import render
from fhir_gateway.security.login_throttle import LoginThrottle
from fhir_gateway.workflow.context import GatewayContext

PREFIX = "/console"
MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null`
    "Cache-Control": "no-store",
}
NAV = (
    ("referrals", "Verwijzingen"),
    ("search", "Zoeken"),
    ("stuck", "Vastgelopen"),
    ("reports", "Rapportage"),
)


@dataclass
class Console:
    """The gateway context plus sign-in settings, shared by the page modules."""

    ctx: GatewayContext
    password: str
    session_seconds: int
    throttle: LoginThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle(clock=self.clock)

    def clock(self) -> datetime:
        """The gateway clock in UTC, read on every call (tests move `ctx.clock`)."""
        return self.ctx.clock().astimezone(UTC)

    def router(self) -> APIRouter:
        """A page module's router: under /console, and not in the OpenAPI document."""
        return APIRouter(prefix=PREFIX, include_in_schema=False)

    def tokens(self, request: Request) -> Any:
        return request.app.state.tokens  # set by install_auth

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + PREFIX

    def current(self, request: Request) -> sessions.Session | None:
        return sessions.verify(self.tokens(request), request.cookies.get(sessions.SESSION_COOKIE))

    def page(
        self,
        request: Request,
        template: str,
        title: str,
        who: sessions.Session | None,
        *,
        active: str = "",
        flash: str = "",
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        """A whole page: `template` extends layout.html, which adds the nav for a signed-in user."""
        markup = render(
            template,
            base=self.base(request),
            title=title,
            nav=NAV,
            active=active,
            who=who.subject if who else None,
            csrf=who.csrf if who else "",
            flash=flash,
            **values,
        )
        return HTMLResponse(markup, status_code=status, headers=SECURITY_HEADERS)

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        """303 to a console path (after a POST, or from `/console` itself)."""
        return RedirectResponse(f"{self.base(request)}{path}", 303, headers=SECURITY_HEADERS)

    def to_login(self, request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.redirect(request, f"/login?next={quote(target, safe='')}")

    def safe_next(self, request: Request, target: str | None) -> str:
        """Only our own console paths: no open redirect."""
        prefix = self.base(request) + "/"
        if target and target.startswith(prefix) and "//" not in target and "\\" not in target:
            return target
        return f"{self.base(request)}/referrals"

    def refused(self, request: Request, status: int, text: str) -> HTMLResponse:
        return self.page(request, "refused.html", "Geen toegang", None, status=status, text=text)


def same_origin(request: Request) -> bool:
    """Browsers send Origin on POST; it must be this host (SameSite=Strict is the other half)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form; anything oversized or undecodable reads as an empty form."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return {}
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


def fhir_base(request: Request) -> str:
    """The FHIR base of requests the console makes through the router (the report): GATEWAY_BASE_URL,
    else this host's /fhir. Pages never link there: a browser has no bearer token."""
    configured = str(getattr(request.app.state, "base_url", "") or "")
    return configured or str(request.base_url).rstrip("/") + "/fhir"
