"""The operator console under `/console`: referrals and their loop, stuck items, report charts.

Server-rendered HTML, no script. The bearer middleware leaves `/console` alone (it is on the
public list); every page here checks its own session cookie instead (see `session.py`) and
sends a strict Content-Security-Policy. Sign-in is throttled per account and source address
with exponential backoff, the counts in the database (`security/login_throttle.py`), and every
attempt — signed in, refused, or held back by the throttle — is an AuditEvent. Only administrators get in, so patient names are
shown — never a BSN — and each referral page view is written down as an AuditEvent naming the
patients on it (NEN 7513), like any other read of personal data.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.api.console import data
from fhir_gateway.api.console import session as sessions
from fhir_gateway.api.console.charts import report_charts
from fhir_gateway.api.console.html import Safe, esc, href, join, layout, options, render
from fhir_gateway.delivery import outbox
from fhir_gateway.fhir.search import ascii_int
from fhir_gateway.observability import request_id_var
from fhir_gateway.rest.request import FhirRequest
from fhir_gateway.security import audit
from fhir_gateway.security.login_throttle import LoginThrottle
from fhir_gateway.workflow.context import GatewayContext

log = logging.getLogger(__name__)

PREFIX = "/console"
STATIC = Path(__file__).resolve().parent / "static"
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
FLASH = {
    "requeued": "De bezorging staat weer in de wachtrij (pending).",
    "notfound": "Geen dode of geannuleerde bezorging met dat id.",
    "csrf": "Het formulier was verlopen; probeer het opnieuw.",
}


def _now() -> datetime:
    return datetime.now(UTC)


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
    if password is None:
        password = settings.console_password
    if password and len(password) < sessions.MIN_PASSWORD_LENGTH:
        log.warning(
            "GATEWAY_CONSOLE_PASSWORD is shorter than %d characters: password sign-in is off",
            sessions.MIN_PASSWORD_LENGTH,
        )
        password = ""
    api = APIRouter(prefix=PREFIX, include_in_schema=False)
    clock = lambda: ctx.clock().astimezone(UTC)  # noqa: E731  (tests move ctx.clock)
    throttle = LoginThrottle(clock=clock)

    # -- plumbing ---------------------------------------------------------------------------------
    def tokens(request: Request) -> Any:
        return request.app.state.tokens  # set by install_auth

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + PREFIX

    def current(request: Request) -> sessions.Session | None:
        return sessions.verify(tokens(request), request.cookies.get(sessions.SESSION_COOKIE))

    def page(
        request: Request,
        title: str,
        body: Safe,
        who: sessions.Session | None,
        *,
        active: str = "",
        flash: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        markup = layout(
            base(request),
            title,
            body,
            active=active,
            who=who.subject if who else None,
            csrf=who.csrf if who else "",
            flash=flash,
        )
        return HTMLResponse(markup, status_code=status, headers=SECURITY_HEADERS)

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"{base(request)}/login?next={quote(target, safe='')}", 303, headers=SECURITY_HEADERS
        )

    def safe_next(request: Request, target: str | None) -> str:
        """Only our own console paths: no open redirect."""
        prefix = base(request) + "/"
        if target and target.startswith(prefix) and "//" not in target and "\\" not in target:
            return target
        return f"{base(request)}/referrals"

    def same_origin(request: Request) -> bool:
        """Browsers send Origin on POST; it must be this host (SameSite=Strict is the other half)."""
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def form(request: Request) -> dict[str, str]:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return {}
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return {}

    def refused(request: Request, status: int, text: str) -> HTMLResponse:
        body = render(
            '<p class="error">{text}</p><p><a href="{base}/login">Inloggen</a></p>',
            text=text,
            base=base(request),
        )
        return page(request, "Geen toegang", body, None, status=status)

    # -- sign in / out -------------------------------------------------------------------------------
    @api.get("")
    @api.get("/")
    def root(request: Request) -> Response:
        return RedirectResponse(f"{base(request)}/referrals", 303, headers=SECURITY_HEADERS)

    @api.get("/static/console.css")
    def stylesheet() -> Response:
        css = (
            (STATIC / "console.css").read_text(encoding="utf-8") if (STATIC / "console.css").is_file() else ""
        )
        return Response(
            css,
            media_type="text/css",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    def login_page(request: Request, next_url: str, error: str = "", status: int = 200) -> HTMLResponse:
        password_field = (
            Safe(
                '<label>Consolewachtwoord <input type="password" name="password" autocomplete="current-password">'
                "</label>"
            )
            if password
            else Safe("")
        )
        body = render(
            """<form class="login" method="post" action="{base}/login">
