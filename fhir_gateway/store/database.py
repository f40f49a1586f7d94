"""Engine set-up, migrations and transactions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database did not answer; the HTTP layer turns this into 503."""


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """Owns the engine. `transaction()` is the only way to write: commit happens on a clean exit."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
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
    def session(self, *, write: bool) -> Iterator[Session]:
        """A session in one transaction. Writers on SQLite take the write lock up front
        (BEGIN IMMEDIATE), so check-then-insert sequences such as conditional create are
        serialised instead of failing late with 'database is locked'."""
        try:
            connection = self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise DatabaseUnavailable(str(exc.orig.__class__.__name__)) from exc
        try:
            if write and self.is_sqlite:
                connection = connection.execution_options(sqlite_immediate=True)
            with Session(bind=connection) as session:
                try:
                    yield session
                    if write:
                        session.commit()
                    else:
                        session.rollback()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            connection.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is off).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
