"""`fhir-gateway report --municipality … --period … [--csv] [--base-url URL]`."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from fhir_gateway.commands.common import existing_context, settings_of
from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.reports.measure import to_csv


def _local_report(click_ctx: click.Context, municipality: str, period: str) -> dict[str, Any]:
    """Straight from the database, as the gateway itself (same code as `$wor-report`)."""
    from fhir_gateway.reports.municipality import build_report, parse_period

    settings = settings_of(click_ctx)
    period_range = parse_period(period)  # a bad period is said before the database is opened
    ctx = existing_context(settings)
    try:
        with ctx.database.connection(write=False) as session:
            repo = ctx.repository(session)
            return build_report(
                repo,
                ctx.directory(repo),
                municipality,
                period_range,
                profiles_dir=Path(settings.profiles_dir),
                now=ctx.clock(),
            )
    finally:
        ctx.close()


def _remote_report(base_url: str, token: str | None, municipality: str, period: str) -> dict[str, Any]:
    headers = {"accept": "application/fhir+json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(base_url=base_url.rstrip("/"), timeout=120) as client:
            resp = client.get(
                "/$wor-report", params={"municipality": municipality, "period": period}, headers=headers
            )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise click.ClickException(f"cannot reach the gateway at {base_url}: {exc}") from None
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        raise click.ClickException(f"{resp.status_code} from {base_url}, not JSON: {resp.text[:200]}") from None
    body = body if isinstance(body, dict) else {}
    if resp.status_code != 200:
        detail = "; ".join(i.get("diagnostics", "") for i in body.get("issue", [])) or resp.text[:200]
        raise click.ClickException(f"{resp.status_code} from the gateway: {detail}")
    return body


def _delimiter(value: str) -> str:
    value = "\t" if value.lower() in ("tab", "\\t") else value
    if len(value) != 1 or value in ('"', "\r", "\n"):
        raise click.BadParameter("one character (not a quote or a line break), or 'tab'")
    return value


def with_delimiter(text: str, delimiter: str) -> str:
    """The same CSV with another separator; fields holding it (or quotes) are quoted anew."""
    if delimiter == ",":
        return text
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerows(csv.reader(io.StringIO(text)))
    return out.getvalue()


@click.command("report")
@click.option("--municipality", required=True, help="Municipality name, e.g. Nieuwegein.")
@click.option("--period", required=True, help="2026, 2026-Q4, 2026-03 or 2026-01-01/2026-12-31.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per measure and stratum.")
@click.option(
    "--delimiter",
    default=",",
    show_default=True,
    callback=lambda _c, _p, v: _delimiter(v),
    help="CSV field separator: one character, or 'tab'. Dutch Excel opens ';' directly.",
)
@click.option(
    "--base-url", default=None, help="Ask a running gateway (FHIR base URL) instead of the database."
)
@click.option("--token", envvar="GATEWAY_ACCESS_TOKEN", default=None, help="Bearer token for --base-url.")
@click.pass_context
def report(
    click_ctx: click.Context,
    municipality: str,
    period: str,
    as_csv: bool,
    delimiter: str,
    base_url: str | None,
    token: str | None,
) -> None:
    """Municipality report (MeasureReport JSON or CSV); small numbers are suppressed."""
    try:
        result = (
            _remote_report(base_url, token, municipality, period)
            if base_url
            else _local_report(click_ctx, municipality, period)
        )
    except FhirError as exc:
        raise click.ClickException(exc.message) from exc
    if as_csv:
        sys.stdout.write(with_delimiter(to_csv(result), delimiter))
    else:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
