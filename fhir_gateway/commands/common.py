"""What every command shares: the settings options, and opening only a database that exists.

Why: an operator runs `fhir-gateway token` or `clients` from wherever their shell is. With the
default settings the embedded database is `./var/gateway.db`, so run from the wrong directory a
command used to create an empty database and a new development signing key there, then fail with
a traceback. `GATEWAY_HOME` (or `--home`) names the directory once; commands that only read or
register (token, clients, outbox, worker, report) refuse a database that does not exist instead of
creating one, and say which file they looked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from fhir_gateway.settings import Settings

SETTING_OPTIONS = ("database_url", "home")


def settings_of(ctx: click.Context) -> Settings:
    """The settings of this invocation: environment, then the group's and the command's options."""
    obj = ctx.find_root().obj
    if not isinstance(obj, dict):
        return Settings.from_env()
    if not isinstance(obj.get("settings"), Settings):
        obj["settings"] = Settings.from_env(**obj.get("overrides", {}))
    return obj["settings"]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback: a setting given on a command wins over the group's and the environment."""
    if value is None or param.name is None:
        return value
    root = ctx.find_root()
    root.ensure_object(dict)
    overrides = root.obj.setdefault("overrides", {})
    overrides[param.name] = value
    root.obj.pop("settings", None)  # rebuilt with the new value on first use
    return value


def setting_params() -> list[click.Option]:
    """`--database-url` and `--home`, the same on the group and on every command."""
    return [
        click.Option(
            ["--database-url"],
            default=None,
            expose_value=False,
            is_eager=True,
            callback=_remember,
            help="SQLAlchemy URL [env: GATEWAY_DATABASE_URL; default: sqlite under HOME/var/].",
        ),
        click.Option(
            ["--home"],
            default=None,
            expose_value=False,
            is_eager=True,
            type=click.Path(file_okay=False, path_type=Path),
            callback=_remember,
            help="Directory holding var/ (embedded database, dev signing key) "
            "[env: GATEWAY_HOME; default: the current directory].",
        ),
    ]


def walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under `command` (groups included), with its path of names."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def add_setting_options(group: click.Group) -> None:
    """Give every command the settings options (`serve --database-url …` as well as
    `fhir-gateway --database-url … serve`); new commands get them without being told."""
    for path, command in walk(group):
        if not path:
            continue
        names = {p.name for p in command.params}
        command.params.extend(p for p in setting_params() if p.name not in names)


def sqlite_file(settings: Settings) -> Path | None:
    """The file of an embedded database, None for a server database or `:memory:`."""
    from sqlalchemy.engine import make_url

    if not settings.is_sqlite:
        return None
    path = make_url(settings.database_url).database
    return Path(path) if path and path != ":memory:" else None


def home_hint(settings: Settings) -> str:
    """Where the command looked, and how to point it at the gateway's directory."""
    return (
        f"GATEWAY_HOME is {Path(settings.home).resolve()}: set GATEWAY_HOME (or --home) to the "
        "directory that holds the gateway's var/, or set GATEWAY_DATABASE_URL"
    )


def refuse_missing_file(settings: Settings) -> None:
    """An embedded database that is not there is a wrong directory, not a wish for a new one."""
    path = sqlite_file(settings)
    if path is not None and not path.is_file():
        raise click.ClickException(
            f"no database at {path}. {home_hint(settings)}; a new gateway makes its database "
            "with `fhir-gateway serve` (or `fhir-gateway db upgrade`)"
        )


def existing_database(settings: Settings) -> Any:
    """The configured database, only if it exists and its schema is current (never creates one)."""
    from fhir_gateway.store.database import Database

    refuse_missing_file(settings)
    database = Database(settings.database_url)
    try:
        current = database.is_current()
    except Exception as exc:  # unreachable server, refused login, not a database file …
        database.dispose()
        raise click.ClickException(f"cannot read the database: {_reason(exc)}") from None
    if not current:
        database.dispose()
        raise click.ClickException(
            "the database schema is missing or not current: run `fhir-gateway db upgrade`"
        )
    return database


def _reason(exc: BaseException) -> str:
    """One line, no SQL: the type and the first line of the driver's message."""
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}"[:300]


def existing_context(settings: Settings, *, schema: bool = True) -> Any:
    """A `GatewayContext` on the existing database (see `existing_database`). `schema=False`
    only refuses a missing embedded database file: a `worker` may start beside a `serve` that is
    still migrating a new database, and waits for the tables as it waits for work."""
    from fhir_gateway.workflow.context import GatewayContext

    if schema:
        existing_database(settings).dispose()
    else:
        refuse_missing_file(settings)
    return GatewayContext.create(settings)


def database_error(exc: BaseException, doing: str) -> click.ClickException:
    """A database that fails mid-command, said in one line."""
    return click.ClickException(f"{doing} failed: {_reason(exc)}")


def read_json(path: Path) -> Any:
    """A JSON file, or a one-line error naming the file (unreadable, not UTF-8, not JSON)."""
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path}: not JSON ({exc})") from None


def read_json_resource(path: Path) -> dict[str, Any]:
    """A JSON file holding one FHIR resource (a Bundle counts), else a one-line error."""
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        kind = "a JSON Patch document" if is_json_patch(document) else f"JSON {type(document).__name__}"
        raise click.ClickException(f"{path}: not a FHIR resource (no resourceType; {kind})")
    return document


def is_json_patch(document: Any) -> bool:
    """An RFC 6902 JSON Patch: a list of objects each with an `op` (the scenarios' Task updates)."""
    return (
        isinstance(document, list)
        and bool(document)
        and all(isinstance(op, dict) and isinstance(op.get("op"), str) for op in document)
    )


def metrics_option() -> Any:
    """`--metrics-port`: a standalone worker or MLLP listener has no HTTP API, so its own counters
    (deliveries, feedback delivered, v2 ACK codes, referrals it wrote) are served here."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        help="Serve this process's Prometheus metrics on 127.0.0.1:PORT/metrics (0: off).",
    )


def serve_metrics(gateway: Any, port: int, host: str = "127.0.0.1") -> None:
    """Start the metrics endpoint of a process without the HTTP API (a daemon thread)."""
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=gateway.metrics.registry)
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
