"""The `fhir-gateway` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from fhir_gateway import __version__
from fhir_gateway.commands.clients import mint_token
from fhir_gateway.commands.common import (
    add_setting_options,
    database_error,
    read_json_resource,
    setting_params,
    settings_of,
)
from fhir_gateway.delivery import events as delivery_events
from fhir_gateway.malloc import limit_arenas
from fhir_gateway.observability import configure_logging, multiprocess_metrics
from fhir_gateway.settings import Settings

log = logging.getLogger("fhir_gateway.cli")


def _settings(ctx: click.Context) -> Settings:
    return settings_of(ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, params=setting_params())
@click.pass_context
def main(ctx: click.Context) -> None:
    """Welzijn op Recept referral gateway (FHIR R4 + HL7 v2).

    Settings come from GATEWAY_* environment variables; --home and --database-url may be given
    here or on any command. GATEWAY_HOME (default: the current directory) holds var/ with the
    embedded database and the development signing key, so every command finds the same ones
    wherever it is run."""
    ctx.ensure_object(dict)


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
    os.environ["GATEWAY_HOME"] = str(Path(settings.home).resolve())  # worker processes: same settings
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
        _upgrade(gw.database)
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


def _upgrade(database: object) -> None:
    """Create or upgrade the schema; a database that cannot be reached is said in one line."""
    try:
        database.upgrade()  # type: ignore[attr-defined]
    except Exception as exc:
        raise database_error(exc, "opening the database (schema upgrade)") from exc


def _is_empty(gw: object) -> bool:
    from fhir_gateway.store.resource_queries import is_empty

    with gw.database.connection(write=False) as conn:  # type: ignore[attr-defined]
        return is_empty(conn)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--base-url", default=None, help="Post to a running gateway instead of the database directly.")
@click.option(
    "--client",
    "client_id",
    default=None,
    help="With --base-url: act as this registered client, with a token minted as `fhir-gateway token` "
    "does (same GATEWAY_HOME / database / signing key as the gateway).",
)
@click.option(
    "--token",
    envvar="GATEWAY_ACCESS_TOKEN",
    default=None,
    help="With --base-url: this bearer token [env: GATEWAY_ACCESS_TOKEN].",
)
@click.pass_context
def load(
    ctx: click.Context,
    files: tuple[Path, ...],
    base_url: str | None,
    client_id: str | None,
    token: str | None,
) -> None:
    """Load FHIR JSON files or folders (resources or batch/transaction Bundles).

    Without --base-url straight into the configured database as the system; with it through the
    gateway's API, which needs a token: --client or --token."""
    from fhir_gateway.loading import post_files

    settings = _settings(ctx)
    if (client_id or token) and not base_url:
        raise click.UsageError("--client and --token go with --base-url (a local load needs no token)")
    if client_id and token:
        raise click.UsageError("give --client or --token, not both")
    if base_url:
        if client_id:
            token = mint_token(settings, client_id)["access_token"]
        try:
            results = post_files(base_url, files, token)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise click.ClickException(f"cannot reach the gateway at {base_url}: {exc}") from None
    else:
        results = _load_local(settings, files)
    for result in results:
        click.echo(f"{result.status} {result.path} {result.detail}")
    failures = sum(not r.ok for r in results)
    if base_url and not token and any(r.status == 401 for r in results):
        click.echo("401: the gateway wants a token: give --client CLIENT_ID or --token", err=True)
    if failures:
        click.echo(f"{failures} file(s) failed", err=True)
        sys.exit(1)


