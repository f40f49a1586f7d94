"""`fhir-gateway outbox list|retry|purge` and `fhir-gateway worker`."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from typing import Any

import click
import orjson

from fhir_gateway.commands.common import (
    database_error,
    existing_context,
    metrics_option,
    serve_metrics,
    settings_of,
)
from fhir_gateway.delivery import outbox

log = logging.getLogger("fhir_gateway.worker")


def _context(click_ctx: click.Context, *, schema: bool = True) -> Any:
    """On the existing database only: the outbox of a database that is not there is no news."""
    from fhir_gateway.delivery import events

    ctx = existing_context(settings_of(click_ctx), schema=schema)
    events.install(ctx)
    return ctx


@click.group("outbox")
def outbox_group() -> None:
    """Inspect and repair the delivery outbox."""


@outbox_group.command("list")
@click.option("--status", type=click.Choice(outbox.STATUSES), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_command(click_ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    """Newest rows first, with attempts and the last error."""
    ctx = _context(click_ctx)
    try:
        with ctx.database.connection(write=False) as conn:
            rows = outbox.list_rows(conn, status, limit)
            counts = outbox.counts(conn)
    finally:
        ctx.close()
    for row in rows:
        if as_json:
            click.echo(orjson.dumps(row).decode())
        else:
            click.echo(
                f"{row['eventId']}  {row['status']:<10} {row['kind']:<9} attempts={row['attempts']:<3} "
                f"{row['destination']}  {row['lastError'] or ''}"
            )
    click.echo(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "outbox empty", err=True)


@outbox_group.command("retry")
@click.argument("event_id", required=False)
@click.option("--all-dead", is_flag=True, help="Every dead letter.")
@click.pass_context
def retry_command(click_ctx: click.Context, event_id: str | None, all_dead: bool) -> None:
    """Put a dead letter (or all of them) back in the queue with a fresh attempt budget."""
    if bool(event_id) == all_dead:
        raise click.UsageError("give an EVENT_ID or --all-dead")
    ctx = _context(click_ctx)
    try:
        with ctx.database.connection(write=True) as conn:
            n = outbox.retry(conn, outbox.naive_utc(ctx.clock()), event_id=event_id, all_dead=all_dead)
    finally:
        ctx.close()
    if event_id and not n:
        raise click.ClickException(f"no dead or cancelled row {event_id}")
    click.echo(f"{n} row(s) queued again")


@outbox_group.command("purge")
@click.option("--delivered-older-than", "days", type=int, required=True, help="Days.")
@click.pass_context
def purge_command(click_ctx: click.Context, days: int) -> None:
    """Delete delivered rows older than DAYS (the subscription event log stays for $events)."""
    ctx = _context(click_ctx)
    try:
        with ctx.database.connection(write=True) as conn:
            n = outbox.purge(conn, outbox.naive_utc(ctx.clock()) - timedelta(days=days))
    finally:
        ctx.close()
    click.echo(f"{n} row(s) purged")


@click.command("worker")
@click.option("--once", is_flag=True, help="One pass (timers, heartbeats, one batch), then exit.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds to wait when idle.")
@click.option("--batch", type=int, default=None, help="Rows claimed per pass.")
@metrics_option()
@click.pass_context
def worker_command(
    click_ctx: click.Context, once: bool, interval: float, batch: int | None, metrics_port: int
) -> None:
    """Deliver the outbox and fire workflow timers; run one per replica (they share safely)."""
    from fhir_gateway.delivery.worker import Worker
    from fhir_gateway.observability import configure_logging

    ctx = _context(click_ctx, schema=False)
    configure_logging(ctx.settings.log_level, ctx.settings.log_json)  # like serve and mllp
    worker = Worker(ctx, batch=batch)
    try:
        if once:
            try:
                delivered = worker.run_once()
            except Exception as exc:  # an unreachable or unmigrated database: one line, exit 1
                raise database_error(exc, "the worker pass") from exc
            click.echo(f"{delivered} delivered")
            return
        serve_metrics(ctx, metrics_port)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        log.info("worker started: %d row(s) per pass, %.1f s between idle passes", worker.batch, interval)
        worker.run_forever(stop, interval)
    finally:
        worker.close()
        ctx.close()
