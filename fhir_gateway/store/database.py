"""Engine set-up, migrations and transactions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fhir_gateway.store.checkpoint import AUTOCHECKPOINT_PAGES, WalCheckpointer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database did not answer; the HTTP layer turns this into 503."""

    diagnostics = "The database is not reachable; retry later"


class StorageFull(DatabaseUnavailable):
    """The database refuses writes for lack of space (SQLITE_FULL, SQLSTATE 53100)."""

    diagnostics = "The database storage is full; nothing was stored; retry later"
    condition = "writes refused: the database storage is full"


class StorageReadOnly(DatabaseUnavailable):
    """The database is read-only (SQLITE_READONLY, SQLSTATE 25006: a standby, a read-only volume)."""

    diagnostics = "The database is read-only at the moment; nothing was stored; retry later"
    condition = "writes refused: the database is read-only"


WriteRefusal = StorageFull | StorageReadOnly


_SQLITE_FULL, _SQLITE_READONLY = 13, 8  # primary result codes (extended codes keep them in the low byte)


def refusal(exc: BaseException) -> DatabaseUnavailable | None:
    """The ONE mapping from a driver error to "the store refuses, retry later" (None: a real bug
    or a constraint, which must not be hidden behind a 503). Says what, never which data."""
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None) or ""
    sqlite_code = (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF
    if sqlite_code == _SQLITE_FULL or sqlstate == "53100":
        return StorageFull(type(orig).__name__)
    if sqlite_code == _SQLITE_READONLY or sqlstate == "25006":
        return StorageReadOnly(type(orig).__name__)
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or sqlstate.startswith(("08", "57P")):
        return DatabaseUnavailable(type(orig).__name__)
    return None


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """Owns the engine. `transaction()` is the only way to write: commit happens on a clean exit."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._sqlite_writer = threading.RLock()
        self._checkpointer: WalCheckpointer | None = None
        # The refusal of the latest write while no write has succeeded since: /readyz reports it
        # (a test write per probe would cost a write; this costs one check per write transaction).
        self.write_refused: WriteRefusal | None = None
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            self.engine = sa.create_engine(
                url,
                echo=echo,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=8,
                max_overflow=16,
            )
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = sa.create_engine(
                url,
                echo=echo,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
            )
            sa.event.listen(self.engine, "handle_error", _recycle_read_only_sessions)

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    # -- migrations ----------------------------------------------------------------------------
    def _alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        return cfg

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        cfg = self._alembic_config()
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def is_current(self) -> bool:
        return self.current_revision() == self.head_revision()

    # -- transactions --------------------------------------------------------------------------
    @contextmanager
    def connection(self, *, write: bool) -> Iterator[sa.Connection]:
        """A Core connection in one transaction, committed on a clean exit of a write.

        The FHIR store runs on this: the ORM layer cost ~1 ms per statement and the
        repository maps rows itself. Writers on SQLite take the write lock up front (BEGIN
        IMMEDIATE), so check-then-insert sequences such as conditional create are serialised
        instead of failing late with 'database is locked'."""
        if write and self.is_sqlite:
            # One writer at a time in this process: waiting on a lock is fair and immediate,
            # SQLite's busy-timeout retries are neither (p99 of seconds at 10 concurrent writers).
            with self._sqlite_writer:
                if self._checkpointer is None:
                    self._checkpointer = self._start_checkpointer()
                with self._connection(write=True) as connection:
                    yield connection
            return
        with self._connection(write=write) as connection:
            yield connection

    @contextmanager
    def _connection(self, *, write: bool) -> Iterator[sa.Connection]:
        """Driver errors that mean "the store refuses" (down, full, read-only) leave here as
        `DatabaseUnavailable`, whichever statement or the commit raised them."""
        try:
            with self._transaction(write=write) as connection:
                yield connection
        except sa.exc.DBAPIError as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            if write and isinstance(refused, WriteRefusal):
                self.write_refused = refused
            raise refused from exc

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sa.Connection]:
        connection = self.engine.connect()
        try:
            if write and self.is_sqlite:
                connection = connection.execution_options(sqlite_immediate=True)
            transaction = connection.begin()
            watch = write and self.write_refused is not None
            changes = self._sqlite_changes(connection) if watch else None
            try:
                yield connection
                if write:
                    for action in connection.info.pop(_BEFORE_COMMIT, ()):
                        action()
                    transaction.commit()
                    for action in connection.info.pop(_AFTER_COMMIT, ()):
                        action()
                    if watch and (not self.is_sqlite or self._sqlite_changes(connection) != changes):
                        self.write_refused = None
                else:
                    transaction.rollback()
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise
        finally:
            for key in (_BEFORE_COMMIT, _AFTER_COMMIT, _SCRATCH):  # rolled back: they never run
                connection.info.pop(key, None)
            connection.close()

    def _sqlite_changes(self, connection: sa.Connection) -> int | None:
        """Rows this SQLite connection has changed so far, so a write transaction that changed
        nothing (an empty outbox claim, which still fits in a full database) does not count as a
        successful write. PostgreSQL refuses every INSERT/UPDATE/DELETE in a read-only transaction
        whatever it matches, so there a committed write transaction is taken as a write (None):
        psycopg has no cheap change count."""
        if not self.is_sqlite:
            return None
        return int(connection.connection.dbapi_connection.total_changes)  # type: ignore[union-attr]

    def _start_checkpointer(self) -> WalCheckpointer | None:
        path = sa.engine.make_url(self.url).database
        if not path or path == ":memory:":
            return None
        return WalCheckpointer(path, self._sqlite_writer).start()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is off).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # checkpoints run in WalCheckpointer's thread; a commit does one only past this safety net
    cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _recycle_read_only_sessions(context: sa.engine.ExceptionContext) -> None:
    """A PostgreSQL session keeps `default_transaction_read_only` from when it connected (a
    standby, `ALTER DATABASE … SET default_transaction_read_only`): treat the refusal as a
    disconnect, so the pool drops all its sessions and the next ones see the database as it is
    now — the gateway recovers without a restart once the database is writable again."""
    if isinstance(refusal(context.original_exception), StorageReadOnly):
        context.is_disconnect = True


def _sqlite_on_begin(connection: sa.Connection) -> None:
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_AFTER_COMMIT = "fhir_gateway_after_commit"  # key in `Connection.info`, emptied per transaction
_BEFORE_COMMIT = "fhir_gateway_before_commit"  # the same, run just before the commit
_SCRATCH = "fhir_gateway_scratch"  # the same: what a write transaction gathers to write at the end


def after_commit(connection: sa.Connection, action: Callable[[], None]) -> None:
    """Run `action` once this connection's write transaction (`Database.connection`) has
    committed, never when it rolls back (the business counters: a transaction Bundle refused
    after its referral was routed counts none). A list in `Connection.info`, not a SQLAlchemy
    event listener: registering one per referral cost more than the counting."""
    connection.info.setdefault(_AFTER_COMMIT, []).append(action)


def before_commit(connection: sa.Connection, action: Callable[[], None]) -> None:
    """Run `action` inside this write transaction (`Database.connection`) just before it
    commits: rows gathered write by write go out as one statement (the report's read model).
    An error in it rolls the transaction back."""
    connection.info.setdefault(_BEFORE_COMMIT, []).append(action)


def scratch(connection: sa.Connection) -> dict[str, Any]:
    """A dict that lives as long as this connection's transaction (dropped at commit or
    rollback): state a `before_commit` action writes out."""
    return connection.info.setdefault(_SCRATCH, {})  # type: ignore[no-any-return]
