"""`fhir-gateway clients …` (registrations) and `fhir-gateway token` (development tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from fhir_gateway.commands.common import (
    database_error,
    existing_database,
    home_hint,
    settings_of,
)
from fhir_gateway.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    return settings_of(ctx)


def _database(ctx: click.Context) -> Any:
    """The configured database if it exists with a current schema; registering a client never
    creates a database (run from the wrong directory it would land in a new, empty one)."""
    return existing_database(_settings(ctx))


def _scope_list(values: tuple[str, ...]) -> list[str]:
    """`--scope` may repeat and each value may hold several space-separated scopes."""
    return [s for v in values for s in v.split()]


@click.group("clients", invoke_without_command=True)
@click.pass_context
def clients(ctx: click.Context) -> None:
    """Client registrations (SMART Backend Services). Bare: list them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_clients_cmd)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the registrations as JSON.")
@click.pass_context
def list_clients_cmd(ctx: click.Context, as_json: bool = False) -> None:
    """List registered clients."""
    from fhir_gateway.security.clients import list_clients

    db = _database(ctx)
    try:
        regs = list_clients(db)
    except Exception as exc:
        raise database_error(exc, "reading the clients") from None
    finally:
        db.dispose()
    if as_json:
        click.echo(orjson.dumps([r.to_json() for r in regs], option=orjson.OPT_INDENT_2).decode())
        return
    if not regs:
        click.echo("no clients registered (fhir-gateway clients add | clients load)")
    for r in regs:
        flags = ",".join(f for f, on in (("inactive", not r.active), ("DEV-ONLY", r.dev_only)) if on) or "-"
        click.echo(f"{r.client_id:36} {r.role:12} {r.organization or '-':40} {flags:16} {' '.join(r.scopes)}")


@clients.command("add")
@click.argument("client_id")
@click.option("--organization", default=None, help="Organization/<id> the client acts for.")
@click.option("--role", required=True, type=click.Choice(["gp-practice", "welfare-org", "admin"]))
@click.option(
    "--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--scope", "scopes", multiple=True, required=True, help="Allowed scope(s), e.g. system/Task.rs")
