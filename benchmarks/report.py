"""`$wor-report` at scale: a municipality report over N referrals on PostgreSQL (and SQLite).

Seeding is bulk, not HTTP: ten referral loops are played through the gateway in-process (the
same loops as tests/api/test_reports.py: intake, completion with Positive Health scores,
rejections, feedback pushes in the outbox), then every row they wrote — resources, history,
search index (compartments included), outbox — is copied N/10 times in SQL, each copy with every
UUID in it (ids, references, identifiers, event ids) given a new first group, so each copy is a
separate referral of a separate patient with the same shape and dates. The directory (non-UUID
ids) is not copied. The report's read model (store/report_rows.py) is then rebuilt from all those
documents by the backfill of migration 0011 (`reports/read_model.rebuild`, timed: what the
migration costs on a store of that size). Then `GET /fhir/$wor-report` is timed as an
administrator, best of `--runs`.

    python -m benchmarks.report --referrals 100000            # PostgreSQL (fresh database)
    python -m benchmarks.report --referrals 30000 --sqlite    # SQLite in a temp directory

Numbers only; the figures of the report are printed so a run can be compared with the template
(they scale with N: every count is N/10 times the template's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.harness import postgres_database

UUID_RE = "[0-9a-f]{8}(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
TEMPLATE = 10  # referrals played per template (8 in the municipality, 1 elsewhere, 1 too old)


def play(url: str) -> tuple[Any, str]:
    """The template: the loops of tests/api/test_reports.py through the real gateway."""
    from tests.api.test_reports import _play

    gen = _play(url)
    client, period = next(gen)
    return (gen, client), period


def _pg_clone(conn: sa.Connection, copies: int) -> None:
    """Copy every referral row `copies` times, each copy with its own UUIDs (PostgreSQL)."""

    def new(col: str) -> str:
        return f"regexp_replace({col}, '{UUID_RE}', lpad(to_hex(s.n), 8, '0') || '\\1', 'g')"

    is_uuid = f"~ '^{UUID_RE}$'"
    series = f"generate_series(1, {copies}) AS s(n)"
    # copy n of the row with pk p gets pk p + n * stride: the index rows follow without a join
    stride = int(conn.exec_driver_sql("SELECT max(pk) + 1 FROM resources").scalar_one())
    conn.exec_driver_sql(
        f"""INSERT INTO resources (pk, resource_type, id, version_id, last_updated, deleted, content)
        SELECT r.pk + s.n * {stride}, r.resource_type, {new("r.id")}, r.version_id, r.last_updated,
               r.deleted, {new("r.content::text")}::jsonb
        FROM resources r, {series} WHERE r.id {is_uuid} ORDER BY s.n, r.pk"""
    )
    conn.exec_driver_sql(
        "SELECT setval(pg_get_serial_sequence('resources', 'pk'), (SELECT max(pk) FROM resources))"
    )
    conn.exec_driver_sql(
        f"""INSERT INTO resource_history
            (resource_type, id, version_id, last_updated, method, deleted, content)
        SELECT h.resource_type, {new("h.id")}, h.version_id, h.last_updated, h.method,
               h.deleted, {new("h.content::text")}::jsonb
        FROM resource_history h, {series} WHERE h.id {is_uuid} ORDER BY s.n, h.pk"""
    )
    conn.exec_driver_sql(
        f"""INSERT INTO search_index
            (resource_pk, resource_type, param, system, value, text, low, high)
        SELECT ix.resource_pk + s.n * {stride}, ix.resource_type, ix.param, ix.system,
               {new("ix.value")}, {new("ix.text")}, ix.low, ix.high
        FROM search_index ix JOIN resources r ON r.pk = ix.resource_pk, {series}
        WHERE r.pk < {stride} AND r.id {is_uuid} ORDER BY s.n, ix.pk"""
    )
    conn.exec_driver_sql(
        f"""INSERT INTO outbox (event_id, kind, destination, subject, payload, status, attempts,
            created_at, next_attempt_at, last_error)
        SELECT {new("o.event_id")}, o.kind, o.destination, o.subject,
               {new("o.payload::text")}::jsonb, o.status, o.attempts, o.created_at,
               o.next_attempt_at, o.last_error
        FROM outbox o, {series}"""
    )


_BULK_TABLES = ("resources", "resource_history", "search_index", "outbox")


def clone_postgres(url: str, copies: int) -> None:
    """The copies with the secondary indexes dropped and rebuilt afterwards, and the foreign key
    trigger off while inserting (the rows are copies of checked rows): a bulk load, as
    benchmarks/worklist.py does, minutes instead of an hour at 100k referrals."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f"'{t}'" for t in _BULK_TABLES)
        indexes = conn.exec_driver_sql(
            f"SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename IN ({names}) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        ).all()
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql("ALTER TABLE search_index DISABLE TRIGGER ALL")
        _pg_clone(conn, copies)
        conn.exec_driver_sql("ALTER TABLE search_index ENABLE TRIGGER ALL")
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def clone_sqlite(url: str, copies: int) -> None:
    """SQLite: the same copies, made in Python (no regexp_replace), inserted with executemany."""
    import re

    pattern = re.compile(UUID_RE)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        res = conn.exec_driver_sql(
            "SELECT pk, resource_type, id, version_id, last_updated, deleted, content FROM resources"
        ).all()
        template = [r for r in res if pattern.fullmatch(r.id)]
        hist = conn.exec_driver_sql(
            "SELECT resource_type, id, version_id, last_updated, method, deleted, content "
            "FROM resource_history"
        ).all()
        hist = [h for h in hist if pattern.fullmatch(h.id)]
        pks = {r.pk: r for r in template}
        index = [
            ix
            for ix in conn.exec_driver_sql(
                "SELECT resource_pk, resource_type, param, system, value, text, low, high FROM search_index"
            ).all()
            if ix.resource_pk in pks
        ]
        out = conn.exec_driver_sql(
            "SELECT event_id, kind, destination, subject, payload, status, attempts, created_at, "
            "next_attempt_at, last_error FROM outbox"
        ).all()
        for n in range(1, copies + 1):
            prefix = f"{n:08x}"

            def sub(text: Any, prefix: str = prefix) -> Any:
                return pattern.sub(lambda m: prefix + m[1], text) if isinstance(text, str) else text

            new_pk: dict[int, int] = {}
            for r in template:
                row = conn.exec_driver_sql(
                    "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING pk",
                    (r.resource_type, sub(r.id), r.version_id, r.last_updated, r.deleted, sub(r.content)),
                ).one()
                new_pk[r.pk] = row[0]
            conn.exec_driver_sql(
                "INSERT INTO resource_history (resource_type, id, version_id, last_updated, method, "
                "deleted, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(h[0], sub(h[1]), h[2], h[3], h[4], h[5], sub(h[6])) for h in hist],
            )
            conn.exec_driver_sql(
                "INSERT INTO search_index (resource_pk, resource_type, param, system, value, text, "
                "low, high) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(new_pk[i[0]], i[1], i[2], i[3], sub(i[4]), sub(i[5]), i[6], i[7]) for i in index],
            )
            conn.exec_driver_sql(
                "INSERT INTO outbox (event_id, kind, destination, subject, payload, status, attempts, "
                "created_at, next_attempt_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(sub(o[0]), *o[1:4], sub(o[4]), *o[5:]) for o in out],
            )
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def rebuild_read_model(url: str) -> None:
    """The read model from the copied documents, as migration 0011 backfills it, then ANALYZE."""
    from fhir_gateway.reports.read_model import rebuild

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rebuild(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Each group's populations and score: enough to compare two runs figure by figure."""
    out: dict[str, Any] = {}
    for g in report["group"]:
        pops = {p["code"]["coding"][0]["code"]: p.get("count", "masked") for p in g.get("population", [])}
        out[g["code"]["coding"][0]["code"]] = {"populations": pops, "score": g.get("measureScore")}
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(url: str, referrals: int, runs: int, sqlite: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    (gen, client), period = play(url)
    played = time.perf_counter() - t0
    log(f"template played in {played:.1f} s")
    copies = max(0, referrals // TEMPLATE - 1)
    t0 = time.perf_counter()
    (clone_sqlite if sqlite else clone_postgres)(url, copies)
    seeded = time.perf_counter() - t0
    log(f"{copies} copies seeded in {seeded:.1f} s")
    t0 = time.perf_counter()
    rebuild_read_model(url)
    rebuilt = time.perf_counter() - t0
    log(f"read model rebuilt in {rebuilt:.1f} s")
    timings, cpu = [], []
    report: dict[str, Any] = {}
    from tests.conftest import authorize

    authorize(client, "gateway-admin")  # a fresh token: seeding 100k outlasts the first one
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        resp = client.get("/fhir/$wor-report", params={"municipality": "Nieuwegein", "period": period})
        timings.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        assert resp.status_code == 200, resp.text[:500]
        report = resp.json()
        log(f"report in {timings[-1]:.3f} s (CPU {cpu[-1]:.3f} s)")
    gen.close()
    return {
        "backend": "sqlite" if sqlite else "postgresql",
        "referrals": (copies + 1) * TEMPLATE,
        "play_s": round(played, 1),
        "seed_s": round(seeded, 1),
        "rebuild_s": round(rebuilt, 1),
        "report_s": [round(t, 3) for t in timings],
        "report_best_s": round(min(timings), 3),
        "report_cpu_s": [round(c, 3) for c in cpu],
        "figures": _summary(report),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--referrals", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args()
    with ExitStack() as stack:
        if args.sqlite:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = f"sqlite:///{tmp / 'report.db'}"
            from fhir_gateway.store.database import Database

            db = Database(url)
            db.upgrade()
            db.dispose()
        else:
            url = stack.enter_context(postgres_database("bench_report"))
            from fhir_gateway.store.database import Database

            db = Database(url)
            db.upgrade()
            db.dispose()
        result = run(url, args.referrals, args.runs, args.sqlite)
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)
    main()
