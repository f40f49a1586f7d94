"""Reference parameters with target types (`Provenance?patient=` is `target.where(resolve() is
Patient)`) index and match only references to those types, on both backends; migration 0006 drops
the rows written before."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from fhir_gateway.fhir.search import parse_search
from fhir_gateway.store.database import Database
from fhir_gateway.store.index import IndexRow, index_rows
from fhir_gateway.store.repository import Repository
from fhir_gateway.store.tables import SearchIndexRow

IX = SearchIndexRow.__table__
TARGETS = [
    "ServiceRequest/sr-1",
    "Patient/p-1",
    "Patient/p-2/_history/3",
    "https://other.example/fhir/Patient/p-9",
    "urn:uuid:6f0c8a3e-7d1b-4a59-9d8e-0f1e2d3c4b5a",
]


def _provenance() -> dict[str, object]:
    return {
        "resourceType": "Provenance",
        "recorded": "2026-11-30T10:00:00Z",
        "target": [{"reference": r} for r in TARGETS],
        "agent": [{"who": {"reference": "Organization/praktijk"}}],
    }


def _values(rows: list[IndexRow], param: str) -> list[object]:
    return sorted(str(value) for name, _system, value, *_ in rows if name == param)


def test_patient_rows_hold_only_patient_references() -> None:
    rows = index_rows("Provenance", _provenance())
    assert _values(rows, "patient") == [
        "Patient/p-1",
        "Patient/p-2",
        "https://other.example/fhir/Patient/p-9",
    ]
    assert len(_values(rows, "target")) == len(TARGETS)  # `target` has no target types: all of them


def test_patient_search_matches_patients_only(database: Database) -> None:
    with database.connection(write=True) as s:
        stored = Repository(s).create(_provenance())
    with database.connection(write=False) as s:
        repo = Repository(s)

        def ids(param: str, value: str) -> list[str]:
            return [m.id for m in repo.search(parse_search("Provenance", [(param, value)])).matches]

        assert ids("patient", "Patient/p-1") == [stored.id]
        assert ids("patient", "p-2") == [stored.id]  # the single target type completes a bare id
        assert ids("patient", "ServiceRequest/sr-1") == []  # was a match before 0006
        assert ids("target", "ServiceRequest/sr-1") == [stored.id]


def test_migration_0006_drops_rows_of_other_types(database: Database) -> None:
    with database.connection(write=True) as s:
        stored = Repository(s).create(_provenance())
    config = database._alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        connection.execute(  # what index_rows wrote before: every target as a `patient` row
            sa.insert(IX),
            [
                {"resource_pk": stored.pk, "resource_type": "Provenance", "param": "patient", "value": v}
                for v in ("ServiceRequest/sr-1", "urn:uuid:6f0c8a3e-7d1b-4a59-9d8e-0f1e2d3c4b5a")
            ],
        )
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with database.engine.connect() as connection:
        left = connection.execute(
            sa.select(IX.c.value).where(IX.c.resource_pk == stored.pk, IX.c.param == "patient")
        ).scalars()
        assert sorted(left) == ["Patient/p-1", "Patient/p-2", "https://other.example/fhir/Patient/p-9"]
