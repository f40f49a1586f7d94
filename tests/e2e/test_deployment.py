"""The deployment of README "Deployment for scale", as real processes on one PostgreSQL: two
`fhir-gateway serve --no-worker` replicas, one `fhir-gateway worker` and one `fhir-gateway mllp`.

Referrals come in through both replicas (FHIR transaction Bundles) and over MLLP (REF^I12); a
welfare coach moves their Tasks to completed, which makes feedback for the practices: De Geinoord
gets it pushed to its FHIR endpoint, Batau-Noord as RRI^I12 over MLLP (both endpoints are servers
in this test). Replica A is killed with SIGKILL while referrals and Task updates are in flight on
it; what got no answer is resent through replica B, and traffic goes on through B and MLLP. Then:

* every acknowledged referral (200/201, MLLP AA) exists exactly once, with one Task, also when
  it was sent twice (through both replicas at once, resent after the kill, resent over MLLP);
* a referral that got no answer was there completely (with its Task) or not at all (not even its
  Patient) before it was resent; a refused one is not there;
* every feedback Communication is delivered exactly once to its practice: none lost, none twice;
* the processes that lived logged JSON lines only, no error among them.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fhir_gateway.delivery import outbox
from fhir_gateway.store.database import Database
from tests.conftest import TEST_TOKEN_KEY
from tests.delivery.receivers import MllpReceiver, Receiver
from tests.e2e.conftest import bearer
from tests.e2e.deployment import (
    ROOT,
    Processes,
    clients_with_mllp_address,
    directory_with_endpoints,
    free_port,
    mllp_send,
    private_postgres,
    rri_fields,
)
from tests.wor import DE_BRUG, FHIR_JSON, fresh_bsn, milestone, referral_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

GP = "praktijk-de-geinoord-his"  # sends FHIR; its feedback endpoint speaks FHIR
COACH = "welzijn-de-brug-cms"  # De Brug gets every referral of this test (Nieuwegein postcodes)
V2_REFERRAL = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_text().replace("\n", "\r")
TASK_STEPS = {  # the coach's path; each step makes one feedback Communication for the practice
    "accepted": {"status": "accepted"},
    "in-progress": {"status": "in-progress", "businessStatus": milestone("intake-held")},
    "completed": {"status": "completed", "businessStatus": milestone("closed-other")},
}
TASK_ORDER = ["requested", *TASK_STEPS]
TIMEOUT = httpx.Timeout(30, connect=5)  # no request can hang the test


@dataclass
class Referral:
    number: str  # the referral number (ServiceRequest.identifier, RF1-6)
    channel: str  # "A", "B" (replicas) or "mllp"; a resend is a Referral of its own
    bsn: str
    body: dict[str, Any] | None = None  # the FHIR transaction Bundle, the same when resent
    message: str = ""  # or the REF^I12
    control_id: str = ""  # its MSH-10
    answer: str = "none"  # "ack", "refused <code>", "none <error>"
    sr_id: str = ""  # from the transaction-response

    @property
    def acknowledged(self) -> bool:
        return self.answer == "ack"


class Ledger:
    """Every referral the test sent, with the answer it got (threads append)."""

    def __init__(self) -> None:
        self.items: list[Referral] = []
        self.lock = threading.Lock()

    def new(self, channel: str, bsn: str | None = None, again: Referral | None = None) -> Referral:
        """A new referral, or (`again`) the same one sent once more."""
        if again is not None:
            ref = dataclasses.replace(again, channel=channel, answer="none", sr_id="")
        else:
            ref = Referral(f"DEP-{channel}-{uuid.uuid4().hex[:10]}", channel, bsn or fresh_bsn())
            ref.body = referral_bundle(ref.number, bsn=ref.bsn)
        with self.lock:
            self.items.append(ref)
        return ref


def post_referral(
    client: httpx.Client, ledger: Ledger, channel: str, bsn: str | None = None, again: Referral | None = None
) -> Referral:
    """A referral Bundle through one replica; raises httpx.HTTPError when no answer came."""
    ref = ledger.new(channel, bsn, again)
    try:
        resp = client.post("", json=ref.body, headers=FHIR_JSON)
    except httpx.HTTPError as exc:
        ref.answer = f"none {type(exc).__name__}"
        raise
    if resp.status_code in (200, 201):
        ref.answer = "ack"
        ref.sr_id = resp.json()["entry"][2]["resource"]["id"]
    else:
        ref.answer = f"refused {resp.status_code}"
    return ref


def send_v2_referral(port: int, ledger: Ledger, again: Referral | None = None) -> Referral:
    """A REF^I12 over its own MLLP connection (`again`: the same message once more)."""
    ref = ledger.new("mllp" if again is None else "mllp-resend", again=again)
    if again is None:
        ref.control_id = f"DEP{uuid.uuid4().hex[:12]}"
        ref.message = (
            V2_REFERRAL.replace("BATAU-000123", ref.control_id)
            .replace("REF-2026-0001", ref.number)
            .replace("999911120", ref.bsn)
        )
    try:
        code = mllp_send(port, ref.message)
    except OSError as exc:
        ref.answer = f"none {type(exc).__name__}"
        return ref
    ref.answer = "ack" if code == "AA" else f"refused {code}"
    return ref


def the_task(client: httpx.Client, sr_id: str) -> dict[str, Any]:
    found = client.get("/Task", params={"focus": f"ServiceRequest/{sr_id}"})
    assert found.status_code == 200, found.text
    entries = found.json().get("entry", [])
    assert len(entries) == 1, f"ServiceRequest/{sr_id} has {len(entries)} Tasks"
    return entries[0]["resource"]


def move_task(client: httpx.Client, task: dict[str, Any], step: str) -> httpx.Response:
    return client.put(
        f"/Task/{task['id']}",
        json={**task, **TASK_STEPS[step]},
        headers={**FHIR_JSON, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )


def complete(client: httpx.Client, sr_id: str) -> None:
    """Take the referral's Task from wherever it is (an update on the killed replica may or may
    not have committed) to completed."""
    task = the_task(client, sr_id)
    for step in TASK_ORDER[TASK_ORDER.index(task["status"]) + 1 :]:
        resp = move_task(client, task, step)
        assert resp.status_code == 200, resp.text
        task = resp.json()


@dataclass
class Gateway:
    """The running deployment, as the test's parties see it."""

    procs: Processes
    url: str
    a: str  # replica A's base URL (killed)
    b: str  # replica B's base URL
    mllp_port: int
    fhir_feedback: Receiver  # De Geinoord's FHIR endpoint
    v2_feedback: MllpReceiver  # Batau-Noord's integration engine
    metrics: dict[str, int]  # --metrics-port of the worker and the MLLP listener

    def counted(self, process: str, name: str, **labels: str) -> float:
        """A counter's value on the /metrics of a process without the HTTP API."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics[process]}/metrics", timeout=TIMEOUT).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def client(self, base: str, client_id: str) -> httpx.Client:
        return httpx.Client(base_url=f"{base}/fhir", timeout=TIMEOUT, headers=bearer(base, client_id))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Gateway]:
    fhir_feedback = Receiver().start()
    v2_feedback = MllpReceiver("AA").start()
    try:
        with private_postgres() as url:
            procs = Processes(
                {
                    "GATEWAY_DATABASE_URL": url,
                    "GATEWAY_TOKEN_KEY": TEST_TOKEN_KEY,  # the same signing key in every process
                    "GATEWAY_LOG_JSON": "true",
                    "GATEWAY_OUTBOX_BACKOFF_SECONDS": "1",
                },
                tmp_path / "logs",
            )
            try:
                yield start(procs, url, tmp_path, fhir_feedback, v2_feedback)
            finally:
                procs.close()
    finally:
        fhir_feedback.stop()
        v2_feedback.stop()


def start(
    procs: Processes, url: str, tmp_path: Path, fhir_feedback: Receiver, v2_feedback: MllpReceiver
) -> Gateway:
    """What an operator does: migrate once, load the directory and the registrations, start
    the processes (they need no data to start, so all at once); then wait until each answers."""
    procs.run("db", "upgrade")
    directory = directory_with_endpoints(
        tmp_path / "directory", fhir_feedback.url, f"mllp://127.0.0.1:{v2_feedback.port}"
    )
    procs.start("load", "load", str(directory))
    clients = clients_with_mllp_address(tmp_path / "clients")
    procs.start("clients", "clients", "load", str(clients), "--allow-dev-only")
    port_a, port_b, mllp_port = free_port(), free_port(), free_port()
    metrics = {"worker": free_port(), "mllp": free_port()}
    procs.start("serve-a", "serve", "--port", str(port_a), "--no-worker")
    procs.start("serve-b", "serve", "--port", str(port_b), "--no-worker")
    procs.start("worker", "worker", "--interval", "0.2", "--metrics-port", str(metrics["worker"]))
    procs.start("mllp", "mllp", "--port", str(mllp_port), "--metrics-port", str(metrics["mllp"]))
    procs.finish("load")  # non-zero exit when a file failed
    procs.finish("clients")
    a, b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    procs.wait_http_ready("serve-a", a)
    procs.wait_http_ready("serve-b", b)
    procs.wait_listening("mllp", mllp_port)
    procs.alive("worker")
    return Gateway(procs, url, a, b, mllp_port, fhir_feedback, v2_feedback, metrics)


def until_killed(work: Callable[[], None], errors: list[str]) -> None:
    """Run `work` against replica A (bounded: 200 requests) until A stops answering."""
    try:
        for _ in range(200):
            work()
        errors.append("replica A was never killed")
    except httpx.HTTPError:
        return  # A is gone: the request in flight got no answer
    except Exception as exc:  # reported by the test's thread
        errors.append(repr(exc))


def kill_mid_stream(gw: Gateway, ledger: Ledger, to_move: queue.Queue[str]) -> None:
    """Two threads send referrals through A, one moves Tasks through A (a step at a time,
    round robin over `to_move`); B and MLLP get referrals too. A is killed once it has answered
    a few requests of this stream: the referral threads are then in the middle of a request."""
    answered: list[int] = []
    errors: list[str] = []
    gp, coach = gw.client(gw.a, GP), gw.client(gw.a, COACH)

    def refer() -> None:
        post_referral(gp, ledger, "A")
        answered.append(1)

    def move() -> None:
        try:
            sr_id = to_move.get_nowait()
        except queue.Empty:
            coach.get("/Task", params={"owner": DE_BRUG})  # all completed: keep A busy
            return
        task = the_task(coach, sr_id)
        step = TASK_ORDER[TASK_ORDER.index(task["status"]) + 1]
        resp = move_task(coach, task, step)
        assert resp.status_code == 200, resp.text
        answered.append(1)
        if step != "completed":
            to_move.put(sr_id)

    streams = [  # daemons: a failing test never waits for them at exit
        threading.Thread(target=until_killed, args=(w, errors), daemon=True) for w in (refer, refer, move)
    ]
    with gp, coach, ThreadPoolExecutor(2) as pool, gw.client(gw.b, GP) as gp_b:
        for t in streams:
            t.start()
        others = [pool.submit(post_referral, gp_b, ledger, "B") for _ in range(4)]
        others += [pool.submit(send_v2_referral, gw.mllp_port, ledger) for _ in range(4)]
        deadline = time.monotonic() + 60
        while len(answered) < 6 and time.monotonic() < deadline:
            gw.procs.alive("serve-a")
            time.sleep(0.02)
        gw.procs.kill("serve-a")
        for t in streams:
            t.join(timeout=60)
            assert not t.is_alive(), "a client of the killed replica hangs"
        for f in others:
            f.result(timeout=60)
    assert not errors, errors


def wait_for_delivery(gw: Gateway, expected_fhir: int, expected_v2: int) -> dict[str, int]:
    """Until the outbox has nothing left to do and the receivers have what the database says
    they should get; the outbox counts at the end."""
    database = Database(gw.url)
    try:
        deadline = time.monotonic() + 90
        while True:
            with database.connection(write=False) as conn:
                counts = outbox.counts(conn)
            busy = counts.get("pending", 0) + counts.get("delivering", 0)
            arrived = (
                len(gw.fhir_feedback.received) >= expected_fhir
                and len(gw.v2_feedback.messages) >= expected_v2
            )
            if (not busy and arrived) or time.monotonic() > deadline:
                return counts
            gw.procs.alive("worker")
            time.sleep(0.2)
    finally:
        database.dispose()


def test_replicas_worker_and_mllp_on_one_postgres(deployment: Gateway) -> None:
    gw = deployment
    ledger = Ledger()
    sent = first_traffic(gw, ledger)
    assert all(r.acknowledged for r in sent), [(r.channel, r.answer) for r in sent]
    # 2. A dies (SIGKILL) while referrals and Task updates are in flight on it
    to_move: queue.Queue[str] = queue.Queue()
    for sr_id in sorted({r.sr_id for r in sent if r.sr_id}):  # the twin's once
        to_move.put(sr_id)
    kill_mid_stream(gw, ledger, to_move)
    unanswered = [r for r in ledger.items if not r.acknowledged]
    assert unanswered and all(r.channel == "A" and r.answer.startswith("none") for r in unanswered)
    with gw.client(gw.b, "gateway-admin") as admin, gw.client(gw.b, GP) as gp_b:
        check_referrals(admin, unanswered)  # each one all there or not at all
        # 3. the practice resends what got no answer, through B; B and MLLP go on
        for ref in unanswered:
            again = post_referral(gp_b, ledger, "B-resend", again=ref)
            assert again.acknowledged, again.answer
        for _ in range(3):
            assert post_referral(gp_b, ledger, "B").acknowledged
            assert send_v2_referral(gw.mllp_port, ledger).acknowledged
        v2_first = next(r for r in ledger.items if r.channel == "mllp")  # a HIS resends: stored once
        assert send_v2_referral(gw.mllp_port, ledger, again=v2_first).acknowledged
    # 4. what is there, and the coach completes each Task through B
    with gw.client(gw.b, "gateway-admin") as admin, gw.client(gw.b, COACH) as coach:
        present = check_referrals(admin, ledger.items)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda sr_id: complete(coach, sr_id), present.values(), timeout=120))
        feedback = {
            number: feedback_of(admin, sr_id) for number, sr_id in present.items()
        }  # referral number → ids of its pushed Communications
    check_feedback(gw, ledger, present, feedback)
    answers = Counter(f"{r.channel} {r.answer}" for r in ledger.items)
    print(f"referrals: {dict(sorted(answers.items()))}; present {len(present)}")  # shown with -s
    for name in ("serve-b", "worker", "mllp"):
        gw.procs.alive(name)
        check_log(gw.procs.log(name), name)


def check_log(text: str, name: str) -> None:
    """A process that lived through it all logged JSON lines only (what a log pipeline parses),
    none of them an error, and no traceback."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, f"{name} logged nothing"
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{name} logged a line that is not JSON: {line[:300]}")
        assert record.get("level") not in ("error", "critical"), f"{name}: {line[:500]}"


