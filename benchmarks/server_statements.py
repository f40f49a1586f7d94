"""Where the PostgreSQL server's CPU of a referral goes, statement by statement.

    python -m benchmarks.server_statements [--referrals 100] [--log /var/log/postgresql/...]

The server runs on the gateway's cores, and its CPU per referral is of the same order as the
gateway's (`knockout --postgres` reports both). A fresh database gets `log_statement_stats`
(the server writes getrusage per protocol message — PARSE, BIND, EXECUTE, QUERY — to its log),
`referrals` referrals run in-process as `profile_referral` runs them, and the user + system
seconds are summed per statement and message from the part of the server log they wrote.
Needs read access to the server log (the Debian cluster's stderr log by default).
Writes benchmarks/results/server-statements.md.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from benchmarks.harness import ROOT

OUT = ROOT / "benchmarks" / "results" / "server-statements.md"
DEFAULT_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
_ENTRY = re.compile(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_KIND = re.compile(r"LOG:  (?:(\w+) MESSAGE|(QUERY)) STATISTICS")
_USAGE = re.compile(r"!\s+([\d.]+) s user, ([\d.]+) s system")


def cpu_by_statement(log_text: str, database: str) -> dict[tuple[str, str], list[float]]:
    """(message kind, statement) → [CPU seconds, messages] from the log entries of `database`."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    kind, cpu = None, 0.0
    for entry in _ENTRY.split(log_text):
        if f"@{database} " not in entry:
            continue
        if found := _KIND.search(entry):
            kind = found.group(1) or found.group(2)
        if kind and (usage := _USAGE.search(entry)):  # in the same entry or the DETAIL after it
            cpu = float(usage.group(1)) + float(usage.group(2))
        elif kind and "STATEMENT:" in entry:
            statement = " ".join(entry.split("STATEMENT:", 1)[1].split())[:100]
            totals[(kind, statement)][0] += cpu
            totals[(kind, statement)][1] += 1
            kind = None
    return totals


def measure(referrals: int, log: Path) -> str:
    import sqlalchemy as sa

    from benchmarks.harness import PG_ADMIN_URL, postgres_database
    from benchmarks.profile_referral import referral_runner

    with postgres_database("bench_statements") as url:
        app, one = referral_runner(url)
        for i in range(20):  # warm: compiled and prepared statements, the directory
            one(i)
        name = url.rsplit("/", 1)[1]
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as c:
            c.exec_driver_sql(f'ALTER DATABASE "{name}" SET log_statement_stats = on')
        admin.dispose()
        app.state.ctx.database.engine.dispose()  # new connections take the setting
        one(20)  # and prepare their statements again, outside the measured loop
        start = log.stat().st_size
        for i in range(referrals):
            one(21 + i)
        with log.open() as f:
            f.seek(start)
            text = f.read()
        app.state.ctx.close()
    return report(cpu_by_statement(text, name), referrals)


def report(totals: dict[tuple[str, str], list[float]], referrals: int) -> str:
    whole = sum(cpu for cpu, _ in totals.values())
    lines = [
        f"# PostgreSQL server CPU per referral, by statement ({referrals} referrals)",
        "",
        f"Sum over the logged messages: **{whole / referrals * 1000:.2f} ms per referral** "
        "(the WAL writer, checkpointer and autovacuum are not in it).",
        "",
        "| ms / referral | messages / referral | message | statement |",
        "|---|---|---|---|",
    ]
    for (kind, statement), (cpu, n) in sorted(totals.items(), key=lambda item: -item[1][0])[:25]:
        text = statement.replace("|", "\\|")
        lines.append(f"| {cpu / referrals * 1000:.3f} | {n / referrals:.2f} | {kind} | `{text}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--referrals", type=int, default=100)
    p.add_argument("--log", type=Path, default=DEFAULT_LOG, help="the server's log file")
    args = p.parse_args()
    text = measure(args.referrals, args.log)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
