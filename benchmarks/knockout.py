"""What each part of a referral really costs: switch it off and measure what is saved.

    python -m benchmarks.knockout [--referrals 300] [--rounds 5] [--postgres]

cProfile doubles the time of a referral and charges its overhead to whatever makes many small
Python calls, so its shares mislead. Here each part is replaced by a no-op (a *knock-out*) in a
process of its own, and the CPU time per referral (`process_time`, in-process through
`router.handle` as `profile_referral` runs it) is compared with the full referral. Variants and
the baseline alternate round by round, and each reports the median of its rounds: on a shared
box the speed drifts by tens of percent from minute to minute. With `--postgres` the
PostgreSQL server's CPU per referral (all its processes, from /proc) is reported beside the
gateway's: the server runs on the same cores, so what a part costs there counts as much.

A knock-out is a measurement, not a supported configuration: without its index rows a Task can
not be searched, without the audit a read is not logged. Each variant keeps the referral
answering 200, so what remains is the same path minus that one part. Writes
benchmarks/results/knockout.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable

from benchmarks.harness import ROOT

OUT = ROOT / "benchmarks" / "results" / "knockout.md"


def _structure() -> None:
    """fhir.resources model validation of the Bundle shell and each posted resource."""
    from fhir_gateway.rest import bundles
    from fhir_gateway.workflow import resources

    def unchecked(data: object, expected_type: str | None = None) -> object:
        return data

    bundles.check_resource = unchecked  # type: ignore[assignment]
    resources.check_resource = unchecked  # type: ignore[assignment]


def _profiles() -> None:
    """The gateway's own profile validator, on the posted and on the derived resources."""
    from fhir_gateway.validation.validator import Validator

    Validator.validate = lambda self, resource, profile=None: []  # type: ignore[method-assign]


def _index() -> None:
    """Search index rows (computing and writing them) of every type but Patient, whose rows
    the next referral's ifNoneExist needs. Compartment grants stay."""
    from fhir_gateway.store import index, repository

    def patient_only(resource_type: str, *args: object, **kwargs: object) -> list[index.IndexRow]:
        return index.index_rows(resource_type, *args, **kwargs) if resource_type == "Patient" else []  # type: ignore[arg-type]

    repository.index_rows = patient_only  # type: ignore[assignment]


def _history() -> None:
    """The history row of each write (SQLite; on PostgreSQL a create writes it in the same
    statement as the resource, which this does not remove)."""
    from fhir_gateway.store.repository import Repository

    Repository._history = lambda self, *args: None  # type: ignore[method-assign]


def _audit() -> None:
    """The request's AuditEvent and Provenance (each a resource with history and index rows)."""
    from fhir_gateway.security import audit

    audit.write = lambda repo, trail, status: None  # type: ignore[assignment]


def _read_model() -> None:
    """The report's read model rows, kept write by write."""
    from fhir_gateway.reports import read_model

    read_model.keep = lambda repo, stored: None  # type: ignore[assignment]


def _digest() -> None:
    """The canonical digest of the posted referral (resend detection)."""
    from fhir_gateway.workflow import referrals

    referrals.posted_digest = lambda service_request, entries=(): "-"  # type: ignore[assignment]


VARIANTS: dict[str, Callable[[], None] | None] = {
    "full referral": None,
    "structure": _structure,
    "profiles": _profiles,
    "index": _index,
    "history": _history,
    "audit": _audit,
    "read-model": _read_model,
    "digest": _digest,
}


def child(variant: str, referrals: int, postgres: bool) -> tuple[float, float | None]:
    """CPU ms per referral of `referrals` referrals with `variant` knocked out: the gateway's,
    and the PostgreSQL server's (None on SQLite)."""
    from benchmarks.profile_referral import timed_referrals

    knock = VARIANTS[variant]
    if knock is not None:
        knock()
    return timed_referrals(referrals, postgres, "bench_knockout")


Rounds = dict[str, list[float]]


def run(referrals: int, rounds: int, postgres: bool) -> tuple[Rounds, Rounds]:
    """Gateway and PostgreSQL server CPU ms per referral, per variant, round by round."""
    results: Rounds = {name: [] for name in VARIANTS}
    server: Rounds = {name: [] for name in VARIANTS}
    for r in range(rounds):
        for name in VARIANTS:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.knockout",
                "--child",
                name,
                "--referrals",
                str(referrals),
            ]
            out = subprocess.run(
                [*cmd, *(["--postgres"] if postgres else [])],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            measured = json.loads(out.strip().splitlines()[-1])
            results[name].append(measured["cpu_ms"])
            if measured["server_ms"] is not None:
                server[name].append(measured["server_ms"])
            print(f"round {r + 1}: {name:14} {results[name][-1]:.2f} ms {measured['server_ms']}", flush=True)
    return results, server


def report(results: Rounds, server: Rounds, referrals: int, postgres: bool) -> str:
    base = statistics.median(results["full referral"])
    server_base = statistics.median(server["full referral"]) if postgres else 0.0
    lines = [
        f"# Knock-outs ({'PostgreSQL' if postgres else 'SQLite'}, {referrals} referrals per process, "
        f"{len(results['full referral'])} alternated rounds, median)",
        "",
        "| switched off | what it is | CPU ms / referral | saved ms | saved % | rounds (ms) |"
        + (" PostgreSQL server CPU ms | server saved ms |" if postgres else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if postgres else ""),
    ]
    for name, knock in VARIANTS.items():
        med = statistics.median(results[name])
        what = " ".join((knock.__doc__ or "").split()) if knock else "nothing: the whole referral"
        saved = base - med
        rounds = " / ".join(f"{v:.2f}" for v in results[name])
        line = f"| {name} | {what} | {med:.2f} | {saved:+.2f} | {saved / base * 100:+.0f} | {rounds} |"
        if postgres:
            on_server = statistics.median(server[name])
            line += f" {on_server:.2f} | {server_base - on_server:+.2f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--referrals", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database per process")
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        cpu_ms, server_ms = child(args.child, args.referrals, args.postgres)
        print(json.dumps({"cpu_ms": cpu_ms, "server_ms": server_ms}))
        return
    text = report(*run(args.referrals, args.rounds, args.postgres), args.referrals, args.postgres)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
