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


def populate(url: str, start: int, stop: int, chunk: int = 5000) -> float:
    """Add tasks `start..stop-1` (and one feedback Communication each). Returns seconds taken."""
    from fhir_gateway.fhir.searchparams import format_instant
    from fhir_gateway.store.database import Database
    from fhir_gateway.store.index import index_rows
    from fhir_gateway.store.repository import COMPARTMENT, _full_index_row
    from fhir_gateway.store.tables import HistoryRow, ResourceRow, SearchIndexRow

    R, H, IX = ResourceRow.__table__, HistoryRow.__table__, SearchIndexRow.__table__
    db = Database(url)
    t0 = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    total = max(stop, 1)
    with db.engine.begin() as conn:
        next_pk = (conn.execute(sa.select(sa.func.max(R.c.pk))).scalar() or 0) + 1
    for lo in range(start, stop, chunk):
        res_rows: list[dict[str, Any]] = []
        hist_rows: list[dict[str, Any]] = []
        ix_rows: list[dict[str, Any]] = []
        for i in range(lo, min(lo + chunk, stop)):
            practice, role = PRACTICES[i % len(PRACTICES)]
            owner = WELFARE[(i // len(PRACTICES)) % len(WELFARE)]
            when_dt = now - SPAN * (1 - i / total) - timedelta(minutes=5)
            values = {
                "sr": f"bench-sr-{i}",
                "patient": f"bench-patient-{i % 50000}",
                "task": f"bench-task-{i}",
                "when": when_dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "role": role,
                "owner": owner,
                "practice": practice,
            }
            for kind, template, rid, updated in (
                ("Task", TASK, f"bench-task-{i}", when_dt),
                ("Communication", COMMUNICATION, f"bench-comm-{i}", when_dt + timedelta(minutes=3)),
            ):
                body = _fill(template, values)
                if kind == "Task":
                    body["status"] = STATUSES[(i * 7) % len(STATUSES)]
                content = {
                    "resourceType": kind,
                    "id": rid,
                    "meta": {"versionId": "1", "lastUpdated": format_instant(updated)},
                }
                content.update((k, v) for k, v in body.items() if k != "resourceType")
                pk = next_pk
                next_pk += 1
                res_rows.append(
                    {
                        "pk": pk,
                        "resource_type": kind,
                        "id": rid,
                        "version_id": 1,
                        "last_updated": updated,
                        "deleted": False,
                        "content": content,
                    }
                )
                hist_rows.append(
                    {
                        "resource_type": kind,
                        "id": rid,
                        "version_id": 1,
                        "last_updated": updated,
                        "method": "POST",
                        "deleted": False,
                        "content": content,
                    }
                )
                ix_rows.extend(_full_index_row(r) for r in index_rows(kind, content, pk))
                for org in (practice, owner):
                    ix_rows.append(
                        _full_index_row(
                            {"resource_pk": pk, "resource_type": kind, "param": COMPARTMENT, "value": org}
                        )
                    )
        with db.engine.begin() as conn:
            conn.execute(sa.insert(R), res_rows)
            conn.execute(sa.insert(H), hist_rows)
            conn.execute(sa.insert(IX), ix_rows)
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            for table in ("resources", "resource_history", "search_index"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), (SELECT max(pk) FROM {table}))"
                )
    analyze(db)
    db.dispose()
    return time.perf_counter() - t0


def analyze(db: Any) -> None:
    """Statistics as autovacuum / a DBA would have them after a bulk load."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE resources")
            conn.exec_driver_sql("VACUUM ANALYZE search_index")
    else:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def queries(now: datetime) -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    since = (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Task worklist (owner, status=requested, _count=50)": (
            "welzijn-de-brug-cms",
            "Task",
            [("owner", "Organization/welzijn-de-brug"), ("status", "requested"), ("_count", "50")],
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


def explain(url: str, token_key: str) -> dict[str, str]:
    """Run each worklist search in-process, capture the page query the repository sends, EXPLAIN it."""
    from fhir_gateway.api.request import FhirRequest
    from fhir_gateway.app import create_app
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
            and "FROM resources" in statement
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
        plan = "\n".join(str(r[0]) if pg else f"{r[1]:>3} {r[2]:>3} {r[3]}" for r in rows)
        plans[name] = f"-- SQL\n{statement.strip()}\n-- plan\n{plan}"
    sa.event.remove(engine, "before_cursor_execute", grab)
    app.state.ctx.close()
    return plans
