"""Soak: `python -m benchmarks.soak [--minutes 10] [--rate 20] [--postgres]`.

A real `fhir-gateway serve` (uvicorn, 1 process, in-app worker ON) under a fixed-rate open-loop
mix of the whole WoR loop for a fixed time: referrals as the GP practice, worklist polls and Task
updates (accept → in-progress + intake-held → completed) as the welfare organisation, feedback
reads as the practice. Requests are started on a clock, not when the previous one answers, so a
slow server shows up as latency and backlog instead of silently lowering the load.

Why the worker stays on: `serve` runs it by default (single-node deployments), it shares the
server's memory and CPU, and without it the outbox only grows. So that its deliveries stay on
127.0.0.1, the practice's FHIR feedback Endpoint is repointed at a sink in this process, which
also lets the run check that every feedback Communication was pushed.

Reports per kind counts, statuses, latency percentiles and errors (5xx, unexpected 4xx,
connection errors; expected 4xx apart, with the reason), the server's RSS every 10 s (start after
the first minute, end, max, least-squares slope) and CPU, then checks the loop's invariants over
HTTP. Writes benchmarks/results/soak[-postgres].{json,md}. Numbers only, no timing asserts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.harness import (
    COACH_CLIENT,
    GP_CLIENT,
    ROOT,
    Server,
    fhir_headers,
    free_port,
    gateway_env,
    percentiles,
    postgres_database,
    prepare_database,
    search_all,
    token,
)
from tests.wor import DE_BRUG, GP_ROLE, WOR, milestone, referral_bundle

OUT = ROOT / "benchmarks" / "results"
KINDS = ("referral", "poll", "update", "feedback")
DEFAULT_MIX = "referral=30,poll=30,update=25,feedback=15"
TOKEN_REFRESH_S = 200.0  # access tokens live 300 s; minting takes a CLI start (≈1-2 s)
RSS_EVERY_S = 10.0
WARMUP_S = 60.0  # default: RSS "start" and the slope begin after the first minute
PROBE_EVERY = 40  # every 40th update sends a stale If-Match on purpose (a lost-update check)
PATIENTS = 500  # distinct patients (valid test BSNs), each referred again now and then
GP_ENDPOINT = "Endpoint/praktijk-de-geinoord-fhir"
# (status, Task already completed) -> why that refusal is right. A stale If-Match is 412 whatever
# the state (the precondition is checked before the final-state rule), so a 409 is unexpected.
PROBE_EXPECTED = {
    (412, False): "stale If-Match probe on an open Task: 412",
    (412, True): "stale If-Match probe on a completed Task: 412",
}
JSON_PATCH = {"content-type": "application/json-patch+json", "accept": "application/fhir+json"}
OK = {"referral": {200, 201}, "poll": {200}, "update": {200}, "feedback": {200}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def test_bsns(n: int) -> list[str]:
    """Valid (11-test) BSNs in the 999… test range, so referrals spread over many patients."""
    out: list[str] = []
    for k in itertools.count():
        head = f"999{k:05d}"
        s = sum(int(d) * w for d, w in zip(head, range(9, 1, -1), strict=True))
        if s % 11 < 10:
            out.append(head + str(s % 11))
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def weighted_cycle(mix: dict[str, int]) -> Iterator[str]:
    """Smooth weighted round-robin: the exact mix, evenly interleaved (no bursts of one kind)."""
    current = dict.fromkeys(mix, 0)
    total = sum(mix.values())
    while True:
        for k, w in mix.items():
            current[k] += w
        best = max(current, key=lambda k: current[k])
        current[best] -= total
        yield best


def parse_mix(text: str) -> dict[str, int]:
    mix = {k: int(v) for k, v in (part.split("=") for part in text.split(","))}
    if set(mix) - set(KINDS) or sum(mix.values()) <= 0:
        raise SystemExit(f"--mix: kinds are {', '.join(KINDS)} with integer weights")
    return {k: w for k, w in mix.items() if w > 0}


# -- the practice's feedback endpoint (the in-app worker pushes here) ------------------------------


class Sink:
    """A local stand-in for the practice's FHIR feedback endpoint: counts pushes per Communication."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushes: Counter[str] = Counter()
        self.event_ids: set[str] = set()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    rid = orjson.loads(body).get("id", "?")
                except orjson.JSONDecodeError:
                    rid = "?"
                with sink.lock:
                    sink.pushes[rid] += 1
                    sink.event_ids.add(self.headers.get("x-event-id", ""))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fhir/wor-feedback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- bookkeeping ---------------------------------------------------------------------------------


