"""Whole-type reads of current resources that the repository's FHIR search does not serve:
is the store empty, and the directory's contents (read again only when its generation in
`cache_generations` changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from fhir_gateway.store.tables import ResourceRow, SearchIndexRow


def is_empty(connection: sa.Connection) -> bool:
    """No resource stored at all (not even a deleted one)."""
    return connection.execute(sa.select(ResourceRow.pk).limit(1)).first() is None


def current_contents(connection: sa.Connection, types: Sequence[str]) -> Iterable[dict[str, Any]]:
    """The content of every resource of `types` that is not deleted."""
    return connection.execute(
        sa.select(ResourceRow.content).where(
            ResourceRow.resource_type.in_(list(types)), ResourceRow.deleted.is_(False)
        )
    ).scalars()


def registered_refs(connection: sa.Connection, types: Sequence[str]) -> frozenset[str]:
    """`Type/id` of the resources of `types` that lie in some organisation's compartment: the
    Practitioner(Role) records a practice registered for itself, beside the public directory.
    Read with the directory: a record is registered in the transaction that creates it and never
    becomes public, so the directory's generation (`cache_generations`) also keys this set."""
    R, IX = ResourceRow.__table__, SearchIndexRow.__table__
    in_compartment = (
        sa.select(IX.c.resource_pk).where(IX.c.resource_pk == R.c.pk, IX.c.param == "_compartment").exists()
    )
    rows = connection.execute(
        sa.select(R.c.resource_type, R.c.id).where(
            R.c.resource_type.in_(list(types)), R.c.deleted.is_(False), in_compartment
        )
    )
    return frozenset(f"{rtype}/{rid}" for rtype, rid in rows)