<p>Log in met het access token van een beheerder (<code>fhir-gateway token gateway-admin</code>)
{or_password}.</p>
<label>Access token <textarea name="token" rows="4" autocomplete="off" spellcheck="false"></textarea></label>
{password_field}
<input type="hidden" name="next" value="{next}">
<button type="submit">Inloggen</button>
{error}
</form>""",
            base=base(request),
            or_password=" of met het consolewachtwoord" if password else "",
            password_field=password_field,
            next=safe_next(request, next_url),
            error=render('<p class="error" role="alert">{e}</p>', e=error) if error else "",
        )
        return page(request, "Inloggen", body, None, status=status)

    @api.get("/login")
    def login_form(request: Request, next: str = "") -> Response:
        return login_page(request, next)

    def sign_in_audit(conn: Any, account: str, address: str, ok: bool, detail: str, verified: bool) -> None:
        rid = request_id_var.get()
        event = audit.login_event(
            account,
            succeeded=ok,
            detail=detail,
            address=address,
            request_id=rid if rid != "-" else None,
            verified=verified,
        )
        ctx.repository(conn).create(event)

    def held_back(account: str, address: str) -> int:
        """Seconds this account must wait from this address; a refusal is audited too."""
        with ctx.database.connection(write=False) as conn:
            wait = throttle.wait(conn, account, address)
        if wait:
            with ctx.database.connection(write=True) as conn:
                sign_in_audit(conn, account, address, False, f"refused unchecked: locked for {wait} s", False)
        return wait

    def settle(account: str, address: str, ok: bool, detail: str) -> int:
        """Record the outcome of a checked attempt: counters and AuditEvent in one transaction."""
        with ctx.database.connection(write=True) as conn:
            wait = 0
            if ok:
                throttle.succeeded(conn, account, address)
            else:
                wait = throttle.failed(conn, account, address)
            sign_in_audit(conn, account, address, ok, detail, ok)
        return wait

    @api.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        next_url = safe_next(request, fields.get("next"))
        if not same_origin(request):
            return login_page(request, next_url, "Verzoek van een andere herkomst geweigerd.", 403)
        token = fields.get("token", "").strip()
        given = fields.get("password", "")
        if not token and not given:  # nothing tried: nothing to count
            return login_page(request, next_url, "Geef een wachtwoord of een token op.", 401)
        address = request.client.host if request.client else "-"
        account = sessions.claimed_client(token) if token else sessions.PASSWORD_SUBJECT
        wait = await run_in_threadpool(held_back, account, address)
        if wait:
            ctx.metrics.throttled.labels("console").inc()
            log.warning(
                "console sign-in held back: %s from %s for %d s",
                account,
                address,
                wait,
                extra={"event": "auth"},
            )
            response = login_page(request, next_url, _too_many(wait), 429)
            response.headers["Retry-After"] = str(wait)
            return response
        subject = None
        try:
            if token:
                subject = sessions.subject_for_token(tokens(request), token)
            elif sessions.check_password(given, password):
                subject = sessions.PASSWORD_SUBJECT
            else:
                raise sessions.LoginRefused("Onjuist wachtwoord of geen token opgegeven.")
        except sessions.LoginRefused as exc:
            log.warning(
                "console sign-in refused: %s (%s from %s)", exc, account, address, extra={"event": "auth"}
            )
            await run_in_threadpool(settle, account, address, False, f"refused: {exc}")
            return login_page(request, next_url, str(exc), 401)
        await run_in_threadpool(settle, subject, address, True, "signed in")
        cookie, _ = sessions.issue(tokens(request), subject, session_seconds)
        response = RedirectResponse(next_url, 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            sessions.SESSION_COOKIE,
            cookie,
            max_age=session_seconds,
            path=base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        log.info("console sign-in by %s from %s", subject, address, extra={"event": "auth"})
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        who = current(request)
        fields = await form(request)
        if who is None or not sessions.csrf_ok(who, fields.get("csrf")) or not same_origin(request):
            return refused(
                request, 401 if who is None else 403, "Uitloggen mislukt: sessie of formulier ongeldig."
            )
        response = RedirectResponse(f"{base(request)}/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(sessions.SESSION_COOKIE, path=base(request), httponly=True, samesite="strict")
        return response

    # -- referrals ------------------------------------------------------------------------------------
    @api.get("/referrals")
    def referrals(request: Request) -> Response:
        who = current(request)
        if who is None:
            return to_login(request)
        q = request.query_params
        filters = data.Filters(
            practice=q.get("practice", ""),
            welfare=q.get("welfare", ""),
            municipality=q.get("municipality", ""),
            state=q.get("state", "") if q.get("state", "") in data.STAGES else "",
            min_age=_int(q.get("min_age")),
            max_age=_int(q.get("max_age")),
            page=_int(q.get("page")) or 1,
            per_page=_int(q.get("per_page")) or 25,
        )
        now = clock()
        with ctx.database.connection(write=False) as conn:
            directory = ctx.directory(ctx.repository(conn))
            result = data.referrals(conn, directory, filters, now)
            choices = (
                data.practices(directory),
                data.welfare_organizations(directory),
                data.municipalities(directory),
            )
        _audit(ctx, who, "console/referrals", [r.patient_ref for r in result.rows if r.patient_ref])
        fhir = _fhir_base(request)
        body = join(
            [
                _filter_form(base(request), filters, *choices),
                _referral_table(result, fhir),
                _pager(base(request), filters, result),
            ]
        )
        return page(request, "Verwijzingen", body, who, active="referrals")

    # -- stuck ----------------------------------------------------------------------------------------
    @api.get("/stuck")
    def stuck(request: Request, done: str = "") -> Response:
        who = current(request)
        if who is None:
            return to_login(request)
        now = clock()
        with ctx.database.connection(write=False) as conn:
            directory = ctx.directory(ctx.repository(conn))
            overdue = data.overdue_intakes(conn, directory, now)
            dead = data.dead_letters(conn)
            counts = data.outbox_counts(conn)
            refused_total, refusals = data.refused_referrals(conn)
        body = join(
            [
                _overdue_table(overdue, _fhir_base(request)),
                _dead_table(base(request), dead, counts, who.csrf),
                _refused_table(refused_total, refusals),
            ]
        )
        return page(request, "Vastgelopen", body, who, active="stuck", flash=FLASH.get(done, ""))

    @api.post("/outbox/{event_id}/requeue")
    async def requeue(request: Request, event_id: str) -> Response:
        who = current(request)
        if who is None:
            return refused(request, 401, "Log eerst in.")
        fields = await form(request)
        if not sessions.csrf_ok(who, fields.get("csrf")) or not same_origin(request):
            return refused(request, 403, "Formulier ongeldig (CSRF).")

        def run() -> int:
            with ctx.database.connection(write=True) as conn:
                return outbox.retry(conn, outbox.naive_utc(ctx.clock()), event_id=event_id)

        changed = await run_in_threadpool(run)
        log.info(
            "console requeue %s by %s: %d row(s)", event_id, who.subject, changed, extra={"event": "outbox"}
        )
        done = "requeued" if changed else "notfound"
        return RedirectResponse(f"{base(request)}/stuck?done={done}", 303, headers=SECURITY_HEADERS)

    # -- reports --------------------------------------------------------------------------------------
    @api.get("/reports")
    def reports(request: Request, municipality: str = "", period: str = "") -> Response:
        who = current(request)
        if who is None:
            return to_login(request)
        period = period.strip() or str(clock().year)
        with ctx.database.connection(write=False) as conn:
            choices = data.municipalities(ctx.directory(ctx.repository(conn)))
        form_html = render(
            """<form class="filters" method="get" action="{base}/reports">
