"""Worklist at scale: bulk-insert realistic Task + feedback Communication rows (resources, history,
search_index incl. `_compartment`), then time the two worklist searches over HTTP and capture the
exact SQL the gateway runs, with its plan (PostgreSQL: EXPLAIN (ANALYZE, BUFFERS); SQLite:
EXPLAIN QUERY PLAN).

Rows are built from the Task and Communication the gateway itself writes for a referral (shapes
copied from a real run) and indexed by `fhir_gateway.store.index.index_rows`, the code the gateway
uses; only the inserting is bulk SQL (executemany in chunks), never the API.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from benchmarks.harness import fhir_headers, percentiles, token

WELFARE = [
    "Organization/welzijn-de-brug",
    "Organization/welzijn-ijsselstein-samen",
    "Organization/welzijn-houten-doet-mee",
]
PRACTICES = [
    ("Organization/praktijk-de-geinoord", "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"),
    ("Organization/praktijk-batau", "PractitionerRole/bench-huisarts-batau"),
    ("Organization/praktijk-het-rond", "PractitionerRole/bench-huisarts-het-rond"),
    ("Organization/praktijk-hollandse-ijssel", "PractitionerRole/bench-huisarts-hollandse-ijssel"),
]
# requested is the open worklist: ~10 % of all tasks, the rest worked or closed
STATUSES = [
    "requested",
    "accepted",
    "in-progress",
    "in-progress",
    "completed",
    "completed",
    "completed",
    "completed",
    "cancelled",
    "rejected",
]
SPAN = timedelta(days=365)

TASK = {
    "resourceType": "Task",
    "basedOn": [{"reference": "ServiceRequest/{sr}"}],
    "status": "requested",
    "intent": "order",
    "code": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/CodeSystem/task-code",
                "code": "fulfill",
                "display": "Fulfill the focal request",
            }
        ],
        "text": "Welzijn op Recept-verwijzing uitvoeren",
    },
    "description": "Welzijn op Recept: intake door een welzijnscoach in Nieuwegein",
    "focus": {"reference": "ServiceRequest/{sr}"},
    "for": {"reference": "Patient/{patient}", "type": "Patient"},
    "authoredOn": "{when}",
    "lastModified": "{when}",
    "requester": {"reference": "{role}"},
    "performerType": [{"text": "Welzijnscoach"}],
    "owner": {"reference": "{owner}"},
    "restriction": {"period": {"start": "{when}", "end": "2027-12-08"}},
    "input": [
        {
            "type": {"text": "Welzijn op Recept-dienst"},
            "valueReference": {"reference": "HealthcareService/welzijn-de-brug-wor"},
        },
        {
            "type": {"text": "Hulpvraag"},
            "valueString": "Eenzaam sinds de scheiding; zoekt zinvolle dagbesteding.",
        },
    ],
}
COMMUNICATION = {
    "resourceType": "Communication",
    "basedOn": [{"reference": "ServiceRequest/{sr}"}],
    "partOf": [{"reference": "Task/{task}"}],
    "status": "completed",
    "category": [
        {
            "coding": [
                {
                    "system": "https://wor.example.nl/fhir/CodeSystem/wor-feedback-kinds",
                    "code": "accepted",
                    "display": "Verwijzing geaccepteerd",
                }
            ]
        }
    ],
    "subject": {"reference": "Patient/{patient}", "type": "Patient"},
    "about": [{"reference": "Task/{task}"}],
    "sent": "{when}",
    "recipient": [{"reference": "{role}"}, {"reference": "{practice}"}],
    "sender": {"reference": "{owner}"},
    "payload": [
        {
            "contentString": "De welzijnscoach heeft de verwijzing geaccepteerd en neemt contact op met uw patiënt."
        }
    ],
}


def _fill(template: Any, values: dict[str, str]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str) and "{" in template:
        return template.format(**values)
    return template


# Placeholders the per-resource values replace in a prototype's JSON and index rows. The ones that
# stand for ids are valid ids themselves: index_rows keeps `Patient/<mark>` only if it reads as a
# reference to a Patient (reference parameters with target types).
_MARKS = ("@@id@@", "mark-sr-0x7f", "mark-patient-0x7f", "mark-task-0x7f", "@@updated@@", "@@when@@")
_PROTO_WHEN = datetime(2000, 1, 1)
_PROTO_WHEN_S = _PROTO_WHEN.strftime("%Y-%m-%dT%H:%M:%S+00:00")
_PROTO_UPDATED = datetime(2001, 1, 1, 0, 0, 0, 123456)
_CHECKED = 40  # resources per load compared, as stored, with what the gateway's own code writes


def _values(i: int, when_dt: datetime) -> dict[str, str]:
    practice, role = PRACTICES[i % len(PRACTICES)]
    return {
        "sr": f"bench-sr-{i}",
        "patient": f"bench-patient-{i % 50000}",
        "task": f"bench-task-{i}",
        "when": when_dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "role": role,
        "owner": WELFARE[(i // len(PRACTICES)) % len(WELFARE)],
        "practice": practice,
    }


def _content(kind: str, rid: str, updated: datetime, values: dict[str, str], status: str) -> dict[str, Any]:
    """The resource exactly as the gateway stores it (meta first, as `_with_meta` writes it)."""
    from fhir_gateway.fhir.searchparams import format_instant

    body = _fill(TASK if kind == "Task" else COMMUNICATION, values)
    if kind == "Task":
        body["status"] = status
    content = {
        "resourceType": kind,
        "id": rid,
        "meta": {"versionId": "1", "lastUpdated": format_instant(updated)},
    }
    content.update((k, v) for k, v in body.items() if k != "resourceType")
    return content


def _index_tuples(kind: str, content: dict[str, Any], orgs: tuple[str, str]) -> list[tuple[Any, ...]]:
    """(param, system, value, text, low, high) from `index_rows` (what the gateway writes) + compartments."""
    from fhir_gateway.store.index import index_rows
    from fhir_gateway.store.search_sql import COMPARTMENT

    return [*index_rows(kind, content), *((COMPARTMENT, None, org, None, None, None) for org in orgs)]


class _Prototypes:
    """JSON and index rows per (kind, status, practice, owner), made once by the gateway's own
    code from a resource with placeholders; the database fills in each resource's ids and dates
    (INSERT … SELECT replace(…)). `populate` checks the result against `index_rows`."""

    def __init__(self) -> None:
        self.combos: dict[tuple[str, ...], int] = {}
        self.docs: list[tuple[int, str]] = []
        self.rows: list[tuple[Any, ...]] = []  # combo, kind, param, system, value, text, date kind

    def combo(self, kind: str, status: str, values: dict[str, str]) -> int:
        from fhir_gateway.fhir.searchparams import format_instant

        key = (kind, status, values["role"], values["owner"], values["practice"])
        if key not in self.combos:
            combo = self.combos[key] = len(self.combos)
            marks = dict(zip(("sr", "patient", "task"), _MARKS[1:4], strict=True))
            content = _content(
                kind, "@@id@@", _PROTO_WHEN, {**values, **marks, "when": _PROTO_WHEN_S}, status
            )
            content["meta"]["lastUpdated"] = format_instant(_PROTO_UPDATED)
            doc = orjson.dumps(content).decode().replace(_PROTO_WHEN_S, "@@when@@")
            self.docs.append((combo, doc.replace(format_instant(_PROTO_UPDATED), "@@updated@@")))
            for param, system, value, text, low, high in _index_tuples(
                kind, content, (values["practice"], values["owner"])
            ):
                # the dates these templates index are `when` (to the second, high = its last µs)
                # and, in pair rows, meta.lastUpdated (high only)
                date = "w" if low == _PROTO_WHEN else ("u" if high == _PROTO_UPDATED else None)
                assert (low, high) == (None, None) or date is not None, (param, low, high)
                self.rows.append((combo, kind, param, system, value, text, date))
        return self.combos[key]


def populate(url: str, start: int, stop: int, chunk: int = 200_000) -> float:
    """Add tasks `start..stop-1` (and one feedback Communication each). Returns seconds taken.

    Bulk path, since 1M tasks must load in minutes: Python sends one narrow row per resource;
    the database expands it with the prototypes into resources, history and search_index rows
    (INSERT … SELECT). Secondary indexes and the search_index foreign key are dropped during the
    load and recreated from their own definitions afterwards."""
    from fhir_gateway.fhir.searchparams import format_instant

    t0 = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    total = max(stop, 1)
    protos = _Prototypes()
    loader: _Loader = _PgLoader(url) if url.startswith("postgresql") else _SqliteLoader(url)
    samples: list[tuple[int, str, str, datetime, dict[str, str], str]] = []
    try:
        next_pk = loader.max_pk() + 1
        restore = loader.drop_secondary()
        for lo in range(start, stop, chunk):
            drv: list[tuple[Any, ...]] = []
            for i in range(lo, min(lo + chunk, stop)):
                when_dt = now - SPAN * (1 - i / total) - timedelta(minutes=5)
                when = when_dt.replace(microsecond=0)
                values = _values(i, when_dt)
                status = STATUSES[(i * 7) % len(STATUSES)]
                for kind, rid, updated in (
                    ("Task", f"bench-task-{i}", when_dt),
                    ("Communication", f"bench-comm-{i}", when_dt + timedelta(minutes=3)),
                ):
                    drv.append(
                        (
                            next_pk,
                            protos.combo(kind, status, values),
                            rid,
                            values["sr"],
                            values["patient"],
                            values["task"],
                            format_instant(updated),
                            values["when"],
                            updated,
                            when,
                            when + timedelta(microseconds=999_999),
                        )
                    )
                    if len(samples) < _CHECKED:
                        samples.append((next_pk, kind, rid, updated, values, status))
                    next_pk += 1
            loader.expand(protos, drv)
        loader.restore(restore)
    finally:
        loader.close()
    _check(url, samples)
    analyze(url)
    return time.perf_counter() - t0


def _check(url: str, samples: list[tuple[int, str, str, datetime, dict[str, str], str]]) -> None:
    """The stored rows of the first resources loaded equal what the gateway's own code writes."""
    from fhir_gateway.store.database import Database
    from fhir_gateway.store.tables import ResourceRow, SearchIndexRow

    R, IX = ResourceRow.__table__, SearchIndexRow.__table__
    db = Database(url)
    with db.engine.connect() as conn:
        for pk, kind, rid, updated, values, status in samples:
            row = conn.execute(sa.select(R).where(R.c.pk == pk)).one()
            content = _content(kind, rid, updated, values, status)
            assert (row.resource_type, row.id, row.last_updated, row.content) == (
                kind,
                rid,
                updated,
                content,
            ), pk
            stored = conn.execute(
                sa.select(IX.c.param, IX.c.system, IX.c.value, IX.c.text, IX.c.low, IX.c.high).where(
                    IX.c.resource_pk == pk, IX.c.resource_type == kind
                )
            ).all()
            expected = _index_tuples(kind, content, (values["practice"], values["owner"]))
            assert sorted(map(tuple, stored), key=repr) == sorted(expected, key=repr), pk
    db.dispose()


