"""The store's hot statements, compiled once per dialect and run on the DBAPI cursor.

A referral writes ~40 rows in a dozen statements. Through `Connection.execute` each statement
cost ~100 µs of SQLAlchemy machinery (cache key, compiled-cache lookup, result set-up) on top of
~30 µs of database work; even `Connection.exec_driver_sql` adds ~12 µs a statement (execution
context, cursor, result object: +15 % on a referral, benchmarks/README.md). Here the SQL string,
the parameter names and the type processors (JSON, DateTime, Boolean — exactly the ones
SQLAlchemy would apply) are worked out once, so a statement costs little more than the driver call.

Only documented API is used. Compiling: `ClauseElement.compile()`, `SQLCompiler.string`,
`.params` and `.binds`, `BindParameter.required`, `TypeEngine.dialect_impl()` with
`bind_processor()` / `result_processor()`, `ReturnsRows.exported_columns`. Parameters go by name:
a positional dialect (pysqlite's `qmark`) renders the SQL through a second instance of its own
dialect class in the `named` paramstyle (the driver takes both), so no position order is read out
of the compiler. Running: the cursor of `Connection.connection` (the DBAPI connection in the
transaction SQLAlchemy began). A driver error is handed to SQLAlchemy's own handling by running
the same SQL through `Connection.exec_driver_sql` with a `do_execute` listener that raises it
(`_as_sqlalchemy_error`): `handle_error` listeners, invalidation of a dead connection (the pool
recovers), wrapping as `sa.exc.DBAPIError` subclasses — callers answer 503 / 409 as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, ExecutionContext
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.sql.expression import ReturnsRows

Processor = Callable[[Any], Any]

_NAMED = "named"  # `:name`, accepted by pysqlite next to its default `qmark`


def sql_dialect(dialect: Dialect) -> Dialect:
    """The dialect to render the SQL with: `dialect` itself when it already passes parameters by
    name (psycopg: `pyformat`), else a new instance of its class in the `named` paramstyle."""
    if not dialect.positional:
        return dialect
    named = type(dialect)(paramstyle=_NAMED)
    if named.positional:  # pragma: no cover - a dialect that ignores `paramstyle`
        raise RuntimeError(f"{dialect.name}: cannot compile with named parameters")
    return named


class _Compiled:
    __slots__ = ("columns", "literals", "names", "processors", "result_processors", "sql")

    def __init__(self, stmt: sa.Executable, keys: Sequence[str], dialect: Dialect) -> None:
        # The SQL text from a named-paramstyle twin; the type processors from the engine's own
        # dialect, which carries its settings (json_serializer / json_deserializer).
        compiled = stmt.compile(dialect=sql_dialect(dialect), column_keys=list(keys))  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        values: dict[str, Any] = compiled.params  # every bind rendered in the SQL, by its name there
        binds = compiled.binds
        processors: dict[str, Processor] = {
            n: f
            for n in values
            if (f := binds[n].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        # the caller's parameters; literals in the statement (param != '_compartment') are
        # anonymous binds with a value: bound (and processed) once, here
        self.names: tuple[str, ...] = tuple(n for n in values if binds[n].required)
        self.literals: dict[str, Any] = {
            n: (processors[n](v) if n in processors else v)
            for n, v in values.items()
            if not binds[n].required
        }
        self.processors: tuple[tuple[str, Processor], ...] = tuple(
            (n, f) for n, f in processors.items() if n in self.names
        )
        returned = list(stmt.exported_columns) if isinstance(stmt, ReturnsRows) else []
        self.columns: tuple[str, ...] = tuple(c.key for c in returned)
        if len(set(self.columns)) != len(self.columns) or None in self.columns:
            raise ValueError(f"columns need distinct names (label them): {self.columns}")
        self.result_processors: tuple[Processor | None, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returned
        )

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        bound = {n: params[n] for n in self.names}
        for n, f in self.processors:
            bound[n] = f(bound[n])
        if self.literals:
            bound.update(self.literals)
        return bound

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        return {
            c: (f(v) if f else v) for c, v, f in zip(self.columns, raw, self.result_processors, strict=True)
        }


class Prepared:
    """One statement with a fixed set of parameter names; compiled lazily per dialect. An INSERT
    takes every column but the primary key unless `keys` names the ones it sets."""

    def __init__(self, stmt: sa.Executable, keys: Sequence[str] = ()) -> None:
        self.stmt = stmt
        if not keys and isinstance(stmt, sa.Insert):
            keys = [c.key for c in stmt.table.c if not c.primary_key]
        self.keys = tuple(keys)
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, connection: sa.Connection) -> _Compiled:
        name = connection.dialect.name
        compiled = self._by_dialect.get(name)
        if compiled is None:
            compiled = self._by_dialect[name] = _Compiled(self.stmt, self.keys, connection.dialect)
        return compiled

    def sql(self, connection: sa.Connection) -> str:
        """The SQL string sent to the driver on this connection's dialect."""
        return self._compiled(connection).sql

    def rows(self, connection: sa.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run once; the rows (if the statement returns any) as dicts keyed by column."""
        compiled = self._compiled(connection)
        bound = compiled.bind(params)
        try:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(compiled.sql, bound)
                return [compiled.row(r) for r in cursor.fetchall()] if compiled.columns else []
            finally:
                cursor.close()
        except connection.dialect.loaded_dbapi.Error as exc:
            _as_sqlalchemy_error(connection, compiled.sql, bound, exc)

    def first(self, connection: sa.Connection, params: dict[str, Any]) -> dict[str, Any] | None:
        found = self.rows(connection, params)
        return found[0] if found else None

    def many(self, connection: sa.Connection, params: Sequence[dict[str, Any]]) -> None:
        """executemany: one driver call for all rows (no rows returned)."""
        if params:
            compiled = self._compiled(connection)
            _executemany(connection, compiled.sql, [compiled.bind(p) for p in params])

    def many_positional(self, connection: sa.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """executemany of rows by position, already as the driver takes them: for SQL written
        with the driver's own positional markers (`?` on SQLite), where binding a dict per row
        cost more than writing the row. No type processing: the caller formats its values."""
        if rows:
            _executemany(connection, self._compiled(connection).sql, rows)


def _executemany(connection: sa.Connection, sql: str, rows: Sequence[Any]) -> None:
    try:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()
    except connection.dialect.loaded_dbapi.Error as exc:
        _as_sqlalchemy_error(connection, sql, rows, exc)


# -- driver errors ----------------------------------------------------------------------------
_REPLAY = "fhir_gateway_prepared_error"  # execution option: the driver error to raise again


def _as_sqlalchemy_error(connection: sa.Connection, sql: str, params: Any, exc: Exception) -> NoReturn:
    """Raise `exc` (a driver error of a statement run on the raw cursor) as `Connection.execute`
    would have: the same SQL and parameters go through `exec_driver_sql`, whose `do_execute` /
    `do_executemany` listener (`_raise_replayed`) raises `exc` instead of calling the driver, so
    SQLAlchemy's own error handling runs on it — `handle_error` listeners, `is_disconnect` and
    invalidation, wrapping as the matching `sa.exc.DBAPIError` subclass — and the wrapped error
    propagates from here. Only on the error path; nothing is sent to the database.

    One difference: if the driver connection is already closed (a PostgreSQL backend terminated
    mid-transaction), opening the replay's cursor fails first, and that error ("the connection
    is closed", also a disconnect: invalidated, `OperationalError`) is the one raised, with
    `exc` as its `__context__`."""
    connection.exec_driver_sql(sql, params, execution_options={_REPLAY: exc})
    raise AssertionError("the replayed driver error was not raised") from exc  # pragma: no cover


def _raise_replayed(_cursor: Any, _statement: str, _parameters: Any, context: ExecutionContext) -> bool:
    replayed = context.execution_options.get(_REPLAY)
    if replayed is not None:
        raise replayed
    return False  # any other statement: the driver call as usual


# On the base class: every dialect of every engine (the cost elsewhere: one call per statement).
sa.event.listen(DefaultDialect, "do_execute", _raise_replayed)
sa.event.listen(DefaultDialect, "do_executemany", _raise_replayed)
