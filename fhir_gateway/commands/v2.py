"""`fhir-gateway v2 parse|map FILE` and `fhir-gateway mllp`: look at v2 messages, run the listener.

Registered on the main CLI by `main.add_command(v2)` and `main.add_command(mllp)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import click

from fhir_gateway.commands.common import database_error, metrics_option, serve_metrics, settings_of

log = logging.getLogger("fhir_gateway.v2")


@click.group()
def v2() -> None:
    """HL7 v2 messages: show how the gateway reads and maps them."""


@v2.command("parse")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--structure", is_flag=True, help="Also run hl7apy's structure validation (≈ 20 ms).")
def parse_cmd(file: Path, structure: bool) -> None:
    """Show the segments and fields of FILE (escapes decoded, Z-segments included)."""
    from fhir_gateway.v2.inbound import check_structure, parse
    from fhir_gateway.v2.message import V2ParseError

    try:
        message = parse(file.read_bytes())
    except V2ParseError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    click.echo(
        f"{message.message_type} v{message.version} control id {message.control_id} from {message.sender}"
    )
    for seg in message.segments:
        click.echo(f"{seg.name}({seg.sequence})")
        for n in range(1, len(seg.fields)):
            for r, rep in enumerate(seg.field(n), start=1):
                if not any(any(sub for sub in comp) for comp in rep):
                    continue
                label = f"  {seg.name}-{n}" + (f"({r})" if len(seg.field(n)) > 1 else "")
                if len(rep) == 1 and len(rep[0]) == 1:
                    click.echo(f"{label}: {rep[0][0]!r}")
                    continue
                for c, comp in enumerate(rep, start=1):
                    for s, sub in enumerate(comp, start=1):
                        if sub:
                            where = f".{c}" + (f".{s}" if len(comp) > 1 else "")
                            click.echo(f"{label}{where}: {sub!r}")
    if structure:
        problems = check_structure(message)
        if problems:  # a script or CI step must see the failure in the exit code
            raise click.ClickException(f"hl7apy: structure errors: {'; '.join(problems)}")
        click.echo("hl7apy: structure ok")


@v2.command("map")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Mapping file to use."
)
def map_cmd(file: Path, mapping: Path | None) -> None:
    """Print the FHIR transaction Bundle the gateway makes of FILE."""
    from fhir_gateway.v2.inbound import V2ContentError, V2Rejected, parse, to_bundle
    from fhir_gateway.v2.mapping import V2MappingError
    from fhir_gateway.v2.message import V2ParseError

    try:
        bundle = to_bundle(parse(file.read_bytes()), mapping)
    except V2MappingError as exc:
        raise click.ClickException(f"mapping {mapping or 'of the gateway'}: {exc}") from None
    except (V2ParseError, V2Rejected, V2ContentError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(json.dumps(bundle, indent=2, ensure_ascii=False))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2575, show_default=True, type=int)
@click.option(
    "--max-bytes",
    default=None,
    type=int,
    help="Largest message accepted [default: GATEWAY_MAX_V2_MESSAGE_BYTES, 1 MiB].",
)
@click.option(
    "--idle-timeout", default=300.0, show_default=True, type=float, help="Close idle connections (s)."
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve MLLP over TLS with this certificate (PEM, chain allowed).",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its private key."
)
@click.option(
    "--client-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Require client certificates signed by this CA; a certificate's SHA-256 fingerprint must be "
    "in a client registration's mllp_certificates.",
)
@click.option(
    "--insecure-dev",
    is_flag=True,
    default=None,
    help="DEVELOPMENT ONLY: a sender no certificate or address identifies acts as the practice MSH-4 "
    "names [default: GATEWAY_INSECURE_DEV].",
)
@metrics_option()
@click.pass_context
def mllp(
    ctx: click.Context,
    host: str,
    port: int,
    max_bytes: int | None,
    idle_timeout: float,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    insecure_dev: bool | None,
    metrics_port: int,
) -> None:
    """Run the HL7 v2 MLLP listener (REF^I12 in, ACK out) on the configured database.

    Senders are identified by their registration (`fhir-gateway clients`): with --client-ca by
    the client certificate (mllp_certificates), else by the source address (mllp_addresses). The
    registration's v2_facilities decide which MSH-4 it may send as; anything else is AR."""
    import ssl

    from fhir_gateway import gc_pauses
    from fhir_gateway.app import build_router
    from fhir_gateway.observability import configure_logging
    from fhir_gateway.settings import Settings
    from fhir_gateway.v2.mllp import MLLPServer, server_tls_context
    from fhir_gateway.v2.service import V2Service
    from fhir_gateway.workflow.context import GatewayContext

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if client_ca is not None and tls_cert is None:
        raise click.UsageError("--client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
    settings: Settings = settings_of(ctx)
    configure_logging(settings.log_level, settings.log_json)
    dev = settings.insecure_dev if insecure_dev is None else insecure_dev
    try:
        tls = server_tls_context(tls_cert, tls_key, client_ca) if tls_cert and tls_key else None
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"cannot load the TLS certificate or key: {exc}") from exc
    if dev:
        log.warning(
            "!!! MLLP INSECURE DEV IS ON: a sender that no certificate or registered address "
            "identifies acts as whichever practice MSH-4 names. Developer machines only. !!!"
        )
    elif client_ca is None:
        log.info("MLLP senders are identified by source address (mllp_addresses of their registration)")
    gw = GatewayContext.create(settings)
    try:
        try:
            gw.database.upgrade()
        except Exception as exc:
            raise database_error(exc, "opening the database (schema upgrade)") from exc
        service = V2Service(build_router(gw), settings.base_url, insecure_dev=dev)
        serve_metrics(gw, metrics_port)
        server = MLLPServer(
            host=host,
            port=port,
            for_peer=service.for_peer,
            ssl_context=tls,
            max_message_bytes=max_bytes or settings.max_v2_message_bytes,
            idle_timeout=idle_timeout,
            max_concurrent=service.concurrency,
        )
        started = time.monotonic()
        gc_pauses.freeze_startup_heap()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(server.serve_forever())
        log.info(
            "MLLP listener stopped after %.0f s, %d message(s)",
            time.monotonic() - started,
            server.stats.messages,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    finally:
        gw.close()


if __name__ == "__main__":  # pragma: no cover
    v2(sys.argv[1:])
