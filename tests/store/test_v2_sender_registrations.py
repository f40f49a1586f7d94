"""Client registrations with HL7 v2 sender fields, stored on SQLite and PostgreSQL (migration 0009)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from fhir_gateway.security.clients import (
    get_client,
    load_client_registrations,
    read_registrations,
    save_client,
    validate_registration,
)
from fhir_gateway.store.clients import CLIENTS
from fhir_gateway.store.database import Database

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clients"


def test_v2_sender_fields_round_trip(database: Database) -> None:
    assert load_client_registrations(database, EXAMPLES) > 0
    gp = get_client(database, "praktijk-de-geinoord-his")
    welfare = get_client(database, "welzijn-de-brug-cms")
    assert gp is not None and welfare is not None
    assert gp.v2_facilities == ("01051234",) and welfare.v2_facilities == ()
    changed = validate_registration(
        {**gp.to_json(), "mllp_certificates": ["0f" * 32], "mllp_addresses": ["192.0.2.0/24"]}
    )
    save_client(database, changed)
    again = get_client(database, "praktijk-de-geinoord-his")
    assert again == changed
    assert again is not None and again.mllp_addresses == ("192.0.2.0/24",)


def test_migration_0009_keeps_existing_clients_without_v2_rights(database: Database) -> None:
    reg = read_registrations([EXAMPLES / "praktijk-batau-his.client.json"])[0]
    config = database._alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
        columns = {c["name"] for c in sa.inspect(connection).get_columns("clients")}
        assert "v2_facilities" not in columns
        connection.execute(  # a registration as 0008 stored it
            sa.text(
                "INSERT INTO clients (client_id, name, organization, role, jwks, scopes, active, dev_only, "
                "created_at) VALUES (:id, :name, :org, :role, :jwks, :scopes, :active, :dev, :at)"
            ).bindparams(
                sa.bindparam("jwks", type_=CLIENTS.c.jwks.type),
                sa.bindparam("scopes", type_=CLIENTS.c.scopes.type),
            ),
            {
                "id": reg.client_id,
                "name": reg.name,
                "org": reg.organization,
                "role": reg.role,
                "jwks": reg.jwks,
                "scopes": list(reg.scopes),
                "active": True,
                "dev": True,
                "at": datetime(2026, 11, 1),
            },
        )
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert database.is_current()
    stored = get_client(database, reg.client_id)
    assert stored is not None and stored.scopes == reg.scopes
    assert (stored.v2_facilities, stored.mllp_certificates, stored.mllp_addresses) == ((), (), ())
