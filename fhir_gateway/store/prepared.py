"""The store's hot statements, compiled once per dialect and run on the DBAPI cursor.

A referral writes ~40 rows in a dozen statements. Through `Connection.execute` each statement
cost ~100 µs of SQLAlchemy machinery (cache key, compiled-cache lookup, result set-up) on top of
~30 µs of database work. Here the SQL string, the parameter order and the type processors
(JSON, DateTime, Boolean — exactly the ones SQLAlchemy would apply) are worked out once, so a
statement costs little more than the driver call. Errors come out as SQLAlchemy's exception
classes, so callers handle them as before (503 for an unavailable database, IntegrityError...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None


class _Compiled:
    __slots__ = ("columns", "literals", "named", "names", "processors", "result_processors", "sql")

    def __init__(self, stmt: sa.Executable, keys: Sequence[str], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.named = compiled.positiontup is None
        binds = {name: bp for bp, name in compiled.bind_names.items()}
        self.names: list[str] = list(binds) if self.named else list(compiled.positiontup)
        # literals in the statement (e.g. param == '_compartment') are anonymous binds with values
        self.literals = {n: bp.effective_value for n, bp in binds.items() if not bp.required}
        self.processors: list[tuple[int, Callable[[Any], Any]]] = [
            (i, f)
            for i, n in enumerate(self.names)
            if (f := binds[n].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]
        returned = getattr(stmt, "selected_columns", None)
        if returned is None and getattr(stmt, "_returning", None):
            returned = stmt._returning  # type: ignore[attr-defined]
        self.columns: list[str] = [c.key for c in returned] if returned is not None else []
        self.result_processors: list[Processor] = (
            [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returned]
            if returned is not None
            else []
        )

    def bind(self, params: dict[str, Any]) -> Any:
        if self.literals:
            params = {**self.literals, **params}
        values = [params[n] for n in self.names]
        for i, f in self.processors:
            values[i] = f(values[i])
        return dict(zip(self.names, values, strict=True)) if self.named else values

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

    def rows(self, connection: sa.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run once; the rows (if the statement returns any) as dicts keyed by column."""
        compiled = self._compiled(connection)
        bound = compiled.bind(params)
        with _cursor(connection, compiled.sql, bound) as cursor:
            cursor.execute(compiled.sql, bound)
            if not compiled.columns:
                return []
            return [compiled.row(r) for r in cursor.fetchall()]

    def first(self, connection: sa.Connection, params: dict[str, Any]) -> dict[str, Any] | None:
        found = self.rows(connection, params)
        return found[0] if found else None

    def many(self, connection: sa.Connection, params: Sequence[dict[str, Any]]) -> None:
        """executemany: one driver call for all rows (no rows returned)."""
        if not params:
            return
        compiled = self._compiled(connection)
        bound = [compiled.bind(p) for p in params]
        with _cursor(connection, compiled.sql, bound) as cursor:
            cursor.executemany(compiled.sql, bound)


@contextmanager
def _cursor(connection: sa.Connection, sql: str, params: Any) -> Iterator[Any]:
    """A DBAPI cursor in the connection's current transaction (SQLAlchemy began it). A driver
    error goes through SQLAlchemy's own handling — `handle_error` listeners, invalidation of a
    dead connection, wrapping as `sa.exc.DBAPIError` — exactly as for `Connection.execute`."""
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except connection.dialect.loaded_dbapi.Error as exc:
        connection._handle_dbapi_exception(exc, sql, params, cursor, None)
    finally:
        cursor.close()
