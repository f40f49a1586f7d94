"""Shared fixtures: real SQLite and real PostgreSQL databases, and a gateway app per test.

PostgreSQL tests use GATEWAY_TEST_POSTGRES_URL (default: the local server's `test` database).
Where none answers they are skipped with the reason — except under CI (`CI=true`), where a
missing PostgreSQL is a failure, so CI can never skip them silently.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fhir_gateway.app import create_app
from fhir_gateway.security.clients import get_client, load_client_registrations
from fhir_gateway.security.tokens import generate_gateway_key
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database
from tests.delivery.receivers import Receiver

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PG_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FHIR_JSON = {"content-type": "application/fhir+json"}
TABLES = (
    "search_index",
    "resource_history",
    "outbox",
    "resources",
    "v2_messages",
    "clients",
    "used_jtis",
    "timers",
    "subscription_events",
    "subscription_state",
    "login_failures",
    "cache_generations",
)


def _pg_admin_engine() -> sa.Engine | None:
    engine = sa.create_engine(ADMIN_PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return engine
    except sa.exc.OperationalError:
        engine.dispose()
        return None


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for every test (migrating per test would be slow)."""
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private, migrated PostgreSQL database for this test session."""
    admin = _pg_admin_engine()
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI but {ADMIN_PG_URL} does not answer")
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_PG_URL} (set GATEWAY_TEST_POSTGRES_URL)")
    name = f"gw_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    db.upgrade()
    db.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _fresh_sqlite(template: Path, tmp_path: Path) -> str:
    target = tmp_path / "gateway.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def _fresh_postgres(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> str:
    """An empty, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return _fresh_sqlite(sqlite_template, tmp_path)
    return _fresh_postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return _fresh_sqlite(sqlite_template, tmp_path)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


TEST_TOKEN_KEY = orjson.dumps(generate_gateway_key().as_dict(private=True)).decode()


def directory_client(db_file: Path) -> TestClient:
    """An admin client on a new, migrated SQLite file with the example directory loaded (for
    module-scoped fixtures of tests that send many requests)."""
    from tests.wor import load_directory

    Database(f"sqlite:///{db_file}").upgrade()
    client = make_client(f"sqlite:///{db_file}")
    load_directory(client)
    return client


def make_client(url: str, client_id: str | None = "gateway-admin", **settings: object) -> TestClient:
    """A gateway over real HTTP semantics (TestClient) acting as one registered client: the
    example registrations are loaded and a real access token is sent. None: no token."""
    settings.setdefault("token_key", TEST_TOKEN_KEY)
    settings.setdefault("rate_limit_per_second", 0)  # in-process tests outrun any real client
    settings.setdefault("subscription_loopback_http", True)  # receivers listen on 127.0.0.1
    app = create_app(Settings(database_url=url, **settings))  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://gateway.test")
    load_client_registrations(app.state.ctx.database, ROOT / "examples" / "clients")
    if client_id:
        authorize(client, client_id)
    return client


def authorize(client: TestClient, client_id: str) -> None:
    """Send requests as `client_id` from now on (a token with all its allowed scopes)."""
    app = client.app
    registration = get_client(app.state.ctx.database, client_id)  # type: ignore[attr-defined]
    assert registration is not None, client_id
    token = app.state.tokens.issue(registration, registration.scopes)  # type: ignore[attr-defined]
    client.headers["Authorization"] = f"Bearer {token.access_token}"


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    """A gateway on an empty SQLite database (the embedded default)."""
    with make_client(sqlite_url) as c:
        yield c


@pytest.fixture
def any_client(database_url: str) -> Iterator[TestClient]:
    """A gateway on each backend in turn (SQLite, PostgreSQL)."""
    with make_client(database_url) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP endpoint on a free port that records what is pushed to it."""
    r = Receiver().start()
    yield r
    r.stop()
