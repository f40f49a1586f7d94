"""String searches are prefix matches on the string rows; on PostgreSQL they run on
`ix_search_string` (a pattern operator class: LIKE cannot use a plain btree under C.UTF-8 or a
linguistic collation), so `Patient?name=` does not read the whole search index."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fhir_gateway.fhir.search import parse_search
from fhir_gateway.store import search_sql
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository

NAMES = ["Jansen", "Janssen", "Jánsma", "de Jong", "Bakker"]


def _patients(database: Database) -> dict[str, str]:
    with database.connection(write=True) as s:
        repo = Repository(s)
        return {
            name: repo.create({"resourceType": "Patient", "name": [{"family": name}]}).id for name in NAMES
        }


def test_prefix_matches_string_rows_only(database: Database) -> None:
    ids = _patients(database)
    with database.connection(write=True) as s:  # a token row whose value starts the same way
        Repository(s).create(
            {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "jans-1"}]}
        )
    with database.connection(write=False) as s:
        repo = Repository(s)

        def found(param: str, value: str) -> set[str]:
            return {m.id for m in repo.search(parse_search("Patient", [(param, value)])).matches}

        assert found("family", "jans") == {ids["Jansen"], ids["Janssen"], ids["Jánsma"]}  # accents folded
        assert found("family", "JANSS") == {ids["Janssen"]}
        assert found("name", "de j") == {ids["de Jong"]}
        assert found("family:contains", "ak") == {ids["Bakker"]}


@pytest.mark.postgres
def test_postgres_name_search_runs_on_the_string_index(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        with database.connection(write=True) as s:
            repo = Repository(s)
            for i in range(3000):
                repo.create({"resourceType": "Patient", "name": [{"family": f"Naam{i:05d}"}]})
        with database.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE resources")
            conn.exec_driver_sql("ANALYZE search_index")
        statement = search_sql.page_statement(parse_search("Patient", [("family", "naam0012")]), "postgresql")
        sql = str(statement.compile(dialect=database.engine.dialect, compile_kwargs={"literal_binds": True}))
        with database.engine.connect() as conn:
            plan = "\n".join(row[0] for row in conn.execute(sa.text("EXPLAIN " + sql.replace("%%", "%"))))
            rows = conn.exec_driver_sql(sql).all()
        assert "ix_search_string" in plan, plan
        assert "~>=~" in plan, plan  # the prefix became an index range, not a filter over all rows
        assert len(rows) == 10  # Naam00120 … Naam00129
    finally:
        with database.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM resources WHERE resource_type = 'Patient'")
        database.dispose()
