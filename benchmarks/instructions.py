"""Instructions per referral under valgrind's callgrind: a figure that does not drift.

    python -m benchmarks.instructions [--referrals 50] [--against REV] [--postgres]

On the shared 2-core box CPU time drifts by tens of percent from minute to minute
(benchmarks/README.md), so a change that saves 5 % cannot be seen in req/s or in ms. callgrind
counts the instructions a process executes: the same count for the same code and input whatever
else the machine is doing. The referral runs in-process as `profile_referral` runs it, twice
under callgrind at the same time: after the same warm-up, once with no measured referrals and
once with N; the difference divided by N is the instructions of one referral (start-up cancels).

`--against REV` measures a git worktree of REV (a commit, `HEAD`, `main~2`) the same way, so a
change is reported as a ratio to the code before it. Each run takes a few minutes: callgrind is
about 50 times slower than the process on its own. Writes benchmarks/results/instructions.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import ROOT

OUT = ROOT / "benchmarks" / "results" / "instructions.md"
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def child(referrals: int, postgres: bool) -> None:
    """Start the gateway of whatever `fhir_gateway` is on sys.path, warm up, run `referrals`."""
    import fhir_gateway

    if not Path(fhir_gateway.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"measuring {fhir_gateway.__file__}, not the code in {Path.cwd()}")
    # this file's runner, with the code under measurement first on sys.path (see `_measure`)
    spec = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("profile_referral.py"))
    runner = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(runner)  # type: ignore[union-attr]
    runner.timed_referrals(referrals, postgres, "bench_instructions")


def _callgrind(root: Path, referrals: int, postgres: bool) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(referrals),
        *(["--postgres"] if postgres else []),
    ]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found[-1])


def _measure(root: Path, referrals: int, postgres: bool) -> int:
    """Instructions per referral of the code at `root` (both runs at once, one per core). The
    bytecode is compiled first: else whichever run imports a module first compiles it, and the
    two runs no longer differ only by the referrals (+17 % seen on a fresh worktree)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "fhir_gateway", "tests", "benchmarks"], cwd=root, check=True
    )
    with ThreadPoolExecutor(2) as pool:
        base, full = pool.map(lambda n: _callgrind(root, n, postgres), (0, referrals))
    return round((full - base) / referrals)


@contextlib.contextmanager
def _worktree(rev: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-instructions-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--referrals", type=int, default=50)
    p.add_argument("--against", metavar="REV", help="also measure this git revision, and the ratio")
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database per run")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.postgres)
        return
    backend = "PostgreSQL" if args.postgres else "SQLite"
    here = _measure(ROOT, args.referrals, args.postgres)
    lines = [
        f"# Instructions per referral ({backend}, callgrind, {args.referrals} referrals after 20)",
        "",
        "| code | instructions / referral | ratio |",
        "|---|---|---|",
    ]
    if args.against:
        with _worktree(args.against) as tree:
            before = _measure(tree, args.referrals, args.postgres)
        lines.append(f"| {args.against} | {before:,} | 1.000 |")
        lines.append(f"| working tree | {here:,} | {here / before:.3f} |")
    else:
        lines.append(f"| working tree | {here:,} | |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