@dataclass
class KindStats:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # actual send - scheduled send
    errors: int = 0
    expected_4xx: Counter[str] = field(default_factory=Counter)  # reason -> count
    skipped: Counter[str] = field(default_factory=Counter)  # scheduled, not sent: reason -> count


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds = {k: KindStats() for k in KINDS}
        self.error_samples: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.done: list[tuple[float, float]] = []  # (seconds since start when answered, latency)

    def record(
        self,
        kind: str,
        status: int | str,
        latency: float,
        lag: float,
        *,
        expected: str | None = None,
        response: httpx.Response | None = None,
        request: str = "",
    ) -> None:
        """`expected`: the reason a non-2xx answer is right (e.g. the stale If-Match probe)."""
        with self.lock:
            s = self.kinds[kind]
            s.statuses[str(status)] += 1
            s.latencies.append(latency)
            s.lags.append(lag)
            self.done.append((time.perf_counter() - self.t0, latency))
            if expected is not None:
                s.expected_4xx[expected] += 1
                return
            if isinstance(status, int) and status in OK[kind]:
                return
            s.errors += 1
            if len(self.error_samples) < 25:
                self.error_samples.append(
                    {
                        "kind": kind,
                        "request": request,
                        "status": status,
                        "request_id": response.headers.get("x-request-id") if response is not None else None,
                        "body": response.text[:600] if response is not None else None,
                    }
                )

    def skip(self, kind: str, reason: str) -> None:
        with self.lock:
            self.kinds[kind].skipped[reason] += 1


class TaskPool:
    """The welfare organisation's view of its Tasks: found by polling, moved one step per update.

    A Task is held by at most one update at a time, so our own updates never race; the only
    expected 4xx is the deliberate stale-If-Match probe."""

    NEXT = {"requested": "accept", "accepted": "intake", "in-progress": "complete"}

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: set[str] = set()
        self.ready: dict[str, deque[dict[str, Any]]] = {s: deque() for s in self.NEXT}
        self.view: dict[str, tuple[str, str]] = {}  # task id -> (status, versionId) as last seen
        self.completed: deque[dict[str, Any]] = deque(maxlen=500)  # final: nobody touches them again

    def found(self, tasks: list[dict[str, Any]]) -> int:
        new = 0
        with self.lock:
            for t in tasks:
                if t["id"] not in self.known and t.get("status") == "requested":
                    self.known.add(t["id"])
                    self.ready["requested"].append(t)
                    self.view[t["id"]] = ("requested", t["meta"]["versionId"])
                    new += 1
        return new

    def take(self) -> dict[str, Any] | None:
        """Furthest along first, so Tasks reach `completed` during the run."""
        with self.lock:
            for status in ("in-progress", "accepted", "requested"):
                if self.ready[status]:
                    return self.ready[status].popleft()
        return None

    def done(self, before: dict[str, Any], after: dict[str, Any] | None) -> None:
        """Back into the pool after an update (`after` None: unchanged / failed)."""
        task = after or before
        with self.lock:
            self.view[task["id"]] = (task["status"], task["meta"]["versionId"])
            if task["status"] == "completed":
                self.completed.append(task)
            if task["status"] in self.ready:
                self.ready[task["status"]].append(task)

    def completed_task(self) -> dict[str, Any] | None:
        with self.lock:
            return self.completed[0] if self.completed else None

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(s for s, _ in self.view.values()))


