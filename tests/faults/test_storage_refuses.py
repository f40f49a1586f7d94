"""The store refuses writes (disk full, read-only) under a real `fhir-gateway serve`: every
refused request is a 503 OperationOutcome (`transient`, Retry-After, says why, no patient data),
the v2 path answers AR, the gateway recovers without a restart, nothing acknowledged is lost.

Reads that touch personal data are refused too while the AuditEvent cannot be written: NEN 7513
allows no access without a log line (the router's 503 for a failed audit write).

SQLite: `tests/faults/storage_hook.py` makes SQLite itself return SQLITE_FULL / SQLITE_READONLY.
PostgreSQL: `ALTER DATABASE … SET default_transaction_read_only` and the gateway's sessions
terminated, as in a fail-over to a standby. A real full disk on PostgreSQL cannot be made here
(no volume of our own under the shared cluster); SQLSTATE 53100 is covered by the mapping test.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import sqlalchemy as sa

from benchmarks.harness import (
    GP_CLIENT,
    PG_ADMIN_URL,
    Server,
    fhir_headers,
    gateway_env,
    postgres_available,
    postgres_database,
)
from fhir_gateway.app import create_app
from fhir_gateway.loading import load_files
from fhir_gateway.security.clients import get_client, load_client_registrations
from fhir_gateway.security.tokens import TokenService
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database, DatabaseUnavailable, StorageFull, StorageReadOnly, refusal
from tests.faults.helpers import all_of, store_audit
from tests.wor import VALID_BSNS, referral_bundle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
V2_GOOD = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_text().replace("\n", "\r")
V2_CLIENT = "praktijk-batau-his"  # the registered sender of V2_GOOD (MSH-4 01053417)
BSN_VALUE = VALID_BSNS[0]  # the patient of every referral here, v2 included
ER7 = {"content-type": "x-application/hl7-v2+er7"}


class Gateway:
    """A served gateway plus what was sent to it and what it acknowledged."""

    def __init__(self, server: Server, env: dict[str, str]) -> None:
        self.server = server
        self.env = env
        self.http = httpx.Client(base_url=server.base, timeout=30)
        self.gp = fhir_headers(mint(env, GP_CLIENT))
        self.v2_sender = fhir_headers(mint(env, V2_CLIENT))  # MSH-4 of V2_GOOD is Batau-Noord's
        self.bodies: dict[str, bytes] = {}
        self.acknowledged: set[str] = set()
        self.v2_sent: list[str] = []  # referral numbers of v2 messages answered AA

    def refer(self, rid: str) -> httpx.Response:
        body = self.bodies.setdefault(rid, orjson.dumps(referral_bundle(rid)))
        r = self.http.post("/fhir", content=body, headers=self.gp)
        if r.status_code in (200, 201):
            self.acknowledged.add(rid)
        return r

    def v2(self, n: str) -> str:
        text = V2_GOOD.replace("BATAU-000123", f"BATAU-{n}").replace("REF-2026-0001", f"REF-{n}")
        r = self.http.post(
            "/v2", content=text.encode(), headers={**ER7, "authorization": self.v2_sender["authorization"]}
        )
        assert r.status_code == 200, r.text
        code = _msa(r.text)
        if code == "AA":
            self.v2_sent.append(f"REF-{n}")
        return code

    def recover(self, rid: str, tries: int = 10) -> httpx.Response:
        """Once the store takes writes again the gateway must accept one within a few requests,
        without a restart; until then every answer is the clean 503."""
        for _ in range(tries):
            r = self.refer(rid)
            if r.status_code in (200, 201):
                return r
            assert_refused(r, None)
        raise AssertionError(f"no recovery after {tries} tries: {r.status_code} {r.text[:300]}")


def mint(env: dict[str, str], client_id: str) -> str:
    """An access token for a registered client, in-process (the CLI costs seconds per call)."""
    settings = Settings(database_url=env["GATEWAY_DATABASE_URL"], token_key=env["GATEWAY_TOKEN_KEY"])
    db = Database(settings.database_url)
    try:
        registration = get_client(db, client_id)
        assert registration is not None, client_id
        return TokenService.from_settings(settings).issue(registration, registration.scopes).access_token
    finally:
        db.dispose()


def prepare_postgres(env: dict[str, str]) -> None:
    """Schema, example clients and directory, in-process (what `prepare_database` does by CLI)."""
    settings = Settings(database_url=env["GATEWAY_DATABASE_URL"], token_key=env["GATEWAY_TOKEN_KEY"])
    db = Database(settings.database_url)
    db.upgrade()
    load_client_registrations(db, ROOT / "examples" / "clients")
    db.dispose()
    app = create_app(settings)
    try:
        assert all(r.ok for r in load_files(app.state.router, [ROOT / "examples" / "directory"]))
    finally:
        app.state.ctx.close()


def _msa(ack: str) -> str:
    msa = next(seg for seg in ack.replace("\n", "\r").split("\r") if seg.startswith("MSA|"))
    return msa.split("|")[1]


def assert_refused(r: httpx.Response, says: str | None) -> None:
    """503 + Retry-After + an OperationOutcome (error, transient) naming the condition only."""
    assert r.status_code == 503, (r.status_code, r.text[:500])
    assert r.headers.get("retry-after"), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert (issue["severity"], issue["code"]) == ("error", "transient"), issue
    if says is not None:
        assert says in issue["diagnostics"], issue
    assert BSN_VALUE not in r.text and "Jansen" not in r.text, "patient data in a 503"


def assert_readiness(gw: Gateway, status: str, says: str) -> None:
    """/readyz stays 200 while writes are refused (all replicas share the store; reads still
    work) and says so: `degraded` with the condition until a write succeeds again."""
    r = gw.http.get("/readyz")
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and says in body["detail"], body


def verify_nothing_lost(gw: Gateway) -> None:
    """Every acknowledged referral is stored exactly once, each with one Task and one CarePlan;
    resending everything (acknowledged or not) is accepted and idempotent."""
    for rid, body in gw.bodies.items():
        r = gw.http.post("/fhir", content=body, headers=gw.gp)
        assert r.status_code in (200, 201), (rid, r.status_code, r.text[:300])
    audit = store_audit(gw.server.base, gw.env)
    assert gw.acknowledged, "the test acknowledged nothing"
    assert all(audit["by_referral"][rid] == 1 for rid in gw.bodies), audit["by_referral"]
    assert all(counts == (1, 1) for counts in audit["per_sr"].values()), audit["per_sr"]
    admin = fhir_headers(mint(gw.env, "gateway-admin"))  # v2 referrals belong to another practice
    numbers = Counter(
        ident.get("value")
        for sr in all_of(gw.server.base, admin, "ServiceRequest")
        for ident in sr["identifier"]
    )
    assert all(numbers[n] == 1 for n in gw.v2_sent), (gw.v2_sent, numbers)


def read_only_episode(gw: Gateway, refuse: Any, clear: Any) -> None:
    """Writes and audited reads refused while the store is read-only; back by itself afterwards."""
    first = gw.refer("RO-before")
    assert first.status_code == 200, first.text
    sr_id = next(
        e["resource"]["id"]
        for e in first.json()["entry"]
        if e.get("resource", {}).get("resourceType") == "ServiceRequest"
    )
    assert gw.http.get(f"/fhir/ServiceRequest/{sr_id}", headers=gw.gp).status_code == 200
    assert_readiness(gw, "ready", "ok")

    refuse()
    assert_refused(gw.refer("RO-during"), "read-only")
    assert_readiness(gw, "degraded", "read-only")
    assert gw.v2("RO1") == "AR"  # not AA: nothing was stored, the sender must retry
    # the read itself would work, its AuditEvent cannot be written: refused, not handed out unlogged
    assert_refused(gw.http.get(f"/fhir/ServiceRequest/{sr_id}", headers=gw.gp), "read-only")
    assert gw.http.get("/fhir/metadata").status_code == 200  # no personal data, no audit
    assert "RO-during" not in gw.acknowledged

    assert_readiness(gw, "degraded", "read-only")  # reads that worked do not clear it

    clear()
    gw.recover("RO-during")
    assert_readiness(gw, "ready", "ok")
    assert gw.http.get(f"/fhir/ServiceRequest/{sr_id}", headers=gw.gp).status_code == 200
    assert gw.v2("RO1") == "AA"  # the sender's retry of the AR'd message goes through


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    control = tmp_path / "storage-mode"
    env = {**gateway_env(f"sqlite:///{tmp_path / 'gw.db'}"), "GATEWAY_FAULT_STORAGE": str(control)}
    argv = [sys.executable, "-m", "tests.faults.storage_hook", "serve", "--port", "{port}", "--no-worker"]
    server = Server(env, argv).start()
    gw = Gateway(server, env)
    try:
        yield gw, control
    finally:
        gw.http.close()
        server.stop()


def test_sqlite_full_and_read_only_give_503_and_lose_nothing(sqlite_gateway: tuple[Gateway, Path]) -> None:
    gw, control = sqlite_gateway
    read_only_episode(gw, lambda: control.write_text("readonly"), lambda: control.write_text(""))

    control.write_text("full")
    # Writes that fit in the pages already there still succeed (and count as acknowledged);
    # the free room runs out within a few referrals.
    refused = None
    for i in range(60):
        r = gw.refer(f"FULL-{i}")
        if r.status_code == 503:
            refused = r
            break
        assert r.status_code == 200, r.text
    assert refused is not None, "the capped database never filled up"
    assert_refused(refused, "full")
    assert_readiness(gw, "degraded", "storage is full")
    assert gw.v2("FULL1") in ("AR", "AA")  # AA only if it fitted, and then it must be stored
    control.write_text("")
    gw.recover(f"FULL-{i}")
    assert_readiness(gw, "ready", "ok")
    verify_nothing_lost(gw)


@pytest.mark.postgres
def test_postgres_read_only_gives_503_and_recovers_without_restart() -> None:
    if not postgres_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with postgres_database("faults_ro") as url:
        name = sa.engine.make_url(url).database
        env = gateway_env(url)
        prepare_postgres(env)
        server = Server(env).start()
        gw = Gateway(server, env)

        def refuse() -> None:
            with admin.connect() as c:
                c.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                # a fail-over drops the sessions; the pool's new ones are read-only
                c.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %(db)s AND pid <> pg_backend_pid()",
                    {"db": name},
                )

        def clear() -> None:
            # no sessions terminated now: the gateway must let go of its read-only ones itself
            with admin.connect() as c:
                c.exec_driver_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')

        try:
            read_only_episode(gw, refuse, clear)
            verify_nothing_lost(gw)
        finally:
            gw.http.close()
            server.stop()
            admin.dispose()


def test_only_a_write_that_changes_rows_clears_the_refusal(sqlite_url: str) -> None:
    """The same `PRAGMA query_only` as the hook, on this engine only: a refused write is
    remembered; a read, or a write transaction that changed nothing (an empty outbox claim fits
    in a full database too), does not clear it; the first row written does."""
    db = Database(sqlite_url)
    read_only = [False]

    @sa.event.listens_for(db.engine, "checkout")
    def _apply(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.execute(f"PRAGMA query_only = {'ON' if read_only[0] else 'OFF'}")

    try:
        with db.connection(write=True) as c:
            c.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
        assert db.write_refused is None
        read_only[0] = True
        with pytest.raises(StorageReadOnly), db.connection(write=True) as c:
            c.exec_driver_sql("INSERT INTO scratch VALUES (1)")
        assert isinstance(db.write_refused, StorageReadOnly)
        read_only[0] = False
        with db.connection(write=False) as c:
            assert c.exec_driver_sql("SELECT count(*) FROM scratch").scalar() == 0
        with db.connection(write=True) as c:
            c.exec_driver_sql("UPDATE scratch SET x = 2 WHERE x = 1")  # matches nothing
        assert isinstance(db.write_refused, StorageReadOnly)
        with db.connection(write=True) as c:
            c.exec_driver_sql("INSERT INTO scratch VALUES (1)")
        assert db.write_refused is None
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (psycopg.errors.DiskFull("could not extend file"), StorageFull),
        (psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT"), StorageReadOnly),
        (psycopg.errors.AdminShutdown("terminating connection"), DatabaseUnavailable),
        (psycopg.errors.UniqueViolation("duplicate key"), type(None)),  # a bug or a race, not a 503
    ],
)
def test_the_one_mapping_names_what_the_store_refuses(driver_error: Exception, expected: type) -> None:
    wrapped = sa.exc.DBAPIError.instance("INSERT …", {}, driver_error, psycopg.Error)
    assert type(refusal(wrapped)) is expected
