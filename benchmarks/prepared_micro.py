"""Micro-benchmark of the store's hot statements: `store/prepared.py` against a baseline version of
it (from git) and against plain `Connection.execute`, alternating, in one process.

    python -m benchmarks.prepared_micro [--baseline REF] [--iterations 10000] [--rounds 3] [--postgres]

Variants: `baseline REF` (the file at a git ref), `current` (this tree), `exec_driver_sql` (the
current compile step, run through `Connection.exec_driver_sql`), `Connection.execute` (the plain
SQLAlchemy Core call with its compiled cache). One iteration is what a resource create costs the store on SQLite: INSERT resources … RETURNING
pk, INSERT resource_history, executemany of 6 search_index rows, plus the token probe SELECT
(`identifier=system|code`) for the row just written. 100 iterations a transaction. Prints µs per
iteration for each variant and round, and the median. Numbers only: nothing asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from benchmarks.harness import ROOT, postgres_available, postgres_database

PER_TRANSACTION = 100


def _module_at(ref: str) -> types.ModuleType:
    """`fhir_gateway/store/prepared.py` as it was at `ref`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:fhir_gateway/store/prepared.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"prepared_at_{ref}")
    module.__dict__["__name__"] = module.__name__
    exec(compile(source, f"{ref}:fhir_gateway/store/prepared.py", "exec"), module.__dict__)
    return module


def _driver_sql_variant() -> types.SimpleNamespace:
    """The current `Prepared` run through `Connection.exec_driver_sql` (SQLAlchemy's public
    "string straight to the driver" call) instead of the raw cursor: what the public call costs."""
    from fhir_gateway.store import prepared

    class DriverSql(prepared.Prepared):
        def rows(self, connection: sa.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
            compiled = self._compiled(connection)
            result = connection.exec_driver_sql(compiled.sql, compiled.bind(params))
            return [compiled.row(r) for r in result.fetchall()] if compiled.columns else []

        def many(self, connection: sa.Connection, params: Sequence[dict[str, Any]]) -> None:
            compiled = self._compiled(connection)
            connection.exec_driver_sql(compiled.sql, [compiled.bind(p) for p in params])

    return types.SimpleNamespace(Prepared=DriverSql)


class Statements:
    """The four hot statements, run through one `Prepared` class (or through `execute`)."""

    def __init__(self, prepared: Any | None) -> None:
        from fhir_gateway.store import repository as r

        self.prepared = prepared
        self.stmts = {
            "resource": r._INSERT_RESOURCE.stmt,
            "history": r._INSERT_HISTORY.stmt,
            "index": sa.insert(r.IX),
            "probe": r._SELECT_BY_TOKEN.stmt,
        }
        if prepared is not None:
            self.p = {k: prepared.Prepared(s) for k, s in self.stmts.items()}

    def run(self, c: sa.Connection, tag: str, i: int, now: datetime) -> None:
        rid = f"{tag}-{i}"
        content = {
            "resourceType": "ServiceRequest",
            "id": rid,
            "status": "active",
            "note": [{"text": "x" * 200}],
        }
        values = {
            "resource_type": "ServiceRequest",
            "id": rid,
            "version_id": 1,
            "last_updated": now,
            "deleted": False,
            "content": content,
        }
        history = {**values, "method": "POST"}
        probe = {
            "b_type": "ServiceRequest",
            "b_param": "identifier",
            "b_value": rid,
            "b_system": "urn:x",
            "b_limit": 2,
        }
        if self.prepared is not None:
            pk = self.p["resource"].first(c, values)["pk"]
            self.p["history"].rows(c, history)
            self.p["index"].many(c, _index(pk, rid, now))
            found = self.p["probe"].rows(c, probe)
        else:
            pk = c.execute(self.stmts["resource"], values).scalar_one()
            c.execute(self.stmts["history"], history)
            c.execute(self.stmts["index"], _index(pk, rid, now))
            found = [row._mapping for row in c.execute(self.stmts["probe"], probe)]
        if len(found) != 1 or found[0]["content"]["id"] != rid:
            raise RuntimeError(f"probe found {found!r}")


def _index(pk: int, rid: str, now: datetime) -> list[dict[str, Any]]:
    base = {"resource_pk": pk, "resource_type": "ServiceRequest", "text": None, "low": None, "high": None}
    return [
        {**base, "param": "identifier", "system": "urn:x", "value": rid},
        {**base, "param": "status", "system": "http://hl7.org/fhir/request-status", "value": "active"},
        {**base, "param": "intent", "system": "http://hl7.org/fhir/request-intent", "value": "order"},
        {**base, "param": "subject", "system": None, "value": "Patient/p1"},
        {**base, "param": "requester", "system": None, "value": "PractitionerRole/r1"},
        {**base, "param": "authored", "system": None, "value": None, "low": now, "high": now},
    ]


@contextmanager
def _database(backend: str) -> Iterator[Any]:
    from fhir_gateway.store.database import Database

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/micro.db")
            db.upgrade()
            try:
                yield db
            finally:
                db.dispose()
        return
    with postgres_database("micro") as url:
        db = Database(url)
        db.upgrade()
        try:
            yield db
        finally:
            db.dispose()


def _timed(db: Any, variant: Statements, tag: str, iterations: int) -> tuple[float, float]:
    """µs per iteration: wall clock, and CPU time of this process (less disturbed by other load
    on a shared box; on PostgreSQL it leaves out the server's work, which all variants share)."""
    from fhir_gateway.fhir.searchparams import utc_now

    now = utc_now()
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, iterations, PER_TRANSACTION):
        with db.connection(write=True) as c:
            for i in range(start, min(start + PER_TRANSACTION, iterations)):
                variant.run(c, tag, i, now)
    return (time.perf_counter() - wall) / iterations * 1e6, (time.process_time() - cpu) / iterations * 1e6


def bench(
    backend: str, variants: dict[str, Statements], iterations: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """`iterations` per variant in `rounds` slices, the variants taking turns (order reversed
    every other round) so that drift and other load hit all of them alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    per_round = iterations // rounds
    with _database(backend) as db:
        for name, variant in variants.items():  # warm-up: compile, connect, caches
            _timed(db, variant, f"warm-{name}", 200)
        names = list(variants)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                times[name].append(_timed(db, variants[name], f"{name}-{r}", per_round))
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", default="", help="git ref of the prepared.py to compare against")
    p.add_argument("--iterations", type=int, default=10_000, help="per variant and backend")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--postgres", action="store_true")
    p.add_argument("--no-execute", action="store_true", help="leave out the Connection.execute variant")
    args = p.parse_args()
    from fhir_gateway.store import prepared

    variants: dict[str, Statements] = {}
    if args.baseline:
        variants[f"baseline {args.baseline}"] = Statements(_module_at(args.baseline))
    variants["current"] = Statements(prepared)
    variants["exec_driver_sql"] = Statements(_driver_sql_variant())
    if not args.no_execute:
        variants["Connection.execute"] = Statements(None)
    backends = ["sqlite"] + (["postgresql"] if args.postgres and postgres_available() else [])
    print(f"µs per iteration (4 statements), median of {args.rounds} alternating rounds [min..max]")
    for backend in backends:
        times = bench(backend, variants, args.iterations, args.rounds)
        for name, ts in times.items():
            wall, cpu = [w for w, _ in ts], [c for _, c in ts]
            print(
                f"{backend:10} {name:22} wall {statistics.median(wall):7.1f} [{min(wall):.0f}..{max(wall):.0f}]"
                f"   cpu {statistics.median(cpu):7.1f} [{min(cpu):.0f}..{max(cpu):.0f}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