class Tokens:
    """Access tokens per client, fetched again every TOKEN_REFRESH_S (they live 300 s).

    By default the way a real client does it: POST /auth/token with a client assertion signed
    with the client's dev-only key (examples/clients). `--token-cli` uses `harness.token` (a
    `fhir-gateway token` process per client): on a busy 2-core box each start costs ≈ 5 s of CPU,
    which showed up as multi-second latency spikes of every kind at each refresh."""

    def __init__(self, env: dict[str, str], base: str, clients: list[str], via_cli: bool = False) -> None:
        self.env = env
        self.base = base
        self.via_cli = via_cli
        self.clients = clients
        self.lock = threading.Lock()
        self.tokens = {c: self.mint(c) for c in clients}
        self.refreshes = 0
        self.every = TOKEN_REFRESH_S
        self.t0 = time.perf_counter()
        self.at: list[tuple[float, float]] = []  # (seconds since start, seconds it took)
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            t = time.perf_counter()
            for c in self.clients:
                try:
                    fresh = self.mint(c)
                except Exception as exc:  # keep the old one (still valid for ≥100 s); report it
                    self.failures.append(f"{c}: {exc}")
                    continue
                with self.lock:
                    self.tokens[c] = fresh
            self.refreshes += 1
            self.at.append((round(t - self.t0, 1), round(time.perf_counter() - t, 1)))

    def mint(self, client: str) -> str:
        if self.via_cli:
            return token(self.env, client)
        from fhir_gateway.security.authn import make_client_assertion

        key = orjson.loads((ROOT / "examples" / "clients" / f"{client}.dev-only.private.jwk").read_bytes())
        url = f"{self.base}/auth/token"
        r = httpx.post(
            url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": make_client_assertion(client, key, url),
                "scope": "system/*.cruds",
            },
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def headers(self, client: str, base: dict[str, str] | None = None) -> dict[str, str]:
        with self.lock:
            tok = self.tokens[client]
        return {**fhir_headers(), **(base or {}), "authorization": f"Bearer {tok}"}