<label>Gemeente <select name="municipality">{options}</select></label>
<label>Periode <input name="period" value="{period}" placeholder="2026, 2026-Q3, 2026-05"></label>
<button type="submit">Toon</button></form>""",
            base=base(request),
            options=options([("", "— kies —"), *((m, m) for m in choices)], municipality),
            period=period,
        )
        result = Safe("")
        if municipality:
            req = FhirRequest(
                "GET",
                "$wor-report",
                params=[("municipality", municipality), ("period", period)],
                principal=who.principal,
                base_url=_fhir_base(request),
            )
            response = request.app.state.router.handle(req)
            if response.status == 200 and (response.body or {}).get("resourceType") == "MeasureReport":
                result = join(
                    [
                        render(
                            '<p class="note">MeasureReport {start} t/m {end}, opgehaald via $wor-report.</p>',
                            start=(response.body or {}).get("period", {}).get("start", "?"),
                            end=(response.body or {}).get("period", {}).get("end", "?"),
                        ),
                        report_charts(response.body or {}),
                    ]
                )
            else:
                issues = "; ".join(
                    str(i.get("diagnostics", "")) for i in (response.body or {}).get("issue", [])
                )
                result = render(
                    '<p class="error">$wor-report antwoordde {s}: {d}</p>', s=response.status, d=issues
                )
        return page(request, "Rapportage gemeente", join([form_html, result]), who, active="reports")

    return api


# -- rendering helpers ---------------------------------------------------------------------------------
def _too_many(seconds: int) -> str:
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


def _int(raw: str | None) -> int | None:
    """A non-negative filter or page number in ASCII digits (else None), at most 100 000: an
    age in days past year 1 (OverflowError) or a number past int()'s 4300 digits was a 500."""
    value = ascii_int(raw or "")
    return None if value is None else min(value, 100_000)


