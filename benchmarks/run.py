"""One command for every number: `python -m benchmarks.run [--quick] [--postgres] [--peer]`.

Writes benchmarks/results/results.md (tables, EXPLAIN plans) and results.json, all measured in this
one run by the same load client on the same box:

- referral ingest through a real `fhir-gateway serve` (uvicorn, 1 worker, --no-worker) over HTTP
  as the GP practice client, per backend and concurrency;
- ceilings (benchmarks/ceilings.py, same client, same concurrency): (a) echo = orjson parse + 201,
  (b) validate = parse + fhir.resources R4B ServiceRequest validate + dump;
- worklist searches with N bulk-inserted tasks (+ one feedback Communication each), with plans;
- HL7 v2 REF^I12 over MLLP (benchmarks/v2_mllp.py) messages/s and p99 to ACK;
- the referral-path profile (benchmarks/profile_referral.py → results/profile.md);
- optionally the fhirstarter peer (benchmarks/peer.py, its own venv).

Numbers only, no asserts. --quick: SQLite (and PostgreSQL with --postgres) at concurrency 1 and 10,
10k tasks, fewer requests: about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import orjson

from benchmarks import worklist
from benchmarks.harness import (
    GP_CLIENT,
    ROOT,
    Server,
    fhir_headers,
    gateway_env,
    load,
    postgres_available,
    postgres_database,
    prepare_database,
    referral_body,
    token,
)

OUT = ROOT / "benchmarks" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ceilings(concurrencies: list[int], requests: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
    server = Server(
        {**__import__("os").environ},
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.ceilings:app",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    )
    out: dict[str, list[dict[str, Any]]] = {"echo": [], "validate": []}
    with server:
        for c in concurrencies:
            for kind in ("echo", "validate"):
                r = load(server.base, f"/{kind}", requests[c], c, referral_body, fhir_headers())
                log(f"ceiling {kind} c={c}: {r['rps']} req/s")
                out[kind].append(r)
    return out


def v2(url: str, messages: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/v2_mllp.py",
            "--messages",
            str(messages),
            "--connections",
            "8",
            "--database-url",
            url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout[done.stdout.index("{") :])


def backend(
    name: str,
    url: str,
    args: argparse.Namespace,
    concurrencies: list[int],
    requests: dict[int, int],
    sizes: list[int],
) -> dict[str, Any]:
    env = gateway_env(url)
    prepare_database(env)
    result: dict[str, Any] = {"backend": name, "ingest": [], "worklist": [], "plans": {}}
    server = Server(env)
    with server:
        for c in concurrencies:
            tok = token(env, GP_CLIENT)
            r = load(
                server.base,
                "/fhir",
                requests[c],
                c,
                lambda i, c=c: referral_body(i, f"B{c}", own_patient=args.distinct_patients),
                fhir_headers(tok),
            )
            log(f"{name} ingest c={c}: {r['rps']} req/s p99 {r['p99_ms']} ms statuses {r['statuses']}")
            r["patients"] = "a patient per referral" if args.distinct_patients else "one patient"
            result["ingest"].append(r)
        done = 0
        for size in sizes:
            seconds = worklist.populate(url, done, size)
            done = size
            log(f"{name} populated {size} tasks ({seconds:.1f} s)")
            rows = worklist.measure(server.base, env, args.worklist_repeats)
            for row in rows:
                row["tasks"] = size
                row["populate_s"] = round(seconds, 1)
                log(
                    f"{name} {size} {row['query'][:30]}: p50 {row['p50_ms']} ms, {row['entries_on_page']} entries"
                )
            result["worklist"].extend(rows)
            result["plans"][str(size)] = worklist.explain(url, env["GATEWAY_TOKEN_KEY"])
    return result


def ratios(gateway: list[dict[str, Any]], ceiling: dict[str, list[dict[str, Any]]]) -> None:
    for row in gateway:
        for kind in ("echo", "validate"):
            ref = next((c for c in ceiling[kind] if c["concurrency"] == row["concurrency"]), None)
            if ref:
                row[f"ratio_to_{kind}_ceiling"] = round(row["rps"] / ref["rps"], 3)


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"{res['started']} · {res['machine']} · mode: {res['mode']} · one run, same load client "
        "(httpx, threads) on the same box as the server, so absolute numbers include client cost.",
        "",
        "## Referral ingest over HTTP (transaction Bundle → Task + CarePlan) vs. ceilings",
        "",
        "| target | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | ratio to echo ceiling | ratio to validate ceiling | ratio to peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, rows in res["ceilings"].items():
        for r in rows:
            lines.append(
                f"| ceiling ({kind}) | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']} | "
                f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | | | |"
            )
    for b in res["backends"]:
        for r in b["ingest"]:
            lines.append(
                f"| gateway {b['backend']} ({r.get('patients', 'one patient')}) | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']} | "
                f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r.get('ratio_to_echo_ceiling', '')} | "
                f"{r.get('ratio_to_validate_ceiling', '')} | {r.get('ratio_to_peer', '')} |"
            )
    for r in res.get("peer", {}).get("runs", []):
        lines.append(
            f"| peer fhirstarter (in-memory SR create) | {r['concurrency']} | {r['requests']} | {r['errors']} | "
            f"{r['rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | | | |"
        )
    lines += [
        "",
        "## Worklist searches over HTTP (sequential, one client)",
        "",
        "| backend | tasks | query | entries on page | p50 ms | p95 ms | p99 ms | bulk insert s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in res["backends"]:
        for r in b["worklist"]:
            lines.append(
                f"| {b['backend']} | {r['tasks']} | {r['query']} | {r['entries_on_page']} | {r['p50_ms']} | "
                f"{r['p95_ms']} | {r['p99_ms']} | {r['populate_s']} |"
            )
    lines += [
        "",
        "## HL7 v2 REF^I12 over MLLP (8 connections)",
        "",
        "| backend | messages | msg/s | p50 ms to ACK | p99 ms to ACK | parse ms | map ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in res["backends"]:
        v = b.get("v2")
        if v:
            lines.append(
                f"| {b['backend']} | {v['messages']} | {v['messages_per_s']} | {v['p50_ms']} | {v['p99_ms']} | "
                f"{v['parse_ms']} | {v['map_ms']} |"
            )
    if res.get("profile"):
        lines += [
            "",
            f"## Profile\n\nIn-process referral: {res['profile']['ms_per_referral']} ms "
            "(see profile.md for the top functions).",
        ]
    lines += ["", "## Query plans (the exact page query the gateway sends)", ""]
    for b in res["backends"]:
        for size, plans in b["plans"].items():
            for name, plan in plans.items():
                lines += [f"### {b['backend']} · {size} tasks · {name}", "", "```", plan, "```", ""]
    return "\n".join(lines) + "\n"


def peer_ratios(backends: list[dict[str, Any]], peer_runs: list[dict[str, Any]]) -> None:
    """Our whole referral pipeline against the peer's plain ServiceRequest create, same concurrency."""
    for b in backends:
        for row in b["ingest"]:
            ref = next((p for p in peer_runs if p["concurrency"] == row["concurrency"]), None)
            if ref and ref["rps"]:
                row["ratio_to_peer"] = round(row["rps"] / ref["rps"], 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--postgres", action="store_true", help="also PostgreSQL (fresh database, dropped after)")
    p.add_argument(
        "--peer", action="store_true", help="also the fhirstarter peer (needs benchmarks/.peer-venv)"
    )
    p.add_argument("--sizes", default=None, help="worklist task counts, e.g. 10000,100000")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--distinct-patients",
        action="store_true",
        help="ingest: each referral for a patient of its own (default: all for one patient)",
    )
    p.add_argument(
        "--concurrency", default=None, help="client counts for ingest, e.g. 1,16 (default 1,10,50)"
    )
    p.add_argument(
        "--only",
        choices=["worklist", "ingest"],
        default=None,
        help="run only this part: the worklist at scale, or ingest (ceilings, gateway, peer)",
    )
    args = p.parse_args()
    only_worklist = args.only == "worklist"
    only_ingest = args.only == "ingest"
    concurrencies = [] if only_worklist else ([1, 10] if args.quick else [1, 10, 50])
    requests = {1: 100, 10: 300} if args.quick else {1: 300, 10: 1000, 50: 1000}
    if args.concurrency and not only_worklist:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        requests = {
            c: requests.get(c, 100 if args.quick else (300 if c == 1 else 1000)) for c in concurrencies
        }
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([10_000] if args.quick else [10_000, 100_000])
    )
    if only_ingest:
        sizes = []
    args.worklist_repeats = 30 if args.quick else 100
    res: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "mode": "quick" if args.quick else "full",
        "backends": [],
    }
    t0 = time.perf_counter()
    log("ceilings")
    res["ceilings"] = ceilings(concurrencies, requests) if concurrencies else {"echo": [], "validate": []}
    targets: list[tuple[str, Any]] = [("sqlite", None)]
    if args.postgres:
        if postgres_available():
            targets.append(("postgresql", postgres_database))
        else:
            log("PostgreSQL not reachable: skipped")
    for name, make in targets:
        with ExitStack() as stack:
            url = stack.enter_context(make()) if make else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            b = backend(name, url, args, concurrencies, requests, sizes)
            if only_worklist or only_ingest:
                ratios(b["ingest"], res["ceilings"])
                res["backends"].append(b)
                continue
            v2url = stack.enter_context(make("benchv2")) if make else f"sqlite:///{tempfile.mkdtemp()}/v2.db"
            b["v2"] = v2(v2url, 100 if args.quick else 300)
            log(f"{name} v2: {b['v2']['messages_per_s']} msg/s")
            ratios(b["ingest"], res["ceilings"])
            res["backends"].append(b)
    if args.peer and not only_worklist:
        from benchmarks import peer

        res["peer"] = peer.run(concurrencies, requests)
        peer_ratios(res["backends"], res["peer"].get("runs", []))
    if not args.no_profile and not only_worklist:
        from benchmarks.profile_referral import profile

        prof = profile(40 if args.quick else 100)
        res["profile"] = {"ms_per_referral": prof["ms_per_referral"]}
    res["elapsed_s"] = round(time.perf_counter() - t0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"results-{args.only}" if args.only else "results"  # a partial run keeps the full results
    (OUT / f"{stem}.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    (OUT / f"{stem}.md").write_text(markdown(res))
    if not args.only or only_ingest:  # the committed copy (benchmarks/README.md quotes it)
        (OUT / "latest.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    print((OUT / f"{stem}.md").read_text())
    log(f"done in {res['elapsed_s']} s → {OUT / f'{stem}.md'}")


if __name__ == "__main__":
    main()