class Sampler:
    """VmRSS and CPU time of the server process (and any children) every RSS_EVERY_S."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ticks = 100.0

    def pids(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                todo.extend(int(c) for c in task.read_text().split())
        return out

    def sample(self) -> dict[str, float]:
        rss_kb = cpu = 0.0
        for p in self.pids():
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss_kb += float(line.split()[1])
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                cpu += (float(fields[11]) + float(fields[12])) / self.ticks
            except (FileNotFoundError, ProcessLookupError):
                pass
        s = {"t_s": round(time.monotonic() - self.t0, 1), "rss_mb": round(rss_kb / 1024, 1), "cpu_s": cpu}
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self.stop.wait(RSS_EVERY_S):
            self.sample()

    def start(self) -> Sampler:
        self.t0 = time.monotonic()
        self.sample()
        self.thread.start()
        return self


def slope_mb_per_min(samples: list[dict[str, float]], warmup_s: float) -> float | None:
    """Least squares over the samples after warm-up (caches and the allocator settle first)."""
    pts = [(s["t_s"] / 60, s["rss_mb"]) for s in samples if s["t_s"] >= warmup_s]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / den, 3) if den else None


# -- the load --------------------------------------------------------------------------------------


class Soak:
    def __init__(self, base: str, env: dict[str, str], args: argparse.Namespace) -> None:
        self.base = base
        self.args = args
        self.rec = Recorder()
        self.pool = TaskPool()
        self.tokens = Tokens(env, base, [GP_CLIENT, COACH_CLIENT], via_cli=args.token_cli)
        self.tokens.every = args.token_refresh_seconds
        self.http = httpx.Client(
            base_url=f"{base}/fhir",
            timeout=30,
            limits=httpx.Limits(
                max_connections=args.max_inflight, max_keepalive_connections=args.max_inflight
            ),
        )
        self.bsns = test_bsns(PATIENTS)
        self.referrals: dict[str, str | None] = {}  # referral id -> ServiceRequest id (acknowledged)
        self.feedback_seen: set[str] = set()
        self.feedback_cursor = datetime.now(UTC) - timedelta(seconds=5)
        self.counter = itertools.count()
        self.updates = itertools.count(1)
        self.lock = threading.Lock()
        self.inflight = 0

    def _send(
        self, kind: str, lag: float, method: str, url: str, **kw: Any
    ) -> tuple[httpx.Response | None, float]:
        t = time.perf_counter()
        try:
            r = self.http.request(method, url, **kw)
            return r, time.perf_counter() - t
        except httpx.HTTPError as exc:
            dt = time.perf_counter() - t
            self.rec.record(kind, type(exc).__name__, dt, lag, request=f"{method} {url}")
            return None, dt

    def referral(self, lag: float) -> None:
        i = next(self.counter)
        rid = f"SOAK-{i}-{time.time_ns()}"
        body = orjson.dumps(referral_bundle(rid, bsn=self.bsns[i % PATIENTS]))
        r, dt = self._send("referral", lag, "POST", "", content=body, headers=self.tokens.headers(GP_CLIENT))
        if r is None:
            return
        self.rec.record("referral", r.status_code, dt, lag, response=r, request="POST /fhir (transaction)")
        if r.status_code in OK["referral"]:
            sr = next(
                (
                    e["resource"]["id"]
                    for e in r.json().get("entry", [])
                    if (e.get("resource") or {}).get("resourceType") == "ServiceRequest"
                ),
                None,
            )
            with self.lock:
                self.referrals[rid] = sr

    def poll(self, lag: float) -> None:
        params = {"owner": DE_BRUG, "status": "requested", "_count": "50"}
        r, dt = self._send(
            "poll", lag, "GET", "/Task", params=params, headers=self.tokens.headers(COACH_CLIENT)
        )
        if r is None:
            return
        self.rec.record("poll", r.status_code, dt, lag, response=r, request="GET /fhir/Task?owner&status")
        if r.status_code == 200:
            self.pool.found([e["resource"] for e in r.json().get("entry", []) if "resource" in e])

    def feedback(self, lag: float) -> None:
        with self.lock:
            since = self.feedback_cursor
            self.feedback_cursor = datetime.now(UTC) - timedelta(seconds=2)  # overlap: commit order
        params = {"recipient": GP_ROLE, "_lastUpdated": "gt" + since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        r, dt = self._send(
            "feedback", lag, "GET", "/Communication", params=params, headers=self.tokens.headers(GP_CLIENT)
        )
        if r is None:
            return
        self.rec.record(
            "feedback",
            r.status_code,
            dt,
            lag,
            response=r,
            request="GET /fhir/Communication?recipient&_lastUpdated",
        )
        if r.status_code == 200:
            ids = {e["resource"]["id"] for e in r.json().get("entry", []) if "resource" in e}
            with self.lock:
                self.feedback_seen |= ids

    def update(self, lag: float) -> None:
        n = next(self.updates)
        if n % PROBE_EVERY == 0 and self.stale_probe(lag, final=n % (2 * PROBE_EVERY) == 0):
            return
        task = self.pool.take()
        if task is None:
            self.rec.skip("update", "no Task ready yet (nothing polled)")
            return
        step = TaskPool.NEXT[task["status"]]
        headers = {"if-match": f'W/"{task["meta"]["versionId"]}"'}
        url = f"/Task/{task['id']}"
        if step == "intake":  # a full PUT, as in tests/e2e/test_loop_http.py
            body = {**task, "status": "in-progress", "businessStatus": milestone("intake-held")}
            kw: dict[str, Any] = {
                "content": orjson.dumps(body),
                "headers": self.tokens.headers(COACH_CLIENT, headers),
            }
            method = "PUT"
        else:  # JSON Patch, as in examples/scenarios/02-accept and 04c-complete
            patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
            if step == "complete":
                patch = [
                    {"op": "replace", "path": "/status", "value": "completed"},
                    {"op": "add", "path": "/businessStatus", "value": milestone("closed-goal-reached")},
                    {
                        "op": "add",
                        "path": "/output",
                        "value": [
                            {
                                "type": {
                                    "coding": [
                                        {
                                            "system": f"{WOR}/CodeSystem/wor-activity-categories",
                                            "code": "volunteering",
                                        }
                                    ]
                                },
                                "valueString": "Vrijwilliger bij de voedselbank",
                            }
                        ],
                    },
                ]
            kw = {
                "content": orjson.dumps(patch),
                "headers": self.tokens.headers(COACH_CLIENT, {**JSON_PATCH, **headers}),
            }
            method = "PATCH"
        r, dt = self._send("update", lag, method, url, **kw)
        if r is None:
            self.pool.done(task, None)
            return
        self.rec.record(
            "update", r.status_code, dt, lag, response=r, request=f"{method} /fhir/Task/{{id}} ({step})"
        )
        after = r.json() if r.status_code == 200 else None
        self.pool.done(task, after if after and after.get("resourceType") == "Task" else None)

    def stale_probe(self, lag: float, final: bool) -> bool:
        """An update with an If-Match older than the Task's version: must be refused, never applied.

        The Task is one we hold (open, not in flight, so its state is known exactly) or one we
        completed (final, nobody changes it again); the invariants later prove nothing was applied."""
        task = self.pool.completed_task() if final else self.pool.take()
        if task is None:
            return False
        stale = str(int(task["meta"]["versionId"]) - 1)
        patch = [{"op": "add", "path": "/note", "value": [{"text": "stale write"}]}]
        headers = self.tokens.headers(COACH_CLIENT, {**JSON_PATCH, "if-match": f'W/"{stale}"'})
        try:
            r, dt = self._send(
                "update", lag, "PATCH", f"/Task/{task['id']}", content=orjson.dumps(patch), headers=headers
            )
        finally:
            if not final:
                self.pool.done(task, None)
        if r is not None:
            self.rec.record(
                "update",
                r.status_code,
                dt,
                lag,
                expected=PROBE_EXPECTED.get((r.status_code, task["status"] == "completed")),
                response=r,
                request=f"PATCH /fhir/Task/{{id}} ({task['status']}) with a stale If-Match (probe)",
            )
        return True

    def run(self, seconds: float, rate: float, mix: dict[str, int], sampler: Sampler) -> dict[str, Any]:
        """The open-loop schedule: request n starts at t0 + n/rate, whatever the others do."""
        total = int(seconds * rate)
        kinds = weighted_cycle(mix)
        handlers = {
            "referral": self.referral,
            "poll": self.poll,
            "update": self.update,
            "feedback": self.feedback,
        }
        pool = ThreadPoolExecutor(self.args.max_inflight, thread_name_prefix="soak")
        t0 = self.rec.t0 = self.tokens.t0 = time.perf_counter()
        self.tokens.thread.start()
        next_log = 30.0

        def one(kind: str, due: float) -> None:
            try:
                handlers[kind](time.perf_counter() - due)
            except Exception as exc:  # a client-side surprise (unparseable body …) is an error too
                self.rec.record(kind, type(exc).__name__, 0.0, 0.0, request=f"{kind}: {exc!r}"[:300])
            finally:
                with self.lock:
                    self.inflight -= 1

        for n in range(total):
            kind = next(kinds)
            due = t0 + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with self.lock:
                full = self.inflight >= self.args.max_inflight
                if not full:
                    self.inflight += 1
            if full:  # bounded: never queue without limit; the server is not keeping up
                self.rec.skip(kind, f"client backlog ({self.args.max_inflight} in flight)")
                continue
            pool.submit(one, kind, due)
            elapsed = time.perf_counter() - t0
            if elapsed >= next_log:
                next_log += 30.0
                s = sampler.samples[-1]
                log(
                    f"{elapsed:5.0f} s: {n + 1}/{total} sent, in flight {self.inflight}, "
                    f"rss {s['rss_mb']} MB, tasks {self.pool.counts()}"
                )
        pool.shutdown(wait=True)
        wall = time.perf_counter() - t0
        self.tokens.stop.set()
        return {"scheduled": total, "wall_s": round(wall, 1), "achieved_rps": round(total / wall, 2)}


# -- invariants, checked from the server's side over HTTP ------------------------------------------


def all_of(client: httpx.Client, rtype: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    return search_all(client, f"/{rtype}", headers)


def kind_of(comm: dict[str, Any]) -> str:
    return next((c.get("code", "?") for cat in comm.get("category", []) for c in cat.get("coding", [])), "?")


def verify(soak: Soak, env: dict[str, str], sink: Sink, drain_s: float = 90) -> dict[str, Any]:
    """Every acknowledged referral has one Task; the server's Task states are the client's view;
    every completed Task has accepted / intake-held / completed feedback; every feedback
    Communication to the practice reached its endpoint (the worker drained the outbox)."""
    admin = fhir_headers(token(env, "gateway-admin"))
    client = soak.http
    tasks = all_of(client, "Task", admin)
    by_focus = Counter(t.get("focus", {}).get("reference") for t in tasks)
    acked = dict(soak.referrals)
    no_sr = [rid for rid, sr in acked.items() if sr is None]
    without_task = [rid for rid, sr in acked.items() if sr and by_focus[f"ServiceRequest/{sr}"] != 1]
    srs = all_of(client, "ServiceRequest", admin)
    sr_ids = {sr["id"] for sr in srs}
    unacked_srs = len(sr_ids - {sr for sr in acked.values() if sr})

    status = {t["id"]: (t["status"], t["meta"]["versionId"]) for t in tasks}
    view = dict(soak.pool.view)
    diverged = {tid: (seen, status.get(tid)) for tid, seen in view.items() if status.get(tid) != seen}

    deadline = time.monotonic() + drain_s
    while True:
        comms = all_of(client, "Communication", admin)
        to_practice = [c for c in comms if any(r.get("reference") == GP_ROLE for r in c.get("recipient", []))]
        with sink.lock:
            undelivered = [c["id"] for c in to_practice if sink.pushes[c["id"]] == 0]
        if not undelivered or time.monotonic() > deadline:
            break
        time.sleep(3)
    kinds_per_task: dict[str, set[str]] = {}
    for c in comms:
        for ref in c.get("partOf", []) + c.get("about", []):
            tid = ref.get("reference", "").rpartition("Task/")[2]
            if tid:
                kinds_per_task.setdefault(tid, set()).add(kind_of(c))
    completed = [tid for tid, (s, _) in status.items() if s == "completed"]
    missing_feedback = {
        tid: sorted(kinds_per_task.get(tid, set()))
        for tid in completed
        if not {"accepted", "intake-held", "completed"} <= kinds_per_task.get(tid, set())
    }
    with sink.lock:
        pushes = sum(sink.pushes.values())
        duplicate_pushes = sum(n - 1 for n in sink.pushes.values() if n > 1)
    checks = {
        "acknowledged_referrals": len(acked),
        "acknowledged_without_sr_in_answer": len(no_sr),
        "acknowledged_without_exactly_one_task": len(without_task),
        "service_requests_on_server": len(sr_ids),
        "service_requests_not_acknowledged": unacked_srs,
        "tasks_on_server": len(tasks),
        "task_status_on_server": dict(Counter(s for s, _ in status.values())),
        "tasks_where_server_differs_from_client_view": len(diverged),
        "completed_tasks": len(completed),
        "completed_without_full_feedback": len(missing_feedback),
        "communications_on_server": len(comms),
        "communications_to_practice": len(to_practice),
        "feedback_seen_by_practice_polling": len(soak.feedback_seen & {c["id"] for c in to_practice}),
        "pushed_to_practice_endpoint": pushes,
        "duplicate_pushes": duplicate_pushes,
        "communications_not_pushed": len(undelivered),
    }
    ok = not (no_sr or without_task or diverged or missing_feedback or undelivered)
    return {
        "ok": ok,
        **checks,
        "examples": {
            "without_task": without_task[:5],
            "diverged": dict(list(diverged.items())[:5]),
            "missing_feedback": dict(list(missing_feedback.items())[:5]),
            "not_pushed": undelivered[:5],
        },
    }


# -- the run ---------------------------------------------------------------------------------------


@contextmanager
def database(postgres: bool) -> Iterator[str]:
    if postgres:
        with postgres_database("soak") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            yield f"sqlite:///{tmp}/gateway.db"


def repoint_endpoint(base: str, env: dict[str, str], url: str) -> None:
    """Feedback pushes to 127.0.0.1 (the sink) instead of the example practice's public address."""
    admin = fhir_headers(token(env, "gateway-admin"))
    r = httpx.get(f"{base}/fhir/{GP_ENDPOINT}", headers=admin)
    r.raise_for_status()
    ep = {**r.json(), "address": url}
    ep.pop("meta", None)
    r = httpx.put(f"{base}/fhir/{GP_ENDPOINT}", content=orjson.dumps(ep), headers=admin)
    if r.status_code not in (200, 201):
        raise SystemExit(f"could not repoint {GP_ENDPOINT}: {r.status_code} {r.text[:300]}")


