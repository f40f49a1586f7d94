"""The console's referral list at scale: N referrals (ServiceRequest + Task + Patient), then the
time of `/console/referrals` with and without the age filter, on SQLite.

One real referral goes through the API (so the shapes are what the gateway writes); the rest are
copies written with the gateway's own `Repository.create` (resources, history, search index), each
with its own ids and an authoredOn spread over a year. Numbers only, nothing asserted.

    .venv/bin/python -m benchmarks.console_referrals --referrals 3000
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_gateway.store.database import Database
from tests.conftest import authorize, make_client
from tests.wor import FHIR_JSON, load_directory, referral_bundle, task_for


def populate(client: Any, n: int) -> None:
    """One referral by the API, then n - 1 copies by the repository."""
    load_directory(client)
    authorize(client, "praktijk-de-geinoord-his")
    resp = client.post("/fhir", json=referral_bundle(), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]
    authorize(client, "gateway-admin")
    task = task_for(client, sr["id"])
    ctx = client.app.state.ctx
    now = datetime.now(UTC)
    with ctx.database.connection(write=True) as conn:
        repo = ctx.repository(conn)
        for i in range(1, n):
            when = (now - timedelta(hours=3 * i)).isoformat(timespec="seconds")
            new_sr = copy.deepcopy(sr)
            new_sr.pop("meta", None)
            new_sr["authoredOn"] = when
            new_sr["identifier"][0]["value"] = f"BENCH-{i:06d}"
            stored = repo.create(new_sr)
            new_task = copy.deepcopy(task)
            new_task.pop("meta", None)
            new_task["focus"] = {"reference": f"ServiceRequest/{stored.id}"}
            new_task["basedOn"] = [{"reference": f"ServiceRequest/{stored.id}"}]
            new_task["authoredOn"] = when
            repo.create(new_task)


def timed(client: Any, path: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        resp = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200, resp.status_code
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--referrals", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", help="keep the database in this file (reused when it exists)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "bench.db"
        reuse = path.exists()
        url = f"sqlite:///{path}"
        db = Database(url)
        db.upgrade()
        db.dispose()
        with make_client(url, console_password="benchmark password 1") as client:
            if not reuse:
                started = time.perf_counter()
                populate(client, args.referrals)
                print(
                    f"populated {args.referrals} referrals in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
            client.headers.pop("Authorization")
            form = {"content-type": "application/x-www-form-urlencoded"}
            resp = client.post("/console/login", content="password=benchmark+password+1", headers=form)
            assert resp.status_code == 200, resp.status_code
            for label, path in (
                ("no filter", "/console/referrals"),
                ("min_age=30", "/console/referrals?min_age=30"),
                ("max_age=30", "/console/referrals?max_age=30"),
                ("min_age=30&max_age=200", "/console/referrals?min_age=30&max_age=200"),
                ("state=routed (content)", "/console/referrals?state=routed"),
            ):
                ms = timed(client, path, args.repeats)
                print(
                    f"{label:>24}: median {statistics.median(ms):8.1f} ms  (runs: {', '.join(f'{m:.0f}' for m in ms)})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