@click.option("--name", default=None, help="Human-readable name (default: the client id).")
@click.option("--inactive", is_flag=True, help="Register but do not allow tokens yet.")
@click.option("--dev-only", is_flag=True, help="Mark as a development client.")
@click.option(
    "--v2-facility",
    "v2_facilities",
    multiple=True,
    help="AGB code it may send HL7 v2 as (MSH-4); repeatable.",
)
@click.option(
    "--mllp-certificate",
    "mllp_certificates",
    multiple=True,
    help="Its MLLP client certificate: a PEM file or a SHA-256 fingerprint; repeatable.",
)
@click.option(
    "--mllp-address",
    "mllp_addresses",
    multiple=True,
    help="Source IP or CIDR network of its MLLP; repeatable.",
)
@click.pass_context
def add_client(
    ctx: click.Context,
    client_id: str,
    organization: str | None,
    role: str,
    jwks_file: Path,
    scopes: tuple[str, ...],
    name: str | None,
    inactive: bool,
    dev_only: bool,
    v2_facilities: tuple[str, ...] = (),
    mllp_certificates: tuple[str, ...] = (),
    mllp_addresses: tuple[str, ...] = (),
) -> None:
    """Register (or replace) a client with its PUBLIC JWKS and allowed scopes (and, for a GP
    system sending HL7 v2, its facilities and what identifies its MLLP connections)."""
    from fhir_gateway.security.clients import RegistrationError, save_client, validate_registration

    try:
        jwks = orjson.loads(jwks_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{jwks_file}: not JSON ({exc})") from None
    if isinstance(jwks, dict) and "kty" in jwks:
        jwks = {"keys": [jwks]}  # a single JWK is accepted too
    doc = {
        "client_id": client_id,
        "name": name or client_id,
        "organization": organization,
        "role": role,
        "scopes": _scope_list(scopes),
        "jwks": jwks,
        "active": not inactive,
        "dev_only": dev_only,
        "v2_facilities": list(v2_facilities),
        "mllp_certificates": [_fingerprint_of(c) for c in mllp_certificates],
        "mllp_addresses": list(mllp_addresses),
    }
    db = _database(ctx)
    try:
        reg = save_client(db, validate_registration(doc))
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
    click.echo(f"registered {reg.client_id} ({reg.role}, {reg.organization or '-'}): {' '.join(reg.scopes)}")


def _fingerprint_of(value: str) -> str:
    """A PEM certificate file → its SHA-256 fingerprint; anything else is taken as a fingerprint."""
    import ssl

    from fhir_gateway.v2.senders import certificate_fingerprint

    path = Path(value)
    if not path.is_file():
        return value
    try:
        return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(path.read_text()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{value}: not a PEM certificate ({exc})") from None


@clients.command("load")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--allow-dev-only/--no-dev-only",
    default=None,
    help="Accept registrations marked dev_only (default: only on an embedded SQLite database).",
)
@click.pass_context
def load_clients(ctx: click.Context, path: Path | None, allow_dev_only: bool | None) -> None:
    """Load `*.client.json` registrations (default: examples/clients)."""
    from fhir_gateway.security.clients import RegistrationError, load_client_registrations

    settings = _settings(ctx)
    path = path or settings.examples_dir / "clients"
    allow = settings.is_sqlite if allow_dev_only is None else allow_dev_only
    db = _database(ctx)
    try:
        n = load_client_registrations(db, path, allow_dev_only=allow)
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
    click.echo(f"loaded {n} client registration(s) from {path}")


def _set_active(ctx: click.Context, client_id: str, active: bool) -> None:
    from fhir_gateway.security.clients import set_client_active

    db = _database(ctx)
    try:
        if not set_client_active(db, client_id, active):
            raise click.ClickException(f"client '{client_id}' is not registered")
    finally:
        db.dispose()
    click.echo(f"{client_id} {'enabled' if active else 'disabled'}")


@clients.command("disable")
@click.argument("client_id")
@click.pass_context
def disable_client(ctx: click.Context, client_id: str) -> None:
    """Refuse new tokens to a client (tokens already issued expire within 5 minutes)."""
    _set_active(ctx, client_id, False)


@clients.command("enable")
@click.argument("client_id")
@click.pass_context
def enable_client(ctx: click.Context, client_id: str) -> None:
    """Allow a disabled client to get tokens again."""
    _set_active(ctx, client_id, True)


def dev_private_key(settings: Settings, client_id: str) -> dict[str, Any] | None:
    """The committed development private key of an example client, if there is one."""
    path = Path(settings.examples_dir) / "clients" / f"{client_id}.dev-only.private.jwk"
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def mint_token(
    settings: Settings, client_id: str, scopes: list[str] | None = None, lifetime: int | None = None
) -> dict[str, Any]:
    """Development/test tokens. With the client's dev private key: a real signed client assertion
    through the very same exchange the token endpoint runs. Without one: issue directly (still
    narrowed to the client's allowed scopes). Either way signed with the gateway key `serve` uses."""
    from fhir_gateway.security.authn import (
        JWT_BEARER,
        OAuthError,
        exchange_client_credentials,
        make_client_assertion,
    )
    from fhir_gateway.security.clients import get_client
    from fhir_gateway.security.scopes import intersect, parse_scopes

    db = existing_database(settings)
    try:
        tokens = _token_service(settings, lifetime)
        client = get_client(db, client_id)
        if client is None:
            raise click.ClickException(
                f"client '{client_id}' is not registered (fhir-gateway clients load | add)"
            )
        if not client.active:
            raise click.ClickException(f"client '{client_id}' is not active")
        wanted = " ".join(scopes or client.scopes)
        private = dev_private_key(settings, client_id)
        if private is not None:
            audience = "urn:fhir-gateway:cli"  # the exchange runs in-process, not over HTTP
            form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", make_client_assertion(client_id, private, audience)),
                ("scope", wanted),
            ]
            try:
                issued = exchange_client_credentials(
                    form,
                    database=db,
                    tokens=tokens,
                    audience=audience,
                    lookup=lambda cid: get_client(db, cid),
                )
            except OAuthError as exc:
                raise click.ClickException(f"{exc.error}: {exc.description}") from None
        else:
            granted = intersect(parse_scopes(wanted, strict=False), parse_scopes(client.scopes))
            if not granted:
                raise click.ClickException("invalid_scope: none of the requested scopes is allowed")
            issued = tokens.issue(client, [str(s) for s in granted])
        return issued.response()
    finally:
        db.dispose()


def _token_service(settings: Settings, lifetime: int | None) -> Any:
    """The signing key `serve` uses; a development key is read, never made here (a token signed
    with a key no gateway has would be refused, and the new key file would be left behind)."""
    from fhir_gateway.security.tokens import KeyConfigError, TokenService, dev_key_path

    if not str(settings.token_key or "").strip() and not settings.token_key_file:
        path = dev_key_path(settings)
        if not path.is_file():
            raise click.ClickException(
                f"no gateway signing key: neither GATEWAY_TOKEN_KEY nor GATEWAY_TOKEN_KEY_FILE is set, "
                f"and there is no development key at {path} (`fhir-gateway serve` makes it on first "
                f"start). {home_hint(settings)}"
            )
    try:
        tokens = TokenService.from_settings(settings)
    except KeyConfigError as exc:
        raise click.ClickException(f"gateway signing key: {exc}") from None
    return TokenService(tokens.keys, tokens.issuer, lifetime) if lifetime else tokens


@click.command("token")
@click.argument("client_id")
@click.option(
    "--scope", "scopes", multiple=True, help="Scope(s) to request (default: all the client may have)."
)
@click.option("--lifetime", type=click.IntRange(1, 300), default=None, help="Seconds, at most 300.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole token response.")
@click.pass_context
def token(
    ctx: click.Context, client_id: str, scopes: tuple[str, ...], lifetime: int | None, as_json: bool
) -> None:
    """Mint an access token locally (development and tests only) and print it."""
    response = mint_token(_settings(ctx), client_id, _scope_list(scopes) or None, lifetime)
    click.echo(
        orjson.dumps(response, option=orjson.OPT_INDENT_2).decode() if as_json else response["access_token"]
    )