def _fhir_base(request: Request) -> str:
    configured = str(getattr(request.app.state, "base_url", "") or "")
    return configured or str(request.base_url).rstrip("/") + "/fhir"


def _audit(ctx: GatewayContext, who: sessions.Session, query: str, patients: list[str]) -> None:
    """NEN 7513: the console showed these patients' names to this administrator."""
    if not patients:
        return
    trail = audit.AuditTrail(who.principal, interaction="search-type", query=query)
    for ref in patients:
        if ref not in trail.patients and len(trail.patients) < 500:
            trail.patients.append(ref)
    with ctx.database.connection(write=True) as conn:
        audit.write(ctx.repository(conn), trail, 200)


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else ""


def _filter_form(
    base: str,
    f: data.Filters,
    practices: list[tuple[str, str]],
    welfare: list[tuple[str, str]],
    municipalities: list[str],
) -> Safe:
    return render(
        """<form class="filters" method="get" action="{base}/referrals">
<label>Praktijk <select name="practice">{practices}</select></label>
<label>Welzijnsorganisatie <select name="welfare">{welfare}</select></label>
<label>Gemeente <select name="municipality">{municipalities}</select></label>
<label>Stand <select name="state">{states}</select></label>
<label>Leeftijd ≥ <input name="min_age" type="number" min="0" value="{min_age}" size="4"> dagen</label>
<label>≤ <input name="max_age" type="number" min="0" value="{max_age}" size="4"> dagen</label>
<button type="submit">Filter</button> <a href="{base}/referrals">wis filters</a>
</form>""",
        base=base,
        practices=options([("", "alle"), *practices], f.practice),
        welfare=options([("", "alle"), *welfare], f.welfare),
        municipalities=options([("", "alle"), *((m, m) for m in municipalities)], f.municipality),
        states=options([("", "alle"), *((s, data.STAGE_LABELS[s]) for s in data.STAGES[1:])], f.state),
        min_age="" if f.min_age is None else f.min_age,
        max_age="" if f.max_age is None else f.max_age,
    )


