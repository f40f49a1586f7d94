"""Client registrations and used client-assertion ids in SQL (tables `clients`, `used_jtis`).

What a registration may contain is checked in `security/clients.py` before anything is
stored; these functions read and write rows as plain mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store.tables import ClientRow, UsedJtiRow

CLIENTS = ClientRow.__table__
USED_JTIS = UsedJtiRow.__table__


def client_row(connection: sa.Connection, client_id: str) -> Mapping[str, Any] | None:
    return connection.execute(sa.select(CLIENTS).where(CLIENTS.c.client_id == client_id)).mappings().first()


def client_rows(connection: sa.Connection) -> list[Mapping[str, Any]]:
    """Every registration, by client id."""
    return list(connection.execute(sa.select(CLIENTS).order_by(CLIENTS.c.client_id)).mappings().all())


def upsert_client(
    connection: sa.Connection, client_id: str, values: dict[str, Any], created_at: datetime
) -> None:
    """Replace a registration's values, or insert it (stamped `created_at`) when it is new."""
    exists = connection.execute(
        sa.select(CLIENTS.c.client_id).where(CLIENTS.c.client_id == client_id)
    ).first()
    if exists:
        connection.execute(sa.update(CLIENTS).where(CLIENTS.c.client_id == client_id).values(**values))
    else:
        connection.execute(sa.insert(CLIENTS).values(client_id=client_id, created_at=created_at, **values))


def set_active(connection: sa.Connection, client_id: str, active: bool) -> bool:
    """False when no such client is registered."""
    result = connection.execute(
        sa.update(CLIENTS).where(CLIENTS.c.client_id == client_id).values(active=active)
    )
    return bool(result.rowcount)


def remember_jti(
    connection: sa.Connection,
    client_id: str,
    jti: str,
    expires_at: datetime,
    now: datetime,
    *,
    purge_batch: int,
) -> None:
    """Insert (client_id, jti), first removing up to `purge_batch` expired ids. The primary key
    makes a replay raise IntegrityError, atomically across replicas sharing one database."""
    expired = (
        sa.select(USED_JTIS.c.client_id, USED_JTIS.c.jti)
        .where(USED_JTIS.c.expires_at < now)
        .limit(purge_batch)
    )
    if connection.dialect.name != "sqlite":  # replicas purging at once skip each other's rows
        expired = expired.with_for_update(skip_locked=True)
    connection.execute(
        sa.delete(USED_JTIS).where(sa.tuple_(USED_JTIS.c.client_id, USED_JTIS.c.jti).in_(expired))
    )
    connection.execute(sa.insert(USED_JTIS).values(client_id=client_id, jti=jti, expires_at=expires_at))
