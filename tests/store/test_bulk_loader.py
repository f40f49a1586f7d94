"""The worklist benchmark's bulk loader writes what the gateway itself writes: `populate` compares
the first resources it stored with `index_rows` and the store's own JSON, and raises on any
difference — here on a few hundred tasks, so a change to the index or the store cannot leave the
benchmark measuring other rows than production has."""

from __future__ import annotations

import sqlalchemy as sa

from benchmarks import worklist
from fhir_gateway.store.database import Database
from fhir_gateway.store.tables import ResourceRow


def test_bulk_load_matches_the_gateway(database: Database, database_url: str) -> None:
    worklist.populate(database_url, 0, 300, chunk=120)
    with database.engine.connect() as conn:
        kinds = dict(
            conn.execute(
                sa.select(ResourceRow.resource_type, sa.func.count()).group_by(ResourceRow.resource_type)
            ).all()
        )
    assert kinds == {"Task": 300, "Communication": 300}