def _timeline(row: data.ReferralRow) -> Safe:
    items = []
    for stage in data.STAGES:
        moment = row.timeline.get(stage)
        label = data.STAGE_LABELS[stage]
        if stage == "closed" and moment is not None:
            label = f"{label} ({row.status})"
        items.append(
            render(
                '<li class="{cls}" title="{when}">{label}</li>',
                cls="done" if moment else "todo",
                when=_fmt(moment) or "nog niet",
                label=label,
            )
        )
    return render('<ol class="timeline">{items}</ol>', items=join(items))


def _feedback_list(row: data.ReferralRow, fhir: str) -> Safe:
    if not row.feedback:
        return Safe('<span class="muted">geen</span>')
    return render(
        '<ul class="feedback">{items}</ul>',
        items=join(
            render(
                '<li><a href="{url}">{kind}</a> <span class="delivery {delivery}">{label}</span></li>',
                url=f"{fhir}/{fb.communication}",
                kind=fb.kind,
                delivery=fb.delivery,
                label="haalt praktijk op" if fb.delivery == "poll" else fb.delivery,
            )
            for fb in row.feedback
        ),
    )


def _referral_table(result: data.Page, fhir: str) -> Safe:
    if not result.rows:
        return Safe('<p class="empty">Geen verwijzingen met deze filters.</p>')
    rows = join(
        render(
            """<tr data-task="{task}" data-stage="{stage}">
<td>{referred}<br><span class="muted">{age} dagen</span></td>
<td>{patient}</td><td>{practice}</td><td>{welfare}</td><td>{municipality}</td>
<td><span class="status">{status}</span><br><span class="muted">{business}</span><br>
<span class="muted">intake vóór {due}</span></td>
<td>{timeline}</td><td>{feedback}</td>
<td><a href="{fhir}/Task/{task}">Task</a><br><a href="{fhir}/ServiceRequest/{sr}">ServiceRequest</a><br>
<a href="{fhir}/Task/{task}/_history">historie</a></td></tr>""",
            task=r.task_id,
            stage=r.stage,
            referred=_fmt(r.referred),
            age="?" if r.age_days is None else r.age_days,
            patient=r.patient or "—",
            practice=r.practice,
            welfare=r.welfare,
            municipality=r.municipality,
            status=r.status,
            business=r.business,
            due=r.intake_due,
            timeline=_timeline(r),
            feedback=_feedback_list(r, fhir),
            fhir=fhir,
            sr=r.service_request,
        )
        for r in result.rows
    )
    return render(
        """<p class="count">{total} verwijzing(en)</p>
<table class="referrals"><thead><tr><th>Verwezen</th><th>Patiënt</th><th>Praktijk</th><th>Welzijn</th>
<th>Gemeente</th><th>Status</th><th>Tijdlijn</th><th>Terugkoppeling</th><th>FHIR</th></tr></thead>
<tbody>{rows}</tbody></table>""",
        total=result.total,
        rows=rows,
    )


def _pager(base: str, f: data.Filters, result: data.Page) -> Safe:
    if result.pages <= 1:
        return Safe("")
    params = {
        "practice": f.practice,
        "welfare": f.welfare,
        "municipality": f.municipality,
        "state": f.state,
        "min_age": f.min_age,
        "max_age": f.max_age,
        "per_page": f.per_page if f.per_page != 25 else None,
    }
    links = []
    if result.page > 1:
        links.append(
            render(
                '<a rel="prev" href="{u}">← vorige</a>',
                u=href(f"{base}/referrals", **params, page=result.page - 1),
            )
        )
    links.append(render("<span>pagina {p} van {n}</span>", p=result.page, n=result.pages))
    if result.page < result.pages:
        links.append(
            render(
                '<a rel="next" href="{u}">volgende →</a>',
                u=href(f"{base}/referrals", **params, page=result.page + 1),
            )
        )
    return render('<nav class="pager">{links}</nav>', links=join(links, " "))