def _load_local(settings: Settings, files: tuple[Path, ...]) -> list[Any]:
    from fhir_gateway.app import build_router
    from fhir_gateway.loading import load_files
    from fhir_gateway.workflow.context import GatewayContext

    gw = GatewayContext.create(settings)
    delivery_events.install(gw)
    try:
        _upgrade(gw.database)
        return load_files(build_router(gw), files)
    finally:
        gw.close()


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def validate(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Validate FHIR JSON files offline against the base spec and the WoR profiles.

    In a folder, `*.json` files that are no FHIR resource are skipped and said so: JSON Patch
    documents (the Task updates in examples/scenarios/) and other JSON such as client
    registrations. Exit 1 when a file is invalid or nothing was validated."""
    from fhir_gateway.fhir.models import check_resource
    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.loading import json_files
    from fhir_gateway.validation import ProfileSet, Validator

    validator = Validator(ProfileSet.load(_settings(ctx).profiles_dir))
    counts = {"valid": 0, "invalid": 0, "skipped": 0}
    for path in json_files(files):
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            document, issues = None, [_json_issue(exc)]
        except OSError as exc:
            document, issues = None, [_json_issue(exc, "cannot read")]
        skip = _skip_reason(document) if document is not None else None
        if skip:
            counts["skipped"] += 1
            click.echo(f"skipped {path}: {skip}")
            continue
        if document is not None:
            try:
                issues = validator.validate(check_resource(document))
            except FhirError as exc:
                issues = exc.issues
        errors = [i for i in issues if i.is_error]
        counts["invalid" if errors else "valid"] += 1
        click.echo(f"{'INVALID' if errors else 'valid  '} {path}")
        for issue in issues:
            where = f" @ {issue.expression}" if issue.expression else ""
            click.echo(f"  {issue.severity:<8} {issue.code:<14} {issue.diagnostics}{where}")
    click.echo(", ".join(f"{n} {k}" for k, n in counts.items()), err=True)
    if not counts["valid"] and not counts["invalid"]:
        raise click.ClickException("nothing to validate: no FHIR resource among the files given")
    sys.exit(1 if counts["invalid"] else 0)


def _skip_reason(document: object) -> str | None:
    """Why a JSON document is not validated as FHIR, or None when it is a resource."""
    from fhir_gateway.commands.common import is_json_patch

    if is_json_patch(document):
        return "a JSON Patch document (RFC 6902), not a FHIR resource; the Task it patches is validated on PATCH"
    if isinstance(document, dict) and isinstance(document.get("resourceType"), str):
        return None
    if isinstance(document, dict) and "client_id" in document:
        return "a client registration (fhir-gateway clients load), not a FHIR resource"
    return f"JSON {type(document).__name__} without a resourceType, not a FHIR resource"


def _json_issue(exc: Exception, what: str = "not valid JSON") -> object:
    from fhir_gateway.fhir.outcome import error

    return error("structure", f"{what}: {exc}")


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
    from fhir_gateway.mapping import MappingError, map_file

    settings = _settings(ctx)
    by_type = _resources_by_type(read_json_resource(file))
    names = names or (
        ("milestone-to-communication",)
        if "Task" in by_type and "ServiceRequest" not in by_type
        else ("servicerequest-to-task", "servicerequest-to-careplan")
    )
    inputs: dict[str, object] = {k: v for k, v in (("milestone", milestone), ("status", status)) if v}
    if "ServiceRequest" in by_type:
        directory_path = directory_file or settings.examples_dir / "directory" / "directory.json"
        inputs["route"] = _route_offline(by_type, directory_path)
    if "milestone-to-communication" in names and not inputs.keys() & {"milestone", "status"}:
        raise click.UsageError("milestone-to-communication needs --milestone or --status (the Task change)")
    try:
        results = {name: map_file(file, name, dict(inputs), settings.mappings_dir) for name in names}
    except MappingError as exc:
        hint = " (this region sends no feedback for that --milestone/--status)" if "feedback" in str(exc) else ""
        raise click.ClickException(f"cannot map {file}: {exc}{hint}") from None
    click.echo(
        orjson.dumps(
            results if len(results) > 1 else next(iter(results.values())), option=orjson.OPT_INDENT_2
        ).decode()
    )


def _resources_by_type(document: dict[str, object]) -> dict[str, dict[str, object]]:
    """The resource, or the resources of a Bundle's entries, by type."""
    if document.get("resourceType") != "Bundle":
        return {str(document["resourceType"]): document}
    entries = document.get("entry")
    resources = [
        e["resource"]
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    if not resources:
        raise click.ClickException("the Bundle has no entry with a resource")
    return {str(r.get("resourceType")): r for r in resources}


def _route_offline(by_type: dict[str, dict[str, object]], directory_path: Path) -> dict[str, object]:
    """Route the referral on a directory Bundle, as the gateway would on its stored social map."""
    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.routing import Directory, route

    bundle = read_json_resource(directory_path)
    if bundle.get("resourceType") != "Bundle":
        raise click.ClickException(f"{directory_path}: a directory must be a Bundle, not {bundle['resourceType']}")
    try:
        directory = Directory.from_bundle(bundle)
    except (FhirError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise click.ClickException(f"{directory_path}: not a usable directory Bundle ({exc})") from None
    try:
        return route(by_type["ServiceRequest"], by_type.get("Patient"), directory).as_dict()
    except FhirError as exc:
        raise click.ClickException(f"cannot route: {exc.message}") from exc


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
add_setting_options(main)

if __name__ == "__main__":
    main()
