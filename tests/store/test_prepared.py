"""`store/prepared.py` runs the hot statements on the DBAPI cursor: the same SQL, the same type
processing and the same errors as `Connection.execute`. These tests also fail loudly when a
SQLAlchemy upgrade changes what the module relies on (named paramstyle, compiler params/binds,
the `do_execute` replay of driver errors)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from fhir_gateway.store import cache_generations, repository, subscriptions, timers
from fhir_gateway.store.database import Database
from fhir_gateway.store.prepared import Prepared, sql_dialect
from fhir_gateway.vocabulary import DIRECTORY_TYPES

R = repository.R
HOT = {
    **{name: p for name, p in vars(repository).items() if isinstance(p, Prepared)},
    "subscriptions": subscriptions._SUBSCRIPTIONS,
    "directory_key": cache_generations._generations(tuple(DIRECTORY_TYPES)),
    **{f"add_timer_{d}": p for d, p in timers._ADD_TIMER.items()},
}


def _applies(name: str, dialect: str) -> bool:
    return not (name.endswith("_PG") and dialect != "postgresql") and not (
        name.startswith("add_timer_") and not name.endswith(dialect)
    )


def test_sql_is_the_dialects_own_with_named_parameters(database: Database) -> None:
    """The SQL sent is what `Connection.execute` would send, only with named placeholders (a
    positional dialect compiles it through a `named` twin of itself)."""
    dialect = database.engine.dialect
    assert not sql_dialect(dialect).positional
    with database.connection(write=False) as c:
        for name, p in HOT.items():
            if not _applies(name, dialect.name):
                continue
            own = str(p.stmt.compile(dialect=dialect, column_keys=list(p.keys)))
            sent = p.sql(c)
            if dialect.positional:
                sent = re.sub(r":[A-Za-z_][A-Za-z0-9_]*", "?", sent)
            assert sent == own, name


def test_types_round_trip_as_with_execute(database: Database) -> None:
    """JSON/JSONB, DateTime and Boolean go in and come out exactly as through `execute`."""
    when = datetime(2026, 3, 4, 5, 6, 7, 891011)
    content = {"resourceType": "Basic", "id": "b1", "nested": {"n": 1.5, "ok": True, "x": [None, "é"]}}
    values = {
        "resource_type": "Basic",
        "id": "b1",
        "version_id": 1,
        "last_updated": when,
        "deleted": True,
        "content": content,
    }
    with database.connection(write=True) as c:
        pk = repository._INSERT_RESOURCE.first(c, values)["pk"]  # type: ignore[index]
        c.execute(sa.insert(R), {**values, "id": "b2"})
        prepared = repository._SELECT_CURRENT.first(c, {"b_type": "Basic", "b_id": "b2"})
        executed = c.execute(sa.select(R).where(R.c.pk == pk)).one()._asdict()
    assert prepared is not None
    assert executed == {**values, "pk": pk}
    assert {**prepared, "pk": pk, "id": "b1"} == executed
    assert type(prepared["deleted"]) is bool and type(prepared["last_updated"]) is datetime


def _dup_values() -> dict[str, Any]:
    return {
        "resource_type": "Basic",
        "id": "dup",
        "version_id": 1,
        "last_updated": datetime(2026, 1, 1),
        "deleted": False,
        "content": {"resourceType": "Basic"},
    }


def test_driver_error_is_sqlalchemys_exception_and_runs_handle_error(database: Database) -> None:
    seen: list[BaseException] = []

    def listener(ctx: sa.engine.ExceptionContext) -> None:
        seen.append(ctx.original_exception)

    sa.event.listen(database.engine, "handle_error", listener)
    try:
        with pytest.raises(sa.exc.IntegrityError) as raised, database.connection(write=True) as c:
            repository._INSERT_RESOURCE.first(c, _dup_values())
            repository._INSERT_RESOURCE.first(c, _dup_values())
        assert isinstance(raised.value.orig, database.engine.dialect.loaded_dbapi.IntegrityError)
        assert raised.value.statement == repository._INSERT_RESOURCE._by_dialect[c.dialect.name].sql
        assert seen == [raised.value.orig]
        assert not raised.value.connection_invalidated

        with pytest.raises(sa.exc.IntegrityError), database.connection(write=True) as c:
            row = {"resource_pk": 987654321, "resource_type": "Basic", "param": "p", "system": None}
            row |= {"value": None, "text": None, "low": None, "high": None}
            Prepared(sa.insert(repository.IX)).many(c, [row, row])
    finally:
        sa.event.remove(database.engine, "handle_error", listener)


def test_index_rows_of_a_missing_resource_are_refused(database: Database) -> None:
    """The index insert (by position on SQLite, one JSON parameter on PostgreSQL) leaves a driver
    error as SQLAlchemy's IntegrityError, so callers answer it as before."""
    with pytest.raises(sa.exc.IntegrityError), database.connection(write=True) as c:
        row = (987654321, "Basic", "p", None, "v", None, datetime(2026, 1, 1), None)
        repository.Repository(c)._insert_index([row])


def test_disconnect_invalidates_the_connection(database: Database) -> None:
    """A `handle_error` listener may declare a disconnect (database.py does for PostgreSQL
    read-only sessions): the connection is invalidated and the pool hands out a fresh one."""

    def as_disconnect(ctx: sa.engine.ExceptionContext) -> None:
        ctx.is_disconnect = True

    sa.event.listen(database.engine, "handle_error", as_disconnect)
    try:
        with pytest.raises(sa.exc.IntegrityError) as raised, database.connection(write=True) as c:
            repository._INSERT_RESOURCE.first(c, _dup_values())
            repository._INSERT_RESOURCE.first(c, _dup_values())
    finally:
        sa.event.remove(database.engine, "handle_error", as_disconnect)
    assert raised.value.connection_invalidated
    with database.connection(write=False) as c:
        assert repository._SELECT_CURRENT.first(c, {"b_type": "Basic", "b_id": "dup"}) is None


def test_closed_driver_connection_is_a_disconnect(sqlite_url: str) -> None:
    """The connection dies under a statement: `OperationalError`/`ProgrammingError` with
    `connection_invalidated`, and the next transaction gets a working connection."""
    database = Database(sqlite_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised, database.connection(write=False) as c:
            c.connection.driver_connection.close()  # type: ignore[union-attr]
            repository._SELECT_CURRENT.first(c, {"b_type": "Basic", "b_id": "x"})
        assert raised.value.connection_invalidated
        with database.connection(write=False) as c:
            assert repository._SELECT_CURRENT.first(c, {"b_type": "Basic", "b_id": "x"}) is None
    finally:
        database.dispose()


def test_unlabelled_columns_are_refused(database: Database) -> None:
    """Rows are dicts by column key: two columns without a name would overwrite each other."""
    unlabelled = Prepared(sa.select(R.c.resource_type, sa.func.count(), sa.func.max(R.c.pk)))
    with database.connection(write=False) as c, pytest.raises(ValueError, match="label"):
        unlabelled.rows(c, {})
