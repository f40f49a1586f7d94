"""The `fhir-gateway` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import httpx
import orjson

from fhir_gateway import __version__
from fhir_gateway.delivery import events as delivery_events
from fhir_gateway.malloc import limit_arenas
from fhir_gateway.observability import configure_logging, multiprocess_metrics
from fhir_gateway.settings import Settings

log = logging.getLogger("fhir_gateway.cli")


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="GATEWAY_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL; default sqlite under ./var/ (postgresql+psycopg://… to scale).",
)
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Welzijn op Recept referral gateway (FHIR R4 + HL7 v2)."""
    ctx.ensure_object(dict)
    ctx.obj["settings"] = Settings.from_env(database_url=database_url)


@main.command()
def version() -> None:
    """Print the gateway version."""
    click.echo(f"fhir-gateway {__version__}")


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or upgrade the schema to the newest migration."""
    from fhir_gateway.store.database import Database

    database = Database(_settings(ctx).database_url)
    try:
        database.upgrade()
        click.echo(f"schema at revision {database.current_revision()}")
    except Exception as exc:
        raise click.ClickException(f"upgrade failed: {type(exc).__name__}: {exc}") from exc
    finally:
        database.dispose()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes")
@click.option("--no-examples", is_flag=True, help="Do not load examples/directory into an empty database.")
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Deliver the outbox and fire timers inside each server process (else run `fhir-gateway worker`).",
)
@click.option(
    "--insecure-dev",
    is_flag=True,
    help="Requests without a token act as admin. Local experiments only; logs a loud warning.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    no_examples: bool,
    worker: bool,
    insecure_dev: bool,
) -> None:
    """Run migrations, load the example directory on an empty embedded database, serve HTTP."""
    import uvicorn

    settings = _settings(ctx)
    configure_logging(settings.log_level, settings.log_json)
    limit_arenas()  # before the threadpool exists; see fhir_gateway.malloc
    _prepare_database(settings, load_examples=settings.load_examples and not no_examples)
    os.environ["GATEWAY_DATABASE_URL"] = settings.database_url
    os.environ["GATEWAY_WORKER_IN_APP"] = "true" if worker else "false"
    if insecure_dev:
        os.environ["GATEWAY_INSECURE_DEV"] = "true"
    log.info("serving on http://%s:%d/fhir (%d worker(s))", host, port, workers)
    with multiprocess_metrics(workers):  # /metrics adds up every worker's counters
        uvicorn.run(
            "fhir_gateway.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            timeout_graceful_shutdown=30,
            # a new worker imports the gateway before it answers the supervisor's ping: 12 s measured
            # on a busy 2-core host, and uvicorn's 5 s default killed and restarted it for ever
            timeout_worker_healthcheck=60,
            access_log=False,
        )


def _prepare_database(settings: Settings, *, load_examples: bool) -> None:
    from fhir_gateway.app import build_router
    from fhir_gateway.loading import load_files
    from fhir_gateway.security.clients import list_clients, load_client_registrations
    from fhir_gateway.workflow.context import GatewayContext

    gw = GatewayContext.create(settings)
    delivery_events.install(gw)
    try:
        gw.database.upgrade()
        directory = settings.examples_dir / "directory"
        if load_examples and settings.is_sqlite and directory.is_dir() and _is_empty(gw):
            results = load_files(build_router(gw), [directory])
            failed = [r for r in results if not r.ok]
            log.info("loaded example directory: %d file(s), %d failed", len(results), len(failed))
            for r in failed:
                log.error("example %s failed: %s", r.path.name, r.detail)
        clients_dir = settings.examples_dir / "clients"
        if load_examples and settings.is_sqlite and clients_dir.is_dir() and not list_clients(gw.database):
            count = load_client_registrations(gw.database, clients_dir)
            log.warning("loaded %d DEV-ONLY client registrations from %s", count, clients_dir)
    finally:
        gw.close()


def _is_empty(gw: object) -> bool:
    from fhir_gateway.store.resource_queries import is_empty

    with gw.database.connection(write=False) as conn:  # type: ignore[attr-defined]
        return is_empty(conn)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--base-url", default=None, help="Post to a running gateway instead of the database directly.")
@click.pass_context
def load(ctx: click.Context, files: tuple[Path, ...], base_url: str | None) -> None:
    """Load FHIR JSON files or folders (resources or batch/transaction Bundles)."""
    from fhir_gateway.loading import json_files, request_for

    settings = _settings(ctx)
    failures = 0
    if base_url:
        with httpx.Client(base_url=base_url.rstrip("/"), timeout=60) as client:
            for path in json_files(files):
                req = request_for(orjson.loads(path.read_bytes()), "", None)  # type: ignore[arg-type]
                resp = client.request(
                    req.method,
                    "/" + req.path,
                    content=orjson.dumps(req.body),
                    headers={"content-type": "application/fhir+json"},
                )
                failures += resp.status_code >= 400
                click.echo(f"{resp.status_code} {path}")
    else:
        from fhir_gateway.app import build_router
        from fhir_gateway.loading import load_files
        from fhir_gateway.workflow.context import GatewayContext

        gw = GatewayContext.create(settings)
        delivery_events.install(gw)
        try:
            gw.database.upgrade()
            for result in load_files(build_router(gw), files):
                failures += not result.ok
                click.echo(f"{result.status} {result.path} {result.detail}")
        finally:
            gw.close()
    if failures:
        click.echo(f"{failures} file(s) failed", err=True)
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def validate(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Validate FHIR JSON files offline against the base spec and the WoR profiles."""
    from fhir_gateway.fhir.models import check_resource
    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.loading import json_files
    from fhir_gateway.validation import ProfileSet, Validator

    validator = Validator(ProfileSet.load(_settings(ctx).profiles_dir))
    failed = 0
    for path in json_files(files):
        try:
            issues = validator.validate(check_resource(orjson.loads(path.read_bytes())))
        except orjson.JSONDecodeError as exc:
            issues = [_json_issue(exc)]
        except FhirError as exc:
            issues = exc.issues
        errors = [i for i in issues if i.is_error]
        failed += bool(errors)
        click.echo(f"{'INVALID' if errors else 'valid  '} {path}")
        for issue in issues:
            where = f" @ {issue.expression}" if issue.expression else ""
            click.echo(f"  {issue.severity:<8} {issue.code:<14} {issue.diagnostics}{where}")
    sys.exit(1 if failed else 0)