def first_traffic(gw: Gateway, ledger: Ledger) -> list[Referral]:
    """Referrals through both replicas and MLLP at once. Among them, across the two processes at
    the same moment: two new patients with a referral through each replica (one Patient each,
    ifNoneExist), and one referral sent through both (a resend: stored once)."""
    twin = Referral(f"DEP-twin-{uuid.uuid4().hex[:10]}", "twin", fresh_bsn())
    twin.body = referral_bundle(twin.number, bsn=twin.bsn)
    with ThreadPoolExecutor(4) as pool, gw.client(gw.a, GP) as gp_a, gw.client(gw.b, GP) as gp_b:
        pairs = [(gp_a, "A"), (gp_b, "B")]
        first = [pool.submit(post_referral, c, ledger, ch, None, twin) for c, ch in pairs]
        first += [
            pool.submit(post_referral, c, ledger, ch, bsn)
            for bsn in (fresh_bsn(), fresh_bsn())
            for c, ch in pairs
        ]
        first += [pool.submit(post_referral, c, ledger, ch) for c, ch in pairs * 2]
        first += [pool.submit(send_v2_referral, gw.mllp_port, ledger) for _ in range(4)]
        return [f.result(timeout=120) for f in first]


def check_referrals(admin: httpx.Client, referrals: list[Referral]) -> dict[str, str]:
    """Acknowledged: exactly once. Unanswered: all or nothing. Refused: nothing. Returns referral
    number → ServiceRequest id of every referral that is there."""
    present: dict[str, str] = {}
    for ref in referrals:
        srs = admin.get("/ServiceRequest", params={"identifier": ref.number}).json().get("entry", [])
        patients = admin.get("/Patient", params={"identifier": ref.bsn}).json().get("entry", [])
        where = f"{ref.channel} referral {ref.number} ({ref.answer})"
        if ref.acknowledged:
            assert len(srs) == 1, f"{where}: {len(srs)} ServiceRequests"
            assert len(patients) == 1, f"{where}: {len(patients)} Patients"
        elif ref.answer.startswith("refused"):
            assert not srs and not patients, f"{where}: refused, but stored"
        assert len(srs) <= 1, f"{where}: stored twice"
        if not srs:
            assert not patients, f"{where}: its Patient was stored without the ServiceRequest"
            continue
        sr = srs[0]["resource"]
        assert len(patients) == 1, f"{where}: {len(patients)} Patients"  # one per BSN, shared or not
        assert sr["subject"]["reference"] == f"Patient/{patients[0]['resource']['id']}", where
        consent = sr["supportingInfo"][0]["reference"]
        assert admin.get(f"/{consent}").status_code == 200, f"{where}: no {consent}"
        tasks = admin.get("/Task", params={"focus": f"ServiceRequest/{sr['id']}"}).json().get("entry", [])
        assert len(tasks) == 1, f"{where}: {len(tasks)} Tasks"
        present[ref.number] = sr["id"]
    return present