_TABLES = ("resources", "resource_history", "search_index")
_DRV_COLS = "pk, combo, rid, sr, patient, task, updated_s, when_s, updated, w_low, w_high"
_DOC = (
    f"replace(replace(replace(replace(replace(replace(p.doc, '{_MARKS[0]}', d.rid), '{_MARKS[1]}', d.sr), "
    f"'{_MARKS[2]}', d.patient), '{_MARKS[3]}', d.task), '{_MARKS[4]}', d.updated_s), '{_MARKS[5]}', d.when_s)"
)
_VALUE = f"replace(replace(replace(x.value, '{_MARKS[1]}', d.sr), '{_MARKS[2]}', d.patient), '{_MARKS[3]}', d.task)"


class _Loader:
    """One backend's bulk path: temp tables `proto_doc`, `proto_ix`, `drv` expanded by SQL."""

    json_cast = ""
    false = "0"

    def execute(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def insert(self, table: str, cols: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def drop_secondary(self) -> list[str]:
        raise NotImplementedError

    def max_pk(self) -> int:
        return int(self.execute("SELECT coalesce(max(pk), 0) FROM resources").fetchone()[0])

    def expand(self, protos: _Prototypes, drv: list[tuple[Any, ...]]) -> None:
        for table in ("proto_doc", "proto_ix", "drv"):
            self.execute(f"DELETE FROM {table}")
        self.insert("proto_doc", "combo, doc", protos.docs)
        self.insert("proto_ix", "combo, kind, param, system, value, text, date_kind", protos.rows)
        self.insert("drv", _DRV_COLS, drv)
        lo = drv[0][0]
        self.execute(
            "INSERT INTO resources (pk, resource_type, id, version_id, last_updated, deleted, content) "
            f"SELECT d.pk, x.kind, d.rid, 1, d.updated, {self.false}, ({_DOC}){self.json_cast} "
            "FROM drv d JOIN proto_doc p ON p.combo = d.combo "
            "JOIN (SELECT DISTINCT combo, kind FROM proto_ix) x ON x.combo = d.combo ORDER BY d.pk"
        )
        self.execute(
            "INSERT INTO resource_history (resource_type, id, version_id, last_updated, method, deleted, content) "
            f"SELECT resource_type, id, 1, last_updated, 'POST', {self.false}, content FROM resources "
            "WHERE pk >= ? ORDER BY pk".replace("?", str(lo))
        )
        self.execute(
            "INSERT INTO search_index (resource_pk, resource_type, param, system, value, text, low, high) "
            f"SELECT d.pk, x.kind, x.param, x.system, {_VALUE}, x.text, "
            "CASE x.date_kind WHEN 'w' THEN d.w_low END, "
            "CASE x.date_kind WHEN 'w' THEN d.w_high WHEN 'u' THEN d.updated END "
            "FROM drv d JOIN proto_ix x ON x.combo = d.combo"
        )
        self.commit()

    def restore(self, statements: list[str]) -> None:
        for statement in statements:
            self.execute(statement)
        self.commit()


class _PgLoader(_Loader):
    json_cast = "::jsonb"
    false = "false"

    def __init__(self, url: str) -> None:
        import psycopg

        dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(dsn)
        self.conn.execute("SET maintenance_work_mem = '512MB'")
        self.conn.execute("CREATE TEMP TABLE proto_doc (combo int, doc text)")
        self.conn.execute(
            "CREATE TEMP TABLE proto_ix (combo int, kind text, param text, system text, value text, "
            "text text, date_kind text)"
        )
        self.conn.execute(
            "CREATE TEMP TABLE drv (pk bigint, combo int, rid text, sr text, patient text, task text, "
            "updated_s text, when_s text, updated timestamp, w_low timestamp, w_high timestamp)"
        )

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params or None)

    def insert(self, table: str, cols: str, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def drop_secondary(self) -> list[str]:
        """Drop non-constraint indexes and the search_index foreign keys; return how to recreate them."""
        restore: list[str] = []
        for name, definition in self.execute(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.conrelid = 'search_index'::regclass AND c.contype = 'f'"
        ).fetchall():
            self.execute(f'ALTER TABLE search_index DROP CONSTRAINT "{name}"')
            restore.append(f'ALTER TABLE search_index ADD CONSTRAINT "{name}" {definition}')
        for name, definition in self.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            [list(_TABLES)],
        ).fetchall():
            self.execute(f'DROP INDEX "{name}"')
            restore.insert(0, definition)
        self.commit()
        return restore

    def restore(self, statements: list[str]) -> None:
        super().restore(statements)
        for table in _TABLES:
            self.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), (SELECT max(pk) FROM {table}))"
            )
        self.commit()


