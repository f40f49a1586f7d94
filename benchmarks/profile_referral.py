"""Profile the referral path in-process (`app.state.router.handle`, no HTTP), cProfile.

    python -m benchmarks.profile_referral [--referrals 100]

Writes benchmarks/results/profile.md: ms per referral and the top functions by own time and by
cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
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


def profile(referrals: int = 100) -> dict[str, Any]:
    import orjson

    from fhir_gateway.app import create_app
    from fhir_gateway.loading import load_files
    from fhir_gateway.rest.request import FhirRequest
    from fhir_gateway.security.principal import Principal
    from fhir_gateway.security.tokens import generate_gateway_key
    from fhir_gateway.settings import Settings
    from tests.wor import referral_bundle

    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/prof.db"
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

    for i in range(10):
        one(i)
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(referrals):
        one(i)
    per_ms = (time.perf_counter() - t) / referrals * 1000
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
        "# Referral path profile (in-process, `router.handle`, SQLite, cProfile)",
        "",
        f"{referrals} referral transaction Bundles (Patient ifNoneExist + Consent + ServiceRequest → "
        f"validate, route, map, Task + CarePlan + Provenance + AuditEvent): **{per_ms:.2f} ms per referral "
        f"without profiler** (CPU {cpu_ms:.2f} ms), {total / referrals * 1000:.2f} ms with.",
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
    (OUT / "profile.md").write_text("\n".join(lines))
    return {
        "ms_per_referral": round(per_ms, 2),
        "cpu_ms_per_referral": round(cpu_ms, 2),
        "top_own": own,
        "top_cumulative": cum,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--referrals", type=int, default=100)
    res = profile(p.parse_args().referrals)
    print((OUT / "profile.md").read_text())
    print(res["ms_per_referral"], f"(cpu {res['cpu_ms_per_referral']})")


if __name__ == "__main__":
    main()