def feedback_of(admin: httpx.Client, sr_id: str) -> list[str]:
    """The feedback Communications of one referral: one per Task step, each kind once."""
    found = admin.get("/Communication", params={"based-on": f"ServiceRequest/{sr_id}", "_count": "100"})
    comms = [e["resource"] for e in found.json().get("entry", [])]
    kinds = Counter(c["category"][0]["coding"][0]["code"] for c in comms)
    assert kinds == Counter({"accepted": 1, "intake-held": 1, "completed": 1}), (sr_id, kinds)
    return [c["id"] for c in comms]


def check_feedback(
    gw: Gateway, ledger: Ledger, present: dict[str, str], feedback: dict[str, list[str]]
) -> None:
    """Every feedback Communication delivered once to its practice: FHIR pushes counted per
    Communication, RRI^I12 messages per referral (and answering the right REF^I12)."""
    by_number: dict[str, Referral] = {}
    for ref in ledger.items:
        by_number.setdefault(ref.number, ref)  # the first sending; its resends share the number
    v2 = {n for n in present if by_number[n].channel == "mllp"}
    expected_fhir = Counter(c for n, ids in feedback.items() if n not in v2 for c in ids)
    expected_v2 = Counter({n: len(feedback[n]) for n in v2})
    counts = wait_for_delivery(gw, expected_fhir.total(), expected_v2.total())
    assert set(counts) <= {"delivered"}, f"outbox not all delivered: {counts}"
    pushed = gw.fhir_feedback.received
    assert Counter(item["body"]["id"] for item in pushed) == expected_fhir
    kinds: dict[str, list[str]] = {}  # per referral, in the order they arrived
    for item in pushed:
        kinds.setdefault(item["body"]["basedOn"][0]["reference"], []).append(
            item["body"]["category"][0]["coding"][0]["code"]
        )
    assert all(k == ["accepted", "intake-held", "completed"] for k in kinds.values()), kinds
    assert all(n == 1 for n in Counter(item["event_id"] for item in pushed).values())
    rris = [rri_fields(m) for m in gw.v2_feedback.messages]
    assert Counter(number for number, _ in rris) == expected_v2
    assert all(control == by_number[number].control_id for number, control in rris)
    acknowledged = [r.number for r in ledger.items if r.acknowledged]
    assert set(acknowledged) <= set(feedback), "an acknowledged referral got no feedback"
    # what the worker and the MLLP listener count, on their own --metrics-port
    assert gw.counted("worker", "gateway_feedback_delivered_total", channel="fhir-push") == len(pushed)
    aa = sum(1 for r in ledger.items if r.channel.startswith("mllp") and r.acknowledged)
    assert gw.counted("mllp", "gateway_v2_acks_total", direction="sent", code="AA") == aa