class _SqliteLoader(_Loader):
    def __init__(self, url: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(sa.engine.make_url(url).database or "", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "foreign_keys=OFF", "busy_timeout=30000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("PRAGMA cache_size=-500000")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.conn.execute("CREATE TEMP TABLE proto_doc (combo, doc)")
        self.conn.execute("CREATE TEMP TABLE proto_ix (combo, kind, param, system, value, text, date_kind)")
        self.conn.execute(f"CREATE TEMP TABLE drv ({_DRV_COLS})")
        self.conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params)

    def insert(self, table: str, cols: str, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(rows[0]))
        self.conn.executemany(
            f"INSERT INTO {table} ({cols}) VALUES ({marks})", [tuple(map(_sqlite_value, r)) for r in rows]
        )

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self.conn.close()

    def drop_secondary(self) -> list[str]:
        marks = ",".join("?" * len(_TABLES))
        found = self.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})",
            _TABLES,
        ).fetchall()
        for name, _ in found:
            self.execute(f'DROP INDEX "{name}"')
        return [sql for _, sql in found]


def _sqlite_value(value: Any) -> Any:
    """SQLAlchemy's SQLite storage: DATETIME as text with microseconds, booleans as 0/1."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, bool):
        return int(value)
    return value


def analyze(url: str) -> None:
    """Statistics as autovacuum / a DBA would have them after a bulk load."""
    from fhir_gateway.store.database import Database

    db = Database(url)
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in _TABLES:
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    else:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    db.dispose()


def queries(now: datetime) -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    since = (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Task worklist (owner, status=requested, _count=50)": (
            "welzijn-de-brug-cms",
            "Task",
            [("owner", "Organization/welzijn-de-brug"), ("status", "requested"), ("_count", "50")],
        ),
        "Task worklist sorted (owner, status=requested, _sort=-authored-on, _count=50)": (
            "welzijn-de-brug-cms",
            "Task",
            [
                ("owner", "Organization/welzijn-de-brug"),
                ("status", "requested"),
                ("_sort", "-authored-on"),
                ("_count", "50"),
            ],
        ),
        "Communication inbox (recipient, _lastUpdated=gt 7 days ago)": (
            "praktijk-de-geinoord-his",
            "Communication",
            [
                ("recipient", "PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord"),
                ("_lastUpdated", f"gt{since}"),
            ],
        ),
    }


def measure(base: str, env: dict[str, str], repeats: int) -> list[dict[str, Any]]:
    out = []
    now = datetime.now(UTC)
    for name, (client_id, rtype, params) in queries(now).items():
        headers = fhir_headers(token(env, client_id))
        with httpx.Client(base_url=base, timeout=60) as client:
            lat = []
            found = None
            for i in range(repeats + 3):
                t = time.perf_counter()
                r = client.get(f"/fhir/{rtype}", params=params, headers=headers)
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                if i >= 3:
                    lat.append(dt)
                found = len(r.json().get("entry", []))
        out.append({"query": name, "entries_on_page": found, "requests": repeats, **percentiles(lat)})
    return out


DB_RUNS = 50


def explain(url: str, token_key: str) -> dict[str, str]:
    """Run each worklist search in-process, capture the page query the repository sends, EXPLAIN it."""
    from fhir_gateway.app import create_app
    from fhir_gateway.rest.request import FhirRequest
    from fhir_gateway.security.principal import Principal
    from fhir_gateway.settings import Settings

    app = create_app(Settings(database_url=url, token_key=token_key, log_level="WARNING"))
    engine = app.state.ctx.database.engine
    captured: list[tuple[str, Any]] = []

    def grab(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if (
            statement.lstrip().upper().startswith("SELECT")
            and "LIMIT" in statement.upper()
            and " resources" in statement
        ):
            captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    plans: dict[str, str] = {}
    orgs = {
        "welzijn-de-brug-cms": ("Organization/welzijn-de-brug", "welfare-org"),
        "praktijk-de-geinoord-his": ("Organization/praktijk-de-geinoord", "gp-practice"),
    }
    pg = engine.dialect.name == "postgresql"
    for name, (client_id, rtype, params) in queries(datetime.now(UTC)).items():
        captured.clear()
        org, role = orgs[client_id]
        principal = Principal(client_id, org, role, ("system/*.cruds",), True)
        resp = app.state.router.handle(
            FhirRequest("GET", rtype, params=params, principal=principal, base_url="http://bench/fhir")
        )
        if resp.status != 200 or not captured:
            plans[name] = f"(no page query captured; status {resp.status})"
            continue
        statement, parameters = captured[0]
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            runs = []
            for _ in range(DB_RUNS):  # the page query alone: far less noisy than HTTP on a shared box
                t = time.perf_counter()
                conn.exec_driver_sql(statement, parameters).all()
                runs.append((time.perf_counter() - t) * 1000)
        plan = "\n".join(str(r[0]) if pg else f"{r[1]:>3} {r[2]:>3} {r[3]}" for r in rows)
        runs.sort()
        timing = f"-- page query in-process, {DB_RUNS} runs: min {runs[0]:.2f} ms, median {runs[len(runs) // 2]:.2f} ms"
        plans[name] = f"-- SQL\n{statement.strip()}\n-- plan\n{plan}\n{timing}"
    sa.event.remove(engine, "before_cursor_execute", grab)
    app.state.ctx.close()
    return plans
