"""The store on SQLite and PostgreSQL: migrations, versions, history, index, outbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fhir_gateway.fhir.search import parse_search
from fhir_gateway.store.database import Database
from fhir_gateway.store.index import index_rows
from fhir_gateway.store.repository import Repository
from fhir_gateway.store.tables import OutboxRow, SearchIndexRow, SQLModel


def test_migrations_match_table_definitions(database: Database) -> None:
    assert database.is_current()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_upgrade_is_idempotent(database: Database) -> None:
    database.upgrade()
    assert database.current_revision() == database.head_revision()


def test_versions_history_and_index_stay_in_step(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        first = repo.create(
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "owner": {"reference": "Organization/a"},
            }
        )
        second, created = repo.update({**first.content, "owner": {"reference": "Organization/b"}}, if_match=1)
        assert not created and second.version_id == 2
    with database.connection(write=False) as s:
        repo = Repository(s)
        owners = (
            s.execute(sa.select(SearchIndexRow.value).where(SearchIndexRow.param == "owner")).scalars().all()
        )
        assert owners == ["Organization/b"]  # the old value left the index
        assert repo.vread("Task", first.id, 1).content["owner"]["reference"] == "Organization/a"
        history, more = repo.history("Task", first.id)
        assert [h.version_id for h in history] == [2, 1] and more is None
    with database.connection(write=True) as s:
        assert Repository(s).delete("Task", first.id) is not None
    with database.connection(write=False) as s:
        repo = Repository(s)
        assert repo.find("Task", first.id) is None and repo.exists("Task", first.id)
        assert s.execute(sa.select(sa.func.count()).select_from(SearchIndexRow)).scalar_one() == 0
        assert repo.count(parse_search("Task", [])) == 0


def test_rollback_leaves_nothing(database: Database) -> None:
    try:
        with database.connection(write=True) as s:
            Repository(s).create({"resourceType": "Patient"})
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with database.connection(write=False) as s:
        assert Repository(s).count(parse_search("Patient", [])) == 0


def test_outbox_row_commits_with_the_change(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        task = repo.create({"resourceType": "Task", "status": "requested", "intent": "order"})
        event = repo.enqueue("rest-hook", "https://example.org/hook", {"focus": task.reference})
    with database.connection(write=False) as s:
        row = s.execute(sa.select(OutboxRow.__table__).where(OutboxRow.event_id == event)).one()
        assert row.status == "pending" and row.payload == {"focus": task.reference}


def test_keyset_paging_is_stable(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        for i in range(25):
            repo.create({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": str(i)}]})
    seen: list[str] = []
    cursor = None
    while True:
        query = parse_search("Patient", [("_count", "10")])
        query.cursor = cursor
        with database.connection(write=False) as s:
            page = Repository(s).search(query)
        seen += [m.content["identifier"][0]["value"] for m in page.matches]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [str(i) for i in range(25)]


def test_create_all_writes_what_create_writes(database: Database) -> None:
    """The batched creates (one statement on PostgreSQL) leave the same rows, history and index
    as one create after the other, run the listeners once each, and a failure in the batch
    (an id already taken) fails the whole transaction."""
    seen: list[str] = []
    body = {"resourceType": "Task", "status": "requested", "intent": "order"}
    with database.connection(write=True) as s:
        repo = Repository(s, on_write=[lambda _repo, stored: seen.append(stored.reference)])
        task, plan = repo.create_all(
            [
                ({**body, "owner": {"reference": "Organization/a"}}, "t-1"),
                (
                    {
                        "resourceType": "CarePlan",
                        "status": "active",
                        "intent": "plan",
                        "subject": {"reference": "Patient/p"},
                    },
                    None,
                ),
            ]
        )
        single = repo.create({**body, "owner": {"reference": "Organization/b"}})
    assert seen == [task.reference, plan.reference, single.reference]
    assert task.id == "t-1" and task.pk and plan.pk and task.pk != plan.pk
    with database.connection(write=False) as s:
        repo = Repository(s)
        assert repo.read("Task", "t-1").content["owner"] == {"reference": "Organization/a"}
        assert repo.vread("CarePlan", plan.id, 1).content["status"] == "active"
        found = repo.search(parse_search("Task", [("owner", "Organization/a")]))
        assert [m.id for m in found.matches] == ["t-1"]
        assert repo.count(parse_search("CarePlan", [("subject", "Patient/p")])) == 1
    try:
        with database.connection(write=True) as s:
            Repository(s).create_all([(body, "t-2"), (body, "t-1")])  # t-1 exists
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a taken id must fail the batch")
    with database.connection(write=False) as s:
        assert not Repository(s).exists("Task", "t-2")  # nothing of the failed batch stayed


def test_stored_index_rows_are_exactly_the_computed_ones(database: Database) -> None:
    """Both backends write index rows from one JSON parameter: every column (dates to the
    microsecond, NULLs, quotes and non-ASCII) must arrive as `index_rows` made it, and on SQLite
    the dates as the text SQLAlchemy itself would store (searches compare that text)."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
        "name": [{"family": 'Ölçer-d\'Hondt "jr"', "given": ["Zoë"]}],
        "birthDate": "1941-02",
        "gender": "female",
        "address": [{"city": "'s-Hertogenbosch", "postalCode": "5211 AB"}],
    }
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "authoredOn": "2026-12-04T22:15:30.123456+01:00",
        "owner": {"reference": "Organization/a"},
    }
    with database.connection(write=True) as s:
        repo = Repository(s, base_url="http://gw/fhir")
        written = [
            repo.create(patient),
            *repo.create_all([(task, None), ({**task, "status": "ready"}, None)]),
        ]
    columns = ("param", "system", "value", "text", "low", "high")
    with database.connection(write=False) as s:
        for stored in written:
            got = s.execute(
                sa.select(*(SearchIndexRow.__table__.c[c] for c in columns)).where(
                    SearchIndexRow.resource_pk == stored.pk, SearchIndexRow.param != "_compartment"
                )
            ).all()
            expected = index_rows(stored.resource_type, stored.content, "http://gw/fhir")
            assert sorted(map(tuple, got), key=repr) == sorted(expected, key=repr)
            assert any(low is not None for _p, _s, _v, _t, low, _h in expected)  # dates were compared
    if database.is_sqlite:
        stored_as = sa.DateTime().dialect_impl(database.engine.dialect).bind_processor(database.engine.dialect)
        with database.engine.connect() as c:
            raw = c.exec_driver_sql(
                "SELECT low, high FROM search_index WHERE low IS NOT NULL OR high IS NOT NULL"
            ).all()
            typed = c.execute(
                sa.select(SearchIndexRow.low, SearchIndexRow.high).where(
                    sa.or_(SearchIndexRow.low.is_not(None), SearchIndexRow.high.is_not(None))
                )
            ).all()
        assert raw and [tuple(map(stored_as, row)) for row in typed] == [tuple(row) for row in raw]
        assert any(row[0].endswith(".000000") for row in raw)  # a whole second kept its digits