def _json_issue(exc: Exception) -> object:
    from fhir_gateway.fhir.outcome import error

    return error("structure", f"not valid JSON: {exc}")


@main.command("map")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--mapping",
    "names",
    multiple=True,
    help="Mapping name(s); default: servicerequest-to-task and servicerequest-to-careplan.",
)
@click.option(
    "--directory",
    "directory_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Directory Bundle used for routing (default: examples/directory/directory.json).",
)
@click.option("--milestone", default=None, help="For milestone-to-communication: the new businessStatus.")
@click.option("--status", default=None, help="For milestone-to-communication: the new Task.status.")
@click.pass_context
def map_command(
    ctx: click.Context,
    file: Path,
    names: tuple[str, ...],
    directory_file: Path | None,
    milestone: str | None,
    status: str | None,
) -> None:
    """Run mappings offline on a ServiceRequest (or referral Bundle) or a Task and print the result."""
    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.mapping import map_file
    from fhir_gateway.routing import Directory, route

    settings = _settings(ctx)
    document = orjson.loads(file.read_bytes())
    resources = (
        [e["resource"] for e in document.get("entry", [])]
        if document.get("resourceType") == "Bundle"
        else [document]
    )
    by_type = {r.get("resourceType"): r for r in resources}
    names = names or (
        ("milestone-to-communication",)
        if "Task" in by_type and "ServiceRequest" not in by_type
        else ("servicerequest-to-task", "servicerequest-to-careplan")
    )
    inputs: dict[str, object] = {k: v for k, v in (("milestone", milestone), ("status", status)) if v}
    if "ServiceRequest" in by_type:
        directory_path = directory_file or settings.examples_dir / "directory" / "directory.json"
        directory = Directory.from_bundle(orjson.loads(directory_path.read_bytes()))
        try:
            inputs["route"] = route(by_type["ServiceRequest"], by_type.get("Patient"), directory).as_dict()
        except FhirError as exc:
            raise click.ClickException(f"cannot route: {exc.message}") from exc
    results = {name: map_file(file, name, dict(inputs), settings.mappings_dir) for name in names}
    click.echo(
        orjson.dumps(
            results if len(results) > 1 else next(iter(results.values())), option=orjson.OPT_INDENT_2
        ).decode()
    )


from fhir_gateway.commands.clients import clients as _clients  # noqa: E402
from fhir_gateway.commands.clients import token as _token  # noqa: E402
from fhir_gateway.commands.outbox import outbox_group as _outbox  # noqa: E402
from fhir_gateway.commands.outbox import worker_command as _worker  # noqa: E402
from fhir_gateway.commands.report import report as _report  # noqa: E402
from fhir_gateway.commands.v2 import mllp as _mllp  # noqa: E402
from fhir_gateway.commands.v2 import v2 as _v2  # noqa: E402
from fhir_gateway.demo import demo as _demo  # noqa: E402

main.add_command(_demo)
main.add_command(_report)
main.add_command(_outbox)
main.add_command(_worker)
main.add_command(_clients)
main.add_command(_token)
main.add_command(_v2)
main.add_command(_mllp)

if __name__ == "__main__":
    main()
