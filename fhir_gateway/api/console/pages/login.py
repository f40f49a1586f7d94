"""Sign in and out: throttled per account and address, every attempt an AuditEvent.

The throttle is asked before the credential is checked, so a held-back guess never reaches the
password comparison; a checked attempt updates the counters and writes its AuditEvent in one
transaction (NEN 7513: the account and address, never the password or token).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.web import SECURITY_HEADERS, Console, read_form, same_origin
from fhir_gateway.observability import request_id_var
from fhir_gateway.security import audit

log = logging.getLogger(__name__)


def too_many(seconds: int) -> str:
    """The Dutch answer to a throttled sign-in, with the wait in words."""
    if seconds < 60:
        wait = "1 seconde" if seconds == 1 else f"{seconds} seconden"
    else:
        minutes = -(-seconds // 60)
        wait = "1 minuut" if minutes == 1 else f"{minutes} minuten"
    return (
        f"Te veel mislukte inlogpogingen vanaf dit adres. Om veiligheidsredenen is inloggen tijdelijk "
        f"geblokkeerd; probeer het over {wait} opnieuw."
    )


def login_page(
    console: Console, request: Request, next_url: str, error: str = "", status: int = 200
) -> HTMLResponse:
    return console.page(
        request,
        "login.html",
        "Inloggen",
        None,
        status=status,
        password_enabled=bool(console.password),
        next=console.safe_next(request, next_url),
        error=error,
    )


def _audit_sign_in(conn: Any, console: Console, account: str, address: str, ok: bool, detail: str) -> None:
    rid = request_id_var.get()
    event = audit.login_event(
        account,
        succeeded=ok,
        detail=detail,
        address=address,
        request_id=rid if rid != "-" else None,
        verified=ok,
    )
    console.ctx.repository(conn).create(event)


def held_back(console: Console, account: str, address: str) -> int:
    """Seconds this account must wait from this address; a refusal is audited too."""
    database = console.ctx.database
    with database.connection(write=False) as conn:
        wait = console.throttle.wait(conn, account, address)
    if wait:
        with database.connection(write=True) as conn:
            _audit_sign_in(conn, console, account, address, False, f"refused unchecked: locked for {wait} s")
    return wait


def settle(console: Console, account: str, address: str, ok: bool, detail: str) -> int:
    """Record the outcome of a checked attempt: counters and AuditEvent in one transaction."""
    with console.ctx.database.connection(write=True) as conn:
        wait = 0
        if ok:
            console.throttle.succeeded(conn, account, address)
        else:
            wait = console.throttle.failed(conn, account, address)
        _audit_sign_in(conn, console, account, address, ok, detail)
    return wait


def _check_credential(console: Console, request: Request, token: str, given: str) -> str:
    """The session subject for a token or the password; raises `LoginRefused` otherwise."""
    if token:
        return sessions.subject_for_token(console.tokens(request), token)
    if sessions.check_password(given, console.password):
        return sessions.PASSWORD_SUBJECT
    raise sessions.LoginRefused("Onjuist wachtwoord of geen token opgegeven.")


def _held_back_page(
    console: Console, request: Request, next_url: str, account: str, address: str, wait: int
) -> Response:
    """429 with Retry-After, before any credential check; counted so operators see guessing."""
    console.ctx.metrics.throttled.labels("console").inc()
    log.warning(
        "console sign-in held back: %s from %s for %d s", account, address, wait, extra={"event": "auth"}
    )
    response = login_page(console, request, next_url, too_many(wait), 429)
    response.headers["Retry-After"] = str(wait)
    return response


def _start_session(console: Console, request: Request, subject: str, next_url: str) -> Response:
    """The session cookie (HttpOnly, SameSite=Strict, Path=/console) and the way on."""
    cookie, _ = sessions.issue(console.tokens(request), subject, console.session_seconds)
    response = RedirectResponse(next_url, 303, headers=SECURITY_HEADERS)
    response.set_cookie(
        sessions.SESSION_COOKIE,
        cookie,
        max_age=console.session_seconds,
        path=console.base(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def sign_in(console: Console, request: Request) -> Response:
    """Origin check, throttle, credential, then the session — in that order."""
    fields = await read_form(request)
    next_url = console.safe_next(request, fields.get("next"))
    if not same_origin(request):
        return login_page(console, request, next_url, "Verzoek van een andere herkomst geweigerd.", 403)
    token = fields.get("token", "").strip()
    given = fields.get("password", "")
    if not token and not given:  # nothing tried: nothing to count
        return login_page(console, request, next_url, "Geef een wachtwoord of een token op.", 401)
    address = request.client.host if request.client else "-"
    account = sessions.claimed_client(token) if token else sessions.PASSWORD_SUBJECT
    wait = await run_in_threadpool(held_back, console, account, address)
    if wait:
        return _held_back_page(console, request, next_url, account, address, wait)
    try:
        subject = _check_credential(console, request, token, given)
    except sessions.LoginRefused as exc:
        log.warning(
            "console sign-in refused: %s (%s from %s)", exc, account, address, extra={"event": "auth"}
        )
        await run_in_threadpool(settle, console, account, address, False, f"refused: {exc}")
        return login_page(console, request, next_url, str(exc), 401)
    await run_in_threadpool(settle, console, subject, address, True, "signed in")
    log.info("console sign-in by %s from %s", subject, address, extra={"event": "auth"})
    return _start_session(console, request, subject, next_url)


async def sign_out(console: Console, request: Request) -> Response:
    """Needs the session, its CSRF value and our origin; deletes the cookie."""
    who = console.current(request)
    fields = await read_form(request)
    if who is None or not sessions.csrf_ok(who, fields.get("csrf")) or not same_origin(request):
        return console.refused(
            request, 401 if who is None else 403, "Uitloggen mislukt: sessie of formulier ongeldig."
        )
    response = console.redirect(request, "/login")
    response.delete_cookie(
        sessions.SESSION_COOKIE, path=console.base(request), httponly=True, samesite="strict"
    )
    return response


def routes(console: Console) -> APIRouter:
    api = console.router()

    @api.get("/login")
    def login_form(request: Request, next: str = "") -> Response:
        return login_page(console, request, next)

    @api.post("/login")
    async def login(request: Request) -> Response:
        return await sign_in(console, request)

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        return await sign_out(console, request)

    return api