def _overdue_table(overdue: list[data.Overdue], fhir: str) -> Safe:
    rows = join(
        render(
            '<tr><td><a href="{fhir}/Task/{task}">{task}</a></td><td>{status}</td><td>{welfare}</td>'
            "<td>{practice}</td><td>{due}</td><td>{over}</td></tr>",
            fhir=fhir,
            task=o.task_id,
            status=o.status,
            welfare=o.welfare,
            practice=o.practice,
            due=o.intake_due,
            over=o.days_over,
        )
        for o in overdue
    )
    return render(
        """<section id="overdue"><h2>Intake over tijd ({n})</h2>
<p class="note">Taken die nog requested/received zijn na het einde van hun intakevenster (Task.restriction.period.end).</p>
{table}</section>""",
        n=len(overdue),
        table=render(
            "<table><thead><tr><th>Task</th><th>Status</th><th>Welzijn</th><th>Praktijk</th><th>Intake vóór</th>"
            "<th>Dagen te laat</th></tr></thead><tbody>{rows}</tbody></table>",
            rows=rows,
        )
        if overdue
        else Safe('<p class="empty">Geen.</p>'),
    )


def _dead_table(base: str, dead: list[dict[str, Any]], counts: dict[str, int], csrf: str) -> Safe:
    rows = join(
        render(
            """<tr data-event="{event}"><td>{event}</td><td>{kind}</td><td>{destination}</td><td>{subject}</td>
<td>{attempts}</td><td>{created}</td><td class="err">{error}</td>
<td><form method="post" action="{base}/outbox/{event}/requeue"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Opnieuw in de wachtrij</button></form></td></tr>""",
            event=row["eventId"],
            kind=row["kind"],
            destination=row["destination"],
            subject=row.get("subject") or "",
            attempts=row["attempts"],
            created=row["createdAt"],
            error=row.get("lastError") or "",
            base=base,
            csrf=csrf,
        )
        for row in dead
    )
    summary = join((render("<li>{k}: {v}</li>", k=k, v=v) for k, v in sorted(counts.items())))
    return render(
        """<section id="dead"><h2>Onbezorgd: dode brieven ({n})</h2>
<ul class="figures">{summary}</ul>{table}</section>""",
        n=len(dead),
        summary=summary,
        table=render(
            "<table><thead><tr><th>Event</th><th>Soort</th><th>Bestemming</th><th>Onderwerp</th><th>Pogingen</th>"
            "<th>Aangemaakt</th><th>Laatste fout</th><th></th></tr></thead><tbody>{rows}</tbody></table>",
            rows=rows,
        )
        if dead
        else Safe('<p class="empty">Geen.</p>'),
    )


def _refused_table(total: int, refusals: list[data.Refusal]) -> Safe:
    rows = join(
        render(
            "<tr><td>{when}</td><td>{channel}</td><td>{who}</td><td>{detail}</td></tr>",
            when=r.when,
            channel=r.channel,
            who=r.who,
            detail=r.detail,
        )
        for r in refusals
    )
    return render(
        """<section id="refused"><h2>Geweigerde verwijzingen ({n})</h2>
<p class="note">Een 422 (bijv. geen aanbieder voor het adres) slaat niets op. Geteld worden de AuditEvents van
mislukte creates (outcome 4) door huisartsclients en HL7 v2-berichten met ACK AE/AR; de reden staat niet in
het AuditEvent.</p>{table}</section>""",
        n=total,
        table=render(
            "<table><thead><tr><th>Wanneer</th><th>Kanaal</th><th>Afzender</th><th>Wat</th></tr></thead>"
            "<tbody>{rows}</tbody></table>",
            rows=rows,
        )
        if refusals
        else Safe('<p class="empty">Geen.</p>'),
    )


__all__ = ["PREFIX", "build_console_api", "esc"]
