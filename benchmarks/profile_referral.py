"""Profile the referral path in-process (`app.state.router.handle`, no HTTP), cProfile.

    python -m benchmarks.profile_referral [--referrals 100] [--postgres]

Writes benchmarks/results/profile.md (profile-postgres.md): ms and CPU ms per referral, driver
statements and commits per referral (every cursor `execute` / `executemany` counted at the DBAPI,
so the prepared statements of `store/prepared.py` are counted too; each is one round trip on
PostgreSQL, a commit another), rows written per referral by table, and the top functions by own
time and by cumulative time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT

OUT = ROOT / "benchmarks" / "results"


def _rows(stats: pstats.Stats, key: str, n: int) -> list[tuple[str, int, float, float]]:
    stats.sort_stats(key)
    rows = []
    for func in stats.fcn_list[:n]:  # type: ignore[attr-defined]
        _cc, nc, tt, ct, _ = stats.stats[func]  # type: ignore[attr-defined]
        filename, line, name = func
        short = filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        rows.append((f"{short}:{line}({name})", nc, tt, ct))
    return rows


class _Counter:
    """Driver calls per kind, counted on every DBAPI connection of the engine."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.trace: list[str] | None = None  # the statements of one referral, when asked for
        self.piped = False  # inside a psycopg pipeline: its statements share one round trip

    def add(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def install(self, engine: Any) -> None:
        import sqlalchemy as sa

        counter = self

        def wrap(dbapi_connection: Any, _record: Any) -> None:
            base = dbapi_connection.cursor

            class Cursor:
                """Counts, then hands every call to the driver's own cursor."""

                def __init__(self, *a: Any, **kw: Any) -> None:
                    self._c = base(*a, **kw)

                def execute(self, *a: Any, **kw: Any) -> Any:
                    counter.add("execute in a pipeline" if counter.piped else "execute")
                    if counter.trace is not None:
                        counter.trace.append(" ".join(str(a[0]).split())[:110])
                    return self._c.execute(*a, **kw)

                def executemany(self, *a: Any, **kw: Any) -> Any:
                    counter.add("executemany")
                    if counter.trace is not None:
                        counter.trace.append("MANY " + " ".join(str(a[0]).split())[:105])
                    return self._c.executemany(*a, **kw)

                def __getattr__(self, name: str) -> Any:
                    return getattr(self._c, name)

                def __iter__(self) -> Any:
                    return iter(self._c)

            commit = dbapi_connection.commit

            def counted_commit() -> None:
                counter.add("commit")
                commit()

            pipeline = getattr(dbapi_connection, "pipeline", None)

            @contextlib.contextmanager
            def counted_pipeline() -> Any:
                counter.add("pipeline")
                counter.piped = True
                try:
                    with pipeline() as p:  # type: ignore[misc]
                        yield p
                finally:
                    counter.piped = False

            try:
                dbapi_connection.cursor = Cursor
                dbapi_connection.commit = counted_commit
                if pipeline is not None:
                    dbapi_connection.pipeline = counted_pipeline
            except AttributeError:  # a C type (sqlite3.Connection): count through SQLAlchemy instead
                pass

        sa.event.listen(engine, "connect", wrap)
        for conn in list(engine.pool._pool.queue) if hasattr(engine.pool, "_pool") else []:
            wrap(conn.dbapi_connection, None)


def _table_counts(engine: Any) -> dict[str, int]:
    import sqlalchemy as sa

    tables = ("resources", "resource_history", "search_index", "outbox", "timers", "referral_digests")
    with engine.connect() as c:
        return {t: int(c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables}


def referral_runner(postgres_url: str | None = None) -> tuple[Any, Callable[[int], None]]:
    """A gateway app on SQLite (a temporary file) or `postgres_url`, migrated, the example
    directory loaded, and `one(i)`: one referral transaction Bundle through `router.handle` as
    the practice's HIS (no HTTP), failing on anything but 200."""
    import orjson

    from fhir_gateway.app import create_app
    from fhir_gateway.loading import load_files
    from fhir_gateway.rest.request import FhirRequest
    from fhir_gateway.security.principal import Principal
    from fhir_gateway.security.tokens import generate_gateway_key
    from fhir_gateway.settings import Settings
    from tests.wor import referral_bundle

    tmp = tempfile.mkdtemp()
    url = postgres_url or f"sqlite:///{tmp}/prof.db"
    key = orjson.dumps(generate_gateway_key().as_dict(private=True)).decode()
    app = create_app(Settings(database_url=url, token_key=key, log_level="WARNING"))
    app.state.ctx.database.upgrade()
    router = app.state.router
    load_files(router, [ROOT / "examples" / "directory"])
    gp = Principal(
        "praktijk-de-geinoord-his",
        "Organization/praktijk-de-geinoord",
        "gp-practice",
        ("system/*.cruds",),
        True,
    )

    def one(i: int) -> None:
        req = FhirRequest(
            "POST",
            "",
            body=referral_bundle(f"PROF-{i}-{time.time_ns()}"),
            headers={},
            principal=gp,
            base_url="http://bench/fhir",
        )
        resp = router.handle(req)
        if resp.status != 200:
            raise RuntimeError(resp.body)

    return app, one


def postgres_server_cpu() -> float:
    """CPU seconds (user + system) spent so far by every process of the local PostgreSQL server
    (backends, WAL writer, checkpointer), read from /proc: the server shares this box's cores
    with the gateway, so its CPU per referral bounds ingest as much as the gateway's own."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name.startswith("postgres"):
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def timed_referrals(referrals: int, postgres: bool, prefix: str) -> tuple[float, float | None]:
    """CPU ms per referral of `referrals` referrals after 20 to warm caches, compiled statements
    and the directory, with the start-up heap frozen as the app's lifespan does; SQLite, or a
    fresh PostgreSQL database named after `prefix`. Second: the PostgreSQL server's CPU ms per
    referral over the same loop (None on SQLite, whose work is in the first figure)."""
    import gc

    from benchmarks.harness import postgres_database

    with postgres_database(prefix) if postgres else contextlib.nullcontext() as url:
        app, one = referral_runner(url)
        for i in range(20):
            one(i)
        gc.freeze()
        server = postgres_server_cpu() if postgres else 0.0
        start = time.process_time()
        for i in range(referrals):
            one(20 + i)
        cpu_ms = (time.process_time() - start) / max(referrals, 1) * 1000
        server_ms = (postgres_server_cpu() - server) / max(referrals, 1) * 1000 if postgres else None
        app.state.ctx.close()
    return cpu_ms, server_ms


def profile(referrals: int = 100, postgres_url: str | None = None) -> dict[str, Any]:
    app, one = referral_runner(postgres_url)
    for i in range(10):
        one(i)
    engine = app.state.ctx.database.engine
    counter = _Counter()
    counter.install(engine)
    engine.dispose()  # new connections, each with the counting cursor
    before = _table_counts(engine)
    counter.calls.clear()
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(referrals):
        one(i)
    per_ms = (time.perf_counter() - t) / referrals * 1000
    calls = {k: round(v / referrals, 2) for k, v in sorted(counter.calls.items())}
    counter.trace = []
    one(referrals + 1)
    trace, counter.trace = counter.trace, None
    after = _table_counts(engine)
    rows = {t: round((after[t] - before[t]) / referrals, 2) for t in after}
    # CPU time of this process (all its threads): on a shared box less disturbed by other load
    cpu_ms = (time.process_time() - cpu) / referrals * 1000
    prof = cProfile.Profile()
    prof.enable()
    for i in range(referrals):
        one(i)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    own = _rows(stats, "tottime", 10)
    cum = [r for r in _rows(stats, "cumulative", 40) if "cProfile" not in r[0]][:25]
    app.state.ctx.close()
    lines = [
        f"# Referral path profile (in-process, `router.handle`, {engine.dialect.name}, cProfile)",
        "",
        f"{referrals} referral transaction Bundles (Patient ifNoneExist + Consent + ServiceRequest → "
        f"validate, route, map, Task + CarePlan + Provenance + AuditEvent): **{per_ms:.2f} ms per referral "
        f"without profiler** (CPU {cpu_ms:.2f} ms), {total / referrals * 1000:.2f} ms with.",
        "",
        f"Backend {engine.dialect.name}. Driver calls per referral: {calls} "
        f"(PostgreSQL: each one round trip, but the statements in a pipeline share one). Rows added per referral: {rows}.",
        "",
        "Statements of one referral, in order:",
        "",
        *[f"{n}. `{t}`" for n, t in enumerate(trace, 1)],
        "",
        "## Top 10 by own time",
        "",
        "| function | calls | own s | cumulative s | own % of total |",
        "|---|---|---|---|---|",
        *[f"| `{f}` | {n} | {tt:.3f} | {ct:.3f} | {tt / total * 100:.1f} |" for f, n, tt, ct in own],
        "",
        "## Top by cumulative time (where the time goes, outermost first)",
        "",
        "| function | calls | own s | cumulative s | cumulative % |",
        "|---|---|---|---|---|",
        *[f"| `{f}` | {n} | {tt:.3f} | {ct:.3f} | {ct / total * 100:.1f} |" for f, n, tt, ct in cum],
        "",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / _name(postgres_url)).write_text("\n".join(lines))
    return {
        "ms_per_referral": round(per_ms, 2),
        "cpu_ms_per_referral": round(cpu_ms, 2),
        "driver_calls_per_referral": calls,
        "rows_per_referral": rows,
        "top_own": own,
        "top_cumulative": cum,
    }


def _name(postgres_url: str | None) -> str:
    return "profile-postgres.md" if postgres_url else "profile.md"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--referrals", type=int, default=100)
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database (dropped after)")
    args = p.parse_args()
    if args.postgres:
        from benchmarks.harness import postgres_database

        with postgres_database("bench_profile") as url:
            res = profile(args.referrals, url)
    else:
        res = profile(args.referrals)
    print((OUT / _name(args.postgres or None)).read_text())
    print(res["ms_per_referral"], f"(cpu {res['cpu_ms_per_referral']})")


if __name__ == "__main__":
    main()