def timeline(done: list[tuple[float, float]], width: float = RSS_EVERY_S) -> list[dict[str, float]]:
    """Per 10-s window (by answer time): answers, p99 and max latency — where the tail comes from."""
    buckets: dict[int, list[float]] = {}
    for t, lat in done:
        buckets.setdefault(int(t // width), []).append(lat)
    return [
        {
            "from_s": k * width,
            "answers": len(v),
            "p99_ms": percentiles(v)["p99_ms"],
            "max_ms": round(max(v) * 1000, 1),
        }
        for k, v in sorted(buckets.items())
    ]


def summarise(
    soak: Soak, sampler: Sampler, run: dict[str, Any], idle_rss: float, warmup_s: float
) -> dict[str, Any]:
    kinds = {}
    for k, s in soak.rec.kinds.items():
        kinds[k] = {
            "requests": len(s.latencies),
            "statuses": dict(sorted(s.statuses.items())),
            **percentiles(s.latencies),
            "lag_p99_ms": percentiles(s.lags)["p99_ms"],
            "errors": s.errors,
            "expected_4xx": dict(s.expected_4xx),
            "skipped": dict(s.skipped),
        }
    samples = sampler.samples
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples
    cpu = (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / max(samples[-1]["t_s"] - samples[0]["t_s"], 1e-9)
    all_lat = [x for s in soak.rec.kinds.values() for x in s.latencies]
    all_lag = [x for s in soak.rec.kinds.values() for x in s.lags]
    return {
        **run,
        "kinds": kinds,
        "total": {
            "requests": len(all_lat),
            **percentiles(all_lat),
            "lag_p99_ms": percentiles(all_lag)["p99_ms"],
            "lag_max_ms": round(max(all_lag, default=0) * 1000, 1),
            "errors": sum(s.errors for s in soak.rec.kinds.values()),
            "5xx": sum(
                n for s in soak.rec.kinds.values() for c, n in s.statuses.items() if c.startswith("5")
            ),
            "connection_errors": sum(
                n for s in soak.rec.kinds.values() for c, n in s.statuses.items() if not c.isdigit()
            ),
            "expected_4xx": sum(sum(s.expected_4xx.values()) for s in soak.rec.kinds.values()),
            "skipped": sum(sum(s.skipped.values()) for s in soak.rec.kinds.values()),
        },
        "rss": {
            "idle_before_load_mb": idle_rss,
            "start_mb": after[0]["rss_mb"],
            "start_at_s": after[0]["t_s"],
            "end_mb": samples[-1]["rss_mb"],
            "max_mb": max(s["rss_mb"] for s in samples),
            "slope_mb_per_min": slope_mb_per_min(samples, warmup_s),
            "samples": [{"t_s": s["t_s"], "rss_mb": s["rss_mb"]} for s in samples],
        },
        "server_cpu_cores": round(cpu, 2),
        "token_refreshes": soak.tokens.refreshes,
        "token_refresh_at_s": soak.tokens.at,
        "token_source": "harness.token (CLI)" if soak.tokens.via_cli else "POST /auth/token",
        "timeline": timeline(soak.rec.done),
        "token_failures": soak.tokens.failures,
        "error_samples": soak.rec.error_samples,
    }


def markdown(res: dict[str, Any]) -> str:
    t, rss, v = res["total"], res["rss"], res["verify"]
    lines = [
        f"# Soak ({res['backend']}, {res['minutes']} min at {res['rate']} req/s)",
        "",
        f"{res['started']} · {res['machine']} · `fhir-gateway serve` (uvicorn, 1 process, in-app worker on) · "
        f"open loop, mix {res['mix']} · achieved {res['achieved_rps']} req/s over {res['wall_s']} s · "
        f"server CPU {res['server_cpu_cores']} cores (mean)",
        "",
        "| kind | requests | statuses | p50 ms | p95 ms | p99 ms | send lag p99 ms | errors | expected 4xx | skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in res["kinds"].items():
        st = ", ".join(f"{code}: {n}" for code, n in r["statuses"].items())
        exp = ", ".join(f"{n} ({why})" for why, n in r["expected_4xx"].items()) or "0"
        skip = ", ".join(f"{n} ({why})" for why, n in r["skipped"].items()) or "0"
        lines.append(
            f"| {k} | {r['requests']} | {st} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
            f"{r['lag_p99_ms']} | {r['errors']} | {exp} | {skip} |"
        )
    lines.append(
        f"| **all** | {t['requests']} | | {t['p50_ms']} | {t['p95_ms']} | {t['p99_ms']} | {t['lag_p99_ms']} "
        f"(max {t['lag_max_ms']}) | **{t['errors']}** | {t['expected_4xx']} | {t['skipped']} |"
    )
    lines += [
        "",
        f"Server RSS: idle {rss['idle_before_load_mb']} MB · start (t={rss['start_at_s']} s) {rss['start_mb']} MB · "
        f"end {rss['end_mb']} MB · max {rss['max_mb']} MB · slope from t={rss['start_at_s']} s "
        f"**{rss['slope_mb_per_min']} MB/min** ({len(rss['samples'])} samples, every {RSS_EVERY_S:.0f} s). "
        f"5xx: {t['5xx']}, connection errors: {t['connection_errors']}. "
        f"Tokens ({res['token_source']}) re-minted {res['token_refreshes']} times (at s, taking s: {res['token_refresh_at_s']}).",
        "",
        "Slowest 10-s windows (answer time): "
        + ", ".join(
            f"{w['from_s']:.0f} s: p99 {w['p99_ms']} ms / max {w['max_ms']} ms ({w['answers']} answers)"
            for w in sorted(res["timeline"], key=lambda w: -w["max_ms"])[:5]
        ),
        "",
        f"Invariants ({'all hold' if v['ok'] else '**VIOLATED**'}):",
        "",
        "| check | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {val} |" for k, val in v.items() if k not in ("ok", "examples")]
    if res["error_samples"]:
        lines += ["", "Error samples:", "", "```"]
        lines += [json.dumps(e, ensure_ascii=False) for e in res["error_samples"][:10]]
        lines.append("```")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=20, help="requests/s, all kinds together")
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"kind=weight,… (default {DEFAULT_MIX})")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--max-inflight", type=int, default=64, help="client cap; beyond it a tick is skipped")
    ap.add_argument("--out", default=None, help="results file stem (default soak / soak-postgres)")
    ap.add_argument("--token-refresh-seconds", type=float, default=TOKEN_REFRESH_S)
    ap.add_argument("--token-cli", action="store_true", help="mint tokens with harness.token (CLI)")
    ap.add_argument("--warmup-seconds", type=float, default=WARMUP_S, help="RSS start/slope begin here")
    return ap


def soak_run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak: database, sink, server, load, RSS, invariants; writes the results files."""
    mix = parse_mix(args.mix)
    backend = "postgres" if args.postgres else "sqlite"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with ExitStack() as stack:
        url = stack.enter_context(database(args.postgres))
        env = gateway_env(url)
        prepare_database(env)
        sink = stack.enter_context(Sink())
        server = Server(env, [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", "{port}"])
        stack.enter_context(server)
        assert server.proc is not None
        repoint_endpoint(server.base, env, sink.url)
        soak = Soak(server.base, env, args)
        stack.callback(soak.http.close)
        sampler = Sampler(server.proc.pid)
        idle = sampler.sample()["rss_mb"]
        sampler.samples.clear()
        log(
            f"{backend}: {args.minutes} min at {args.rate} req/s, mix {mix}, server pid {server.proc.pid}, idle rss {idle} MB"
        )
        sampler.start()
        run = soak.run(args.minutes * 60, args.rate, mix, sampler)
        sampler.stop.set()
        sampler.sample()
        log(f"load done: {run}; verifying")
        res = {
            "started": started,
            "machine": f"{platform.node()} · {__import__('os').cpu_count()} cores · Python {platform.python_version()}",
            "backend": backend,
            "minutes": args.minutes,
            "rate": args.rate,
            "mix": args.mix,
            **summarise(soak, sampler, run, idle, args.warmup_seconds),
        }
        res["verify"] = verify(soak, env, sink)
        if server.proc.poll() is not None:
            res["verify"]["ok"] = False
            res["verify"]["server_exited"] = server.proc.returncode
    OUT.mkdir(parents=True, exist_ok=True)
    stem = args.out or ("soak" if backend == "sqlite" else "soak-postgres")
    (OUT / f"{stem}.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    res["markdown"] = markdown(res)
    (OUT / f"{stem}.md").write_text(res["markdown"])
    return res


def passed(res: dict[str, Any]) -> bool:
    """No errors, invariants hold, and the client never had to drop a tick (server kept up)."""
    backlog = sum(n for r in res["kinds"].values() for why, n in r["skipped"].items() if "backlog" in why)
    return bool(res["verify"]["ok"] and res["total"]["errors"] == 0 and not backlog)


def main(argv: list[str] | None = None) -> int:
    res = soak_run(parser().parse_args(argv))
    print(res["markdown"])
    return 0 if passed(res) else 1


if __name__ == "__main__":
    sys.exit(main())
