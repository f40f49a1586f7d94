"""Coverage-guided fuzzing (atheris / libFuzzer) of the gateway's hostile-input entry points.

    python -m benchmarks.fuzz --target v2|mllp|fhir-json|bundle --seconds N
    python -m benchmarks.fuzz --target bundle --reproduce FILE   # one input, its finding (if any)
    python -m benchmarks.fuzz --target bundle --minimize FILE    # smallest input with the same finding

Why next to the hypothesis tests: those sample inputs blindly; libFuzzer keeps every input that
reaches new code in `fhir_gateway` and mutates from there, so it gets deep into the ER7 tokenizer,
the v2 mapping, the JSON checks, the models, the profiles and the transaction path. Each target
checks properties, not only "no exception": an ACK that is readable and says AA only when the
referral was stored, framing that never buffers past its limit, only the gateway's own errors out
of the JSON/model/profile checks, and a transaction that answers 2xx only when its Task exists.

A finding does not stop the run: it is recorded once per signature (exception type and the
innermost gateway frame, or the broken property) under `benchmarks/results/fuzz/<target>/findings/`
(gitignored) with its input and traceback; libFuzzer's own crashes (timeouts, OOM, native faults)
restart the run with the corpus kept. The parent process runs libFuzzer in a child process and
writes `summary.json` with executions, exec/s and the coverage libFuzzer reports.

atheris is not a runtime dependency: `pip install -e '.[fuzz]'`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import importlib
import itertools
import json
import logging
import os
import pkgutil
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "fuzz"
BASE = "http://fuzz.test/fhir"
TARGET_NAMES = ("v2", "mllp", "fhir-json", "bundle")
SLOW_SECONDS = 2.0  # an input slower than this is a finding too (a cheap request must stay cheap)
STATS: Counter[str] = Counter()  # how far inputs got (ACK codes, statuses): is the fuzzer deep enough?


class Violation(AssertionError):
    """A property of the target broke (not an exception out of the gateway)."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


def require(condition: object, name: str, detail: str = "") -> None:
    """Raise `Violation(name)` when `condition` is false (asserts vanish under -O; this does not)."""
    if not condition:
        raise Violation(name, detail)


# -- findings ------------------------------------------------------------------------------------------
@dataclass
class Finding:
    signature: str
    text: str


def signature_of(exc: BaseException) -> str:
    """Type + innermost frame in fhir_gateway (else the innermost frame): one per root cause."""
    if isinstance(exc, Violation):
        return f"property-{exc.name}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/fhir_gateway/" in f.filename]
    frame = (ours or frames or [None])[-1]
    where = "?"
    if frame is not None:
        short = frame.filename.split("/fhir_gateway/")[-1].split("site-packages/")[-1]
        where = f"{short.replace('/', '.')}:{frame.lineno}:{frame.name}"
    return f"{type(exc).__name__}-{where}"


class FindingStore:
    """Each signature once on disk (first input, smallest input, traceback, count)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts: dict[str, int] = {}

    def record(self, finding: Finding, data: bytes) -> None:
        slug = re.sub(r"[^A-Za-z0-9_.:-]+", "_", finding.signature)[:150]
        place = self.folder / slug
        first = slug not in self.counts and not place.exists()
        self.counts[slug] = self.counts.get(slug, 0) + 1
        place.mkdir(parents=True, exist_ok=True)
        smallest = place / "smallest"
        if first:
            (place / "input").write_bytes(data)
            (place / "traceback.txt").write_text(finding.text)
            print(f"\n=== FINDING {finding.signature} ({len(data)} bytes) -> {place}", file=sys.stderr)
        if not smallest.exists() or len(data) < smallest.stat().st_size:
            smallest.write_bytes(data)


# -- the gateway, in-process ---------------------------------------------------------------------------
def import_gateway() -> None:
    """Import every fhir_gateway module (inside `instrument_imports` this instruments them all;
    a module imported lazily later would otherwise run uninstrumented)."""
    import fhir_gateway

    for info in pkgutil.walk_packages(fhir_gateway.__path__, "fhir_gateway."):
        if ".migrations" in info.name:
            continue  # alembic's env.py runs on import
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)


def gp_principal() -> Any:
    from fhir_gateway.security.principal import Principal

    return Principal(
        "praktijk-de-geinoord-his",
        "Organization/praktijk-de-geinoord",
        "gp-practice",
        ("system/*.cruds",),
        True,
    )


def build_gateway(folder: Path) -> Any:
    """A gateway app on SQLite in `folder`, the example directory loaded (as in profile_referral)."""
    import orjson

    from fhir_gateway.app import create_app
    from fhir_gateway.loading import load_files
    from fhir_gateway.security.tokens import generate_gateway_key
    from fhir_gateway.settings import Settings

    key = orjson.dumps(generate_gateway_key().as_dict(private=True)).decode()
    settings = Settings(database_url=f"sqlite:///{folder}/fuzz.db", token_key=key, log_level="WARNING")
    app = create_app(settings)
    app.state.ctx.database.upgrade()
    loaded = load_files(app.state.router, [ROOT / "examples" / "directory"])
    if not all(r.ok for r in loaded):
        raise RuntimeError(f"directory did not load: {[r for r in loaded if not r.ok]}")
    return app


_REF_VALUE = r"(?<=[|=]){}(?=$|&)"


def uniquify_referrals(bundle: Any, suffix: str) -> None:
    """Append `suffix` to every ServiceRequest.identifier value (and its ifNoneExist), so each
    execution is a new referral: otherwise every mutant of the seed is a resend, answered from
    the store without validating or writing anything, and the fuzzer never sees that code."""
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
            continue
        identifiers = resource.get("identifier")
        request = entry.get("request")
        for ident in identifiers if isinstance(identifiers, list) else ():
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str) or not ident["value"]:
                continue
            old = ident["value"]
            ident["value"] = old + suffix
            if isinstance(request, dict) and isinstance(request.get("ifNoneExist"), str):
                pattern = _REF_VALUE.format(re.escape(old))
                request["ifNoneExist"] = re.sub(
                    pattern, (old + suffix).replace("\\", "\\\\"), request["ifNoneExist"]
                )


BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"


def fresh_bsn(n: int) -> str:
    """The n-th 9-digit number passing the BSN 11-test (a patient no earlier execution created)."""
    base = n * 11
    while True:
        digits = f"8{base % 10**7:07d}"
        check = sum(int(d) * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11
        if check < 10:
            return digits + str(check)
        base += 1


def uniquify_patients(doc: Any, n: int) -> None:
    """Every valid BSN in the document becomes a fresh one (identifiers and ifNoneExist alike).

    Why: one mutant that drops the Patient's ifNoneExist stores a second patient with the seed's
    BSN, and from then on every seed answers 412 (multiple matches) before reaching the referral
    code. Invalid BSNs stay as they are, so the 11-test path is still fuzzed."""
    from fhir_gateway.validation.bsn import is_valid_bsn

    found: set[str] = set()
    for parent, key in _slots(doc):
        value = parent[key]
        if (
            isinstance(value, dict)
            and value.get("system") == BSN_SYSTEM
            and isinstance(value.get("value"), str)
            and is_valid_bsn(value["value"])
        ):
            found.add(value["value"])
    if not found:
        return
    fresh = {old: fresh_bsn(n * 4 + i) for i, old in enumerate(sorted(found))}
    for parent, key in _slots(doc):
        value = parent[key]
        if isinstance(value, str):
            for old, new in fresh.items():
                if old in value:
                    value = value.replace(old, new)
            parent[key] = value


class UniqueReferralRouter:
    """The real router with `uniquify_referrals` applied to each request body (v2 target)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.ctx = router.ctx
        self.n = 0

    def handle(self, req: Any) -> Any:
        uniquify_referrals(req.body, f"-fz{self.n}")
        uniquify_patients(req.body, self.n)
        return self.router.handle(req)


def check_task_for(router: Any, sr_ref: str) -> None:
    """A stored ServiceRequest has its Task (the referral is really there for the welfare org)."""
    from fhir_gateway.rest.request import FhirRequest
    from fhir_gateway.security.principal import Principal

    system = Principal.system("fuzz-check")
    sr_type, _, sr_id = sr_ref.partition("/")
    read = router.handle(FhirRequest("GET", f"{sr_type}/{sr_id}", principal=system, base_url=BASE))
    require(read.status == 200, "acknowledged-referral-not-stored", f"{sr_ref}: {read.status}")
    found = router.handle(
        FhirRequest("GET", "Task", params=[("based-on", sr_ref)], principal=system, base_url=BASE)
    )
    require(
        found.status == 200 and bool((found.body or {}).get("entry")),
        "acknowledged-referral-without-task",
        sr_ref,
    )


def _sr_entry(entry: Any) -> dict[str, Any] | None:
    """The ServiceRequest a POST entry creates (a referral), else None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        return None
    resource, url = entry.get("resource"), entry["request"].get("url")
    if entry["request"].get("method") != "POST" or not isinstance(resource, dict) or not isinstance(url, str):
        return None
    try:  # a create only: POST ServiceRequest/$validate answers 200 with an OperationOutcome
        path = urlsplit(url.removeprefix(BASE)).path.strip("/")
    except ValueError:
        return None
    return resource if resource.get("resourceType") == "ServiceRequest" and path == "ServiceRequest" else None


def answered_referrals(entries: list[Any], answers: list[Any]) -> dict[int, str]:
    """Entry index → 'ServiceRequest/<id>' each referral entry was answered with (2xx only)."""
    out: dict[int, str] = {}
    for i, (entry, answer) in enumerate(zip(entries, answers, strict=False)):
        response = (answer or {}).get("response") or {}
        if _sr_entry(entry) is None or str(response.get("status", ""))[:1] != "2":
            continue
        location = response.get("location") or ""
        marker = location.find("ServiceRequest/")
        out[i] = "/".join(location[marker:].split("/")[:2]) if marker >= 0 else ""
    return out


def acknowledged_referrals(router: Any, entries: list[Any], answers: list[Any]) -> dict[int, str]:
    """Every referral entry answered 2xx names a stored ServiceRequest with its Task, carrying the
    identifiers that were sent (unless a conditional create matched something else on purpose)."""
    from fhir_gateway.rest.request import FhirRequest
    from fhir_gateway.security.principal import Principal

    found = answered_referrals(entries, answers)
    for i, ref in found.items():
        require(ref, "referral-answered-without-servicerequest", f"entry {i}: {str(answers[i])[:300]}")
        check_task_for(router, ref)
        resource = _sr_entry(entries[i]) or {}
        if entries[i]["request"].get("ifNoneExist"):
            continue
        read = router.handle(FhirRequest("GET", ref, principal=Principal.system("fuzz-check"), base_url=BASE))
        stored = {
            (x.get("system"), x.get("value"))
            for x in (read.body or {}).get("identifier") or []
            if isinstance(x, dict)
        }
        for ident in resource.get("identifier") or []:
            if (
                isinstance(ident, dict)
                and isinstance(ident.get("value"), str)
                and isinstance(ident.get("system"), str)
            ):
                require(
                    (ident["system"], ident["value"]) in stored,
                    "referral-answered-with-another-referral",
                    f"entry {i}: {ident} not in {ref}",
                )
    return found


def check_outcome_body(body: Any, what: str) -> None:
    """An error answer is an OperationOutcome with coded issues, and serialises as HTTP would."""
    import orjson

    require(isinstance(body, dict), f"{what}-body-not-an-object", repr(body)[:200])
    require(
        body.get("resourceType") == "OperationOutcome", f"{what}-not-an-operation-outcome", str(body)[:300]
    )
    issues = body.get("issue")
    require(isinstance(issues, list) and issues, f"{what}-outcome-without-issues")
    for issue in issues:
        require(
            isinstance(issue, dict) and isinstance(issue.get("code"), str) and issue["code"],
            f"{what}-issue-without-code",
            str(issue)[:200],
        )
        require(
            issue.get("severity") in ("fatal", "error", "warning", "information"), f"{what}-issue-severity"
        )
    try:
        orjson.dumps(body)
    except TypeError as exc:
        raise Violation(f"{what}-not-serialisable", str(exc)) from exc


def check_fhir_error(exc: Any, what: str) -> None:
    require(400 <= exc.status < 500, f"{what}-error-status", f"{exc.status}: {exc.message[:200]}")
    check_outcome_body(exc.outcome(), what)


# -- targets -------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    max_len: int
    one: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    dictionary: Callable[[], list[bytes]] = field(default=lambda: [])
    mutator: Callable[[bytes, int, int], bytes] | None = None


def v2_seeds() -> list[bytes]:
    out = []
    for path in sorted((ROOT / "examples" / "v2").glob("*.hl7")):
        raw = path.read_bytes()
        out.append(raw)
        out.append(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    out.append(b"MSH|^~\\&|A|01053417|WORGW|WOR|20261105103000||REF^I12|1|P|2.5\r")
    out.append(b"MSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.4\rPID|1\r")
    return out


def v2_dictionary() -> list[bytes]:
    words = [
        "MSH|^~\\&|", "\r", "\r\n", "|", "^", "~", "&", "\\", "\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\",
        "\\X0D\\", "\\XC3A9\\", "\\.br\\", "\\H\\", "\\N\\", '""', "REF^I12^REF_I12", "ACK", "2.4", "2.5",
        "2.5.1", "P", "T", "D", "RF1|", "PRD|", "PID|", "DG1|", "NTE|", "ZWR|", "IN1|", "OBX|", "PV1|",
        "NLMINBIZA", "NNNLD", "AGB", "ICPC1NL", "RP", "WOR-CONSENT", "01053417", "01023456", "999911120",
        "20261105103000+0100", "20261105", "19720314", "3431AB", "Nieuwegein", "H", "L", "CP", "NET",
        "contact-details", "social-question", "Z12", "P03",
    ]  # fmt: skip
    return [w.encode() for w in words]


def make_v2_target(folder: Path | None = None) -> Target:
    """bytes → V2Service.process (the MLLP listener's and POST /v2's entry), then the ACK's properties."""
    import sqlalchemy as sa

    from fhir_gateway.store.tables import V2MessageRow
    from fhir_gateway.v2.message import V2ParseError, parse_er7
    from fhir_gateway.v2.senders import V2_SCOPES, V2Sender
    from fhir_gateway.v2.service import V2Service, _is_utf8

    app = build_gateway(folder or Path(tempfile.mkdtemp(prefix="fuzz-v2-")))
    router = app.state.router
    proxy = UniqueReferralRouter(router)
    service = V2Service(proxy, BASE)
    # an authenticated Batau-Noord system (the seeds' MSH-4): mutants reach the mapping, and one
    # that changes MSH-4 must be refused for its sender
    sender = V2Sender(
        "praktijk-batau-his", "Organization/praktijk-batau", "gp-practice", V2_SCOPES, ("01053417",), "fuzz"
    )
    counter = itertools.count()
    journal = V2MessageRow.__table__  # type: ignore[attr-defined]

    def one(data: bytes) -> None:
        proxy.n = next(counter)
        try:
            outcome = service.process(data, sender)
            STATS[f"ack-{outcome.code}"] += 1
            require(outcome.code in ("AA", "AE", "AR"), "ack-code", outcome.code)
            ack = parse_er7(outcome.ack)  # raises V2ParseError: unreadable ACK
            msa = ack.segment("MSA")
            require(msa is not None, "ack-without-msa", outcome.ack[:300])
            assert msa is not None
            require(msa.value(1) == outcome.code, "msa-1-differs", f"{msa.value(1)} != {outcome.code}")
            if outcome.code != "AA":
                require(ack.segment("ERR") is not None, "error-ack-without-err", outcome.ack[:300])
            try:
                inbound = parse_er7(data)
            except V2ParseError:
                inbound = None
            if inbound is not None and not outcome.duplicate:
                require(
                    msa.value(2) == inbound.control_id,
                    "msa-2-not-the-control-id",
                    f"{msa.value(2)!r} != {inbound.control_id!r}",
                )
            if outcome.code == "AA":
                require(
                    outcome.focus is not None and outcome.focus.startswith("ServiceRequest/"),
                    "aa-without-referral",
                    str(outcome.focus),
                )
                assert outcome.focus is not None
                check_task_for(router, outcome.focus)
            if outcome.code in ("AA", "AE") and not outcome.duplicate:
                again = service.handle(data, sender)  # a resend: the stored ACK, byte for byte
                expected = (
                    outcome.ack.encode("utf-8")
                    if _is_utf8(data)
                    else outcome.ack.encode("latin-1", "replace")
                )
                require(again == expected, "resend-gets-another-ack", f"{again[:200]!r} / {expected[:200]!r}")
        except V2ParseError as exc:
            raise Violation("ack-unreadable", str(exc)) from exc
        finally:
            with service.database.connection(write=True) as connection:
                connection.execute(sa.delete(journal))  # the next mutant is a new message

    return Target("v2", 8192, one, v2_seeds, v2_dictionary, v2_mutator(byte_share=0.25))


def v2_mutator(byte_share: float) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer custom mutator for ER7: edits whole segments, fields, components and values, so
    most mutants keep a readable MSH and reach the mapping and the referral path (plain byte
    mutations mostly break the header: an AR before anything else runs); some stay byte-level."""
    words = [w.decode() for w in v2_dictionary()] + ['""', "", "^^^", "~", "&&", "\\E\\", "9" * 40, "x" * 300]

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        import atheris

        rng = random.Random(seed)
        if rng.random() < byte_share:
            return atheris.Mutate(data, max_size)
        text = data.decode("latin-1")
        segments = [seg for seg in re.split(r"\r\n|\r|\n", text) if seg]
        if not segments:
            return atheris.Mutate(data, max_size)
        for _ in range(rng.choice((1, 1, 2, 3))):
            i = rng.randrange(len(segments))
            fields = segments[i].split("|")
            op = rng.randrange(8)
            if op == 0 and len(segments) > 1:
                del segments[i]
                continue
            if op == 1:
                segments.insert(rng.randrange(len(segments) + 1), segments[i])
                continue
            if op == 2 and len(segments) > 2:
                j = rng.randrange(1, len(segments))
                segments[i], segments[j] = segments[j], segments[i]
                continue
            f = rng.randrange(1, len(fields)) if len(fields) > 1 else 0
            if op == 3:
                fields[f] = rng.choice(words)
            elif op == 4:
                fields.insert(f, rng.choice(fields))
            elif op == 5 and len(fields) > 2:
                del fields[f]
            elif op == 6:  # one component or repetition of the field
                parts = fields[f].split("^")
                k = rng.randrange(len(parts))
                parts[k] = rng.choice([*words, parts[k] * 2, ""])
                fields[f] = "^".join(parts)
            else:
                raw = fields[f].encode("latin-1")
                fields[f] = atheris.Mutate(raw, len(raw) + 24).decode("latin-1")
            segments[i] = "|".join(fields)
        out = "\r".join(segments).encode("latin-1", "replace") + b"\r"
        return out if len(out) <= max_size else atheris.Mutate(data, max_size)

    return mutate


def mllp_reference(stream: bytes, max_bytes: int) -> tuple[list[bytes], bool]:
    """What MLLP framing means, written plainly: VT payload FS; noise outside frames ignored."""
    frames: list[bytes] = []
    pos = 0
    while True:
        start = stream.find(b"\x0b", pos)
        if start < 0:
            return frames, False
        end = stream.find(b"\x1c", start + 1)
        if end < 0:
            return frames, len(stream) - start - 1 > max_bytes
        if end - start - 1 > max_bytes:
            return frames, True
        frames.append(stream[start + 1 : end])
        pos = end + 1


def mllp_split(data: bytes) -> tuple[int, list[bytes]]:
    """Input layout: byte 0 → frame limit, byte 1 → chunking seed, the rest is the TCP stream."""
    if len(data) < 2:
        return 64, [data]
    max_bytes = 1 + data[0] * 8
    rng = random.Random(data[1])
    stream, chunks, pos = data[2:], [], 0
    while pos < len(stream):
        size = rng.choice((1, 2, 3, 7, 64, 500, 65536))
        chunks.append(stream[pos : pos + size])
        pos += size
    return max_bytes, chunks


def mllp_seeds() -> list[bytes]:
    from fhir_gateway.v2.mllp import frame

    msgs = [s.replace(b"\n", b"\r") for s in v2_seeds()[:4]]
    out = [bytes([255, 0]) + frame(msgs[0]), bytes([255, 3]) + frame(msgs[1]) + frame(msgs[2])]
    out.append(bytes([4, 5]) + b"noise" + frame(b"MSH|^~\\&|A|B") + b"\r\x0bpartial")
    out.append(bytes([1, 1]) + b"\x0b" + b"x" * 40 + b"\x1c\r")
    out.append(bytes([200, 9]) + frame(b"MSH|^~\\&|A|B|C|D|||REF^I12|RAISE|P|2.5") + frame(msgs[0][:100]))
    return out


def make_mllp_target() -> Target:
    """bytes → FrameReader (any chunking) against a plain reference, and → MLLPServer's connection
    loop with a fake socket: one ACK frame per frame, an AR on overflow, never an exception."""
    from fhir_gateway.v2.ack import build_ack, header_guess
    from fhir_gateway.v2.message import parse_er7
    from fhir_gateway.v2.mllp import FS, VT, FrameReader, MLLPServer

    loop = asyncio.new_event_loop()

    def handler(payload: bytes) -> bytes:
        if b"RAISE" in payload:
            raise RuntimeError("handler failure")
        return build_ack(header_guess(payload), "AA").encode()

    class ChunkReader:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = list(chunks)

        async def read(self, _n: int) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()
            self.closed = False

        def write(self, data: bytes) -> None:
            require(not self.closed, "mllp-write-after-close")
            self.data += data

        async def drain(self) -> None:
            return None

        def close(self) -> None:
            self.closed = True

        async def wait_closed(self) -> None:
            return None

    def one(data: bytes) -> None:
        max_bytes, chunks = mllp_split(data)
        expected, expect_overflow = mllp_reference(b"".join(chunks), max_bytes)
        reader = FrameReader(max_bytes)
        got: list[bytes] = []
        for chunk in chunks:
            out = reader.feed(chunk)
            for payload in out:
                require(len(payload) <= max_bytes, "mllp-frame-over-limit", f"{len(payload)} > {max_bytes}")
                require(FS not in payload, "mllp-fs-in-payload")
            got.extend(out)
            if reader.overflow:
                break
            require(len(reader.buffer) <= max_bytes, "mllp-buffer-unbounded", f"{len(reader.buffer)}")
        require(got == expected, "mllp-frames-differ", f"{got[:3]!r} vs {expected[:3]!r}")
        require(reader.overflow == expect_overflow, "mllp-overflow-differs", f"{reader.overflow}")
        require(isinstance(reader.partial, bytes), "mllp-partial")
        STATS["overflow" if expect_overflow else f"frames-{min(len(expected), 3)}"] += 1

        server = MLLPServer(handler, max_message_bytes=max_bytes, idle_timeout=5, handler_timeout=5)
        server._slots = asyncio.Semaphore(4)
        sink = Sink()
        loop.run_until_complete(server._connection(ChunkReader(chunks), sink))  # type: ignore[arg-type]
        require(sink.closed, "mllp-connection-not-closed")
        answers = [a for a in bytes(sink.data).split(FS + b"\r") if a]
        require(
            len(answers) == len(expected) + (1 if expect_overflow else 0),
            "mllp-answers-per-frame",
            f"{len(answers)} answers for {len(expected)} frames (overflow {expect_overflow})",
        )
        for answer in answers:
            require(answer[:1] == VT, "mllp-answer-not-framed")
            ack = parse_er7(answer[1:])
            msa = ack.segment("MSA")
            require(msa is not None and msa.value(1) in ("AA", "AR"), "mllp-answer-without-msa")
        if expect_overflow:
            require(ack_code(answers[-1]) == "AR", "mllp-overflow-not-ar")

    def ack_code(answer: bytes) -> str:
        msa = parse_er7(answer[1:]).segment("MSA")
        return msa.value(1) if msa else ""

    return Target("mllp", 4096, one, mllp_seeds, lambda: [VT, FS, b"\r", FS + b"\r", b"MSH|^~\\&|"])


def json_seed_docs() -> list[Any]:
    import orjson

    from tests.wor import consent, patient, referral_bundle, service_request

    docs: list[Any] = [patient(), consent("Patient/p"), service_request("Patient/p", "Consent/c", "REF-1")]
    docs.append(referral_bundle("REF-SEED-1"))
    for folder in ("examples/scenarios", "examples/v2", "tests/data/r4"):
        for path in sorted((ROOT / folder).glob("*.json")):
            docs.append(orjson.loads(path.read_bytes()))
    directory = orjson.loads((ROOT / "examples" / "directory" / "directory.json").read_bytes())
    kinds: set[str] = set()
    for entry in directory.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") not in kinds:  # one of each type: the corpus stays small
            kinds.add(resource.get("resourceType"))
            docs.append(resource)
    return docs


def json_dictionary(docs: list[Any]) -> list[bytes]:
    """Every key and short string of the seeds (libFuzzer splices them into inputs)."""
    words: set[bytes] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                words.add(f'"{k}":'.encode())
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and len(node) < 40:
            words.add(json.dumps(node).encode())

    for doc in docs:
        walk(doc)
    words.update(
        [b"null", b"true", b"[]", b"{}", b'"\\u0000"', b"1e400", b"18446744073709551616", b'"\\ud800"']
    )
    return sorted(words)


def make_fhir_json_target() -> Target:
    """bytes → strict_json.loads → check_resource → (Bundle shell) → Validator: only FhirError escapes."""
    from fhir_gateway.fhir.models import check_resource
    from fhir_gateway.fhir.outcome import FhirError, Issue
    from fhir_gateway.fhir.strict_json import JsonLimits, loads
    from fhir_gateway.rest.bundles import check_shell
    from fhir_gateway.validation.validator import Validator

    limits = JsonLimits()
    validator = Validator.from_directory()

    def one(data: bytes) -> None:
        try:
            stage = "loads"
            doc = loads(data, limits)
            stage = "model"
            resource = check_resource(doc)
            if resource.get("resourceType") == "Bundle":
                check_shell(resource)
            stage = "profile"
            issues = validator.validate(resource)
            STATS["profile-errors" if any(i.is_error for i in issues) else "valid"] += 1
            require(isinstance(issues, list), "validator-result")
            for issue in issues:
                require(
                    isinstance(issue, Issue) and issue.code and isinstance(issue.diagnostics, str),
                    "issue-shape",
                )
            as_fhir = [i.to_fhir() for i in issues] or [{"severity": "information", "code": "informational"}]
            check_outcome_body({"resourceType": "OperationOutcome", "issue": as_fhir}, "validator")
            validator.ensure_valid(resource)
        except FhirError as exc:
            STATS[f"refused-by-{stage}"] += 1
            check_fhir_error(exc, "json")

    docs = json_seed_docs()
    return Target(
        "fhir-json",
        16384,
        one,
        lambda: [_dumps(d) for d in docs],
        lambda: json_dictionary(docs),
        json_mutator(docs, byte_share=0.3),
    )


def _dumps(doc: Any) -> bytes:
    import orjson

    return orjson.dumps(doc)


def make_bundle_target(folder: Path | None = None) -> Target:
    """A POST of a (mutated) referral Bundle through router.handle, as the HTTP layer sends it."""
    import orjson

    from fhir_gateway.fhir.outcome import FhirError
    from fhir_gateway.fhir.strict_json import JsonLimits, loads
    from fhir_gateway.rest.request import FhirRequest

    app = build_gateway(folder or Path(tempfile.mkdtemp(prefix="fuzz-bundle-")))
    router = app.state.router
    gp = gp_principal()
    limits = JsonLimits(app.state.ctx.settings.max_json_depth, app.state.ctx.settings.max_bundle_entries)
    counter = itertools.count()

    def post(doc: Any) -> Any:
        req = FhirRequest(
            "POST",
            "",
            body=doc,
            headers={"content-type": "application/fhir+json"},
            principal=gp,
            base_url=BASE,
        )
        resp = router.handle(req)
        STATS[f"status-{resp.status}"] += 1
        require(resp.status < 500, "status-5xx", f"{resp.status}: {str(resp.body)[:400]}")
        require(
            isinstance(resp.body, dict) and isinstance(resp.body.get("resourceType"), str), "body-not-fhir"
        )
        try:
            orjson.dumps(resp.body)
        except TypeError as exc:
            raise Violation("response-not-serialisable", str(exc)) from exc
        if resp.status >= 400:
            check_outcome_body(resp.body, "bundle")
        return resp

    def one(data: bytes) -> None:
        try:
            doc = loads(data, limits)
        except FhirError as exc:
            STATS["refused-by-loads"] += 1
            check_fhir_error(exc, "loads")
            return
        n = next(counter)
        uniquify_referrals(doc, f"-fz{n}")
        uniquify_patients(doc, n)
        sent = copy.deepcopy(doc)
        resp = post(doc)
        if resp.status >= 300:
            return
        require(resp.status == 200, "bundle-status", str(resp.status))
        kind = resp.body.get("type")
        require(kind in ("transaction-response", "batch-response"), "bundle-response-type", str(kind))
        entries = sent.get("entry") or []
        answers = resp.body.get("entry") or []
        require(len(answers) == len(entries), "response-entries", f"{len(answers)} for {len(entries)}")
        referrals = acknowledged_referrals(router, entries, answers)
        if kind == "transaction-response" and referrals:
            again = post(copy.deepcopy(sent))  # the resend of a stored referral stores nothing new
            require(again.status == 200, "resend-status", f"{again.status}: {str(again.body)[:300]}")
            again_refs = answered_referrals(entries, again.body.get("entry") or [])
            for i, ref in referrals.items():
                require(
                    again_refs.get(i) == ref,
                    "resend-other-referral",
                    f"entry {i}: {again_refs.get(i)} != {ref}",
                )

    seeds_docs = bundle_docs()
    return Target(
        "bundle",
        16384,
        one,
        lambda: [_dumps(d) for d in seeds_docs],
        lambda: json_dictionary(seeds_docs),
        json_mutator(seeds_docs + json_seed_docs()[:3], byte_share=0.15),
    )


# -- a structure-aware mutator for JSON ---------------------------------------------------------------
_INTERESTING: list[Any] = [
    None, True, False, 0, -1, 1, 2, 2**31, 2**63 - 1, -(2**63), 1.5, -0.0, 1e308, 1e-320, "", " ", "x", "0",
    "a" * 300, "urn:uuid:00000000-0000-0000-0000-000000000000", "urn:uuid:", "Patient/x", "Patient/", "/",
    "#", "#x", "Patient", "ServiceRequest", "Consent", "Task", "Bundle", "Binary", "Parameters",
    "OperationOutcome", "Practitioner", "PractitionerRole", "Organization", "CarePlan", "Provenance",
    "POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "transaction", "batch", "searchset", "collection",
    "2026-02-30", "2026", "2026-11", "2026-11-02T09:30:00+01:00", "2026-11-02T25:00:00Z", "9999-12-31",
    "0001-01-01", "999911120", "123456789", "12345678", "http://fhir.nl/fhir/NamingSystem/bsn",
    "http://fhir.nl/fhir/NamingSystem/agb-z", "Patient?identifier=x", "Patient?_id=x", "Patient/$validate",
    "Patient/x/_history/1", "ServiceRequest/_history", "../x", "metadata", "$process-message", "?", "&",
    f"{BASE}/Patient", f"{BASE}/Patient/x", BASE, "http://[x", "//[x", "Patient?", "Patient/$everything",
    "\u202e", "é", "😀", "\t", "\n", "order", "active", "draft", "revoked", "entered-in-error", "permit",
    "deny", "female", "unknown", "Z12", "P03", "social-prescribing", "3431 AB", "0000 AA", "12",
    {}, [], [None], [{}], [[]], {"reference": "x"}, {"reference": "#"}, {"resourceType": "Patient"},
    {"extension": [{"url": "x"}]}, {"coding": [{"system": "x", "code": "y"}]},
    {"method": "PATCH", "url": "Patient/x"}, {"resourceType": "Binary", "contentType": "x", "data": "e30="},
]  # fmt: skip
_KEYS = [
    "resourceType", "id", "meta", "profile", "extension", "modifierExtension", "contained", "identifier",
    "subject", "patient", "requester", "reference", "type", "display", "status", "intent", "entry", "fullUrl",
    "request", "method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "resource", "response", "valueString",
    "valueReference", "_line", "_family", "line", "code", "coding", "system", "supportingInfo", "reasonCode",
    "basedOn", "replaces", "category", "provision", "scope", "performer", "owner", "focus", "for", "text",
    "div", "implicitRules", "language", "address", "postalCode", "birthDate", "deceasedBoolean", "link",
]  # fmt: skip


def _slots(doc: Any, limit: int = 4000) -> list[tuple[Any, Any]]:
    """(container, key) for every value in `doc`, iteratively (mutants may be deep)."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack and len(out) < limit:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                out.append((node, k))
                stack.append(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out.append((node, i))
                stack.append(v)
    return out


def _mutate_scalar(value: Any, rng: random.Random) -> Any:
    import atheris

    if isinstance(value, str):
        raw = atheris.Mutate(value.encode("utf-8"), len(value) + 16)
        return raw.decode("utf-8", "ignore")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return max(-(2**63), min(2**63 - 1, value + rng.choice((-1, 1, 10**9, -(10**9), value))))
    if isinstance(value, float):
        return rng.choice((value * 10, -value, value / 3, 0.1))
    return rng.choice(_INTERESTING)


def mutate_doc(doc: Any, rng: random.Random, pool: list[Any]) -> Any:
    """One structural change: replace/splice/delete/insert/duplicate/swap/mutate a value."""
    slots = _slots(doc)
    if not slots:
        return copy.deepcopy(rng.choice(pool))
    parent, key = rng.choice(slots)
    op = rng.randrange(9)
    if op == 0:
        parent[key] = copy.deepcopy(rng.choice(_INTERESTING))
    elif op == 1:  # splice a subtree from this document or a seed
        source = rng.choice((doc, rng.choice(pool)))
        others = _slots(source)
        if others:
            p2, k2 = rng.choice(others)
            parent[key] = copy.deepcopy(p2[k2])
    elif op == 2:
        del parent[key]
    elif op == 3 and isinstance(parent, dict):
        parent[rng.choice(_KEYS)] = copy.deepcopy(rng.choice([*_INTERESTING, parent[key]]))
    elif op == 3 or op == 4:
        container = parent if isinstance(parent, list) else parent[key]
        if isinstance(container, list) and container:
            container.insert(rng.randrange(len(container) + 1), copy.deepcopy(rng.choice(container)))
        elif isinstance(container, dict):
            container[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_INTERESTING))
    elif op == 5 and isinstance(parent, list) and len(parent) > 1:
        i, j = rng.randrange(len(parent)), rng.randrange(len(parent))
        parent[i], parent[j] = parent[j], parent[i]
    elif op == 6:  # the value becomes the whole document (an entry's resource posted on its own)
        if isinstance(parent[key], dict | list):
            return parent[key]
    elif op == 7 and isinstance(parent, dict):  # rename a key
        value = parent.pop(key)
        parent[rng.choice(_KEYS)] = value
    else:
        parent[key] = _mutate_scalar(parent[key], rng)
    return doc


def json_mutator(pool: list[Any], byte_share: float) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer custom mutator: mostly JSON-structure mutations, some plain byte mutations."""
    import orjson

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        import atheris

        rng = random.Random(seed)
        if rng.random() < byte_share:
            return atheris.Mutate(data, max_size)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = copy.deepcopy(rng.choice(pool))
        for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
            doc = mutate_doc(doc, rng, pool)
        try:
            out = orjson.dumps(doc)
        except TypeError:
            return atheris.Mutate(data, max_size)
        return out if len(out) <= max_size else atheris.Mutate(data, max_size)

    return mutate


MAKERS: dict[str, Callable[..., Target]] = {
    "v2": make_v2_target,
    "mllp": make_mllp_target,
    "fhir-json": make_fhir_json_target,
    "bundle": make_bundle_target,
}


def run_one(target: Target, data: bytes) -> Finding | None:
    """Run one input; a finding for any exception or broken property, or for a slow input."""
    started = time.perf_counter()
    try:
        target.one(data)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Finding(signature_of(exc), "".join(traceback.format_exception(exc)))
    took = time.perf_counter() - started
    if took > SLOW_SECONDS:
        return Finding("slow-input", f"{took:.2f} s for {len(data)} bytes")
    return None


# -- child: libFuzzer in this process ------------------------------------------------------------------
def child(args: argparse.Namespace, libfuzzer_args: list[str]) -> None:
    import atheris

    include = ["fhir_gateway"] + (["hl7apy"] if args.target == "v2" else [])
    if args.instrument == "gateway":
        with atheris.instrument_imports(include=include):
            import_gateway()
    else:
        import_gateway()
    logging.disable(logging.CRITICAL)  # the findings are recorded here; log lines only slow it down
    target = MAKERS[args.target]()
    if args.instrument == "all":
        atheris.instrument_all()
    store = FindingStore(Path(args.out) / "findings")

    stats_file = Path(args.out) / "stats.json"
    if stats_file.exists():  # a restart after a libFuzzer crash goes on counting
        STATS.update(json.loads(stats_file.read_text()))
    runs = itertools.count(1)

    def test_one(data: bytes) -> None:
        finding = run_one(target, data)
        if finding is not None:
            STATS["finding"] += 1
            store.record(finding, data)
        if next(runs) % 500 == 0:
            stats_file.write_text(json.dumps(dict(STATS.most_common()), indent=1))

    kwargs: dict[str, Any] = {}
    if target.mutator is not None:
        kwargs["custom_mutator"] = target.mutator
    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one, **kwargs)
    atheris.Fuzz()


# -- parent: seeds, restarts, numbers ------------------------------------------------------------------
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)(?: .*exec/s: (\d+))?")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


def write_dictionary(path: Path, words: list[bytes]) -> None:
    lines = []
    for word in words:
        escaped = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in word)
        lines.append(f'"{escaped}"')
    path.write_text("\n".join(lines) + "\n")


def prepare(target: Target, out: Path) -> list[str]:
    seeds = out / "seeds"
    seeds.mkdir(parents=True, exist_ok=True)
    for data in target.seeds():
        (seeds / hashlib.sha1(data).hexdigest()).write_bytes(data)
    (out / "corpus").mkdir(exist_ok=True)
    (out / "crashes").mkdir(exist_ok=True)
    args = [f"-max_len={target.max_len}", "-timeout=30", "-rss_limit_mb=6144", "-print_final_stats=1"]
    words = target.dictionary()
    if words:
        write_dictionary(out / "dict.txt", words)
        args.append(f"-dict={out / 'dict.txt'}")
    return [*args, f"-artifact_prefix={out / 'crashes'}/", str(out / "corpus"), str(seeds)]


def parent(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the seeds are built in this process (uninstrumented, no fuzzing): cheap and the same files
    target_seeds = SEED_ONLY[args.target]()
    fuzz_args = prepare(target_seeds, out)
    (out / "stats.json").unlink(missing_ok=True)
    deadline = time.monotonic() + args.seconds
    summary: dict[str, Any] = {"target": args.target, "seconds": args.seconds, "instrument": args.instrument}
    runs: list[dict[str, Any]] = []
    log_path = out / "fuzz.log"
    with log_path.open("a") as log:
        while (remaining := int(deadline - time.monotonic())) > 5 and len(runs) < 50:
            cmd = [
                sys.executable, "-m", "benchmarks.fuzz", "--child", "--target", args.target,
                "--instrument", args.instrument, "--out", str(out), "--",
                f"-max_total_time={remaining}", *fuzz_args, *args.libfuzzer,
            ]  # fmt: skip
            started = time.monotonic()
            run: dict[str, Any] = {"execs": 0, "cov": 0, "ft": 0, "corpus": 0, "exec_per_s": 0}
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=log, text=True, errors="replace"
            )
            assert proc.stderr is not None
            for line in proc.stderr:
                log.write(line)
                if line.startswith("=== FINDING") or "ERROR: libFuzzer" in line or "INITED" in line:
                    print(line.rstrip(), flush=True)
                if m := _STATUS.match(line):
                    run.update(execs=int(m[1]), cov=int(m[3]), ft=int(m[4]), corpus=int(m[5]))
                    if m[2] == "INITED":
                        run["inited"] = {"cov": int(m[3]), "ft": int(m[4])}
                    if m[7]:
                        run["exec_per_s"] = int(m[7])
                elif m := _STAT.match(line):
                    run[m[1]] = int(m[2])
            proc.wait()
            run["seconds"] = round(time.monotonic() - started, 1)
            run["returncode"] = proc.returncode
            run["execs"] = run.get("number_of_executed_units", run["execs"])
            run["exec_per_s"] = run.get("average_exec_per_sec", run["exec_per_s"])
            runs.append(run)
            print(f"run ended rc={proc.returncode} after {run['seconds']} s: {run}", flush=True)
            if proc.returncode == 0:
                break
    findings = sorted(p.name for p in (out / "findings").glob("*")) if (out / "findings").exists() else []
    crashes = sorted(p.name for p in (out / "crashes").glob("*"))
    summary.update(
        runs=runs,
        executions=sum(r["execs"] for r in runs),
        exec_per_s=round(sum(r["execs"] for r in runs) / max(sum(r["seconds"] for r in runs), 1), 1),
        cov=max((r["cov"] for r in runs), default=0),
        ft=max((r["ft"] for r in runs), default=0),
        corpus=len(list((out / "corpus").glob("*"))),
        outcomes=json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {},
        findings=findings,
        libfuzzer_crashes=crashes,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return summary


def _seed_target(name: str) -> Callable[[], Target]:
    """A Target with seeds and dictionary only (no gateway built: the parent stays light)."""

    def make() -> Target:
        noop: Callable[[bytes], None] = lambda _data: None  # noqa: E731
        if name == "v2":
            return Target(name, 8192, noop, v2_seeds, v2_dictionary)
        if name == "mllp":
            from fhir_gateway.v2.mllp import FS, VT

            return Target(name, 4096, noop, mllp_seeds, lambda: [VT, FS, b"\r", FS + b"\r", b"MSH|^~\\&|"])
        docs = json_seed_docs() if name == "fhir-json" else None
        if docs is not None:
            return Target(name, 16384, noop, lambda: [_dumps(d) for d in docs], lambda: json_dictionary(docs))
        return Target(name, 16384, noop, lambda: bundle_seed_bytes(), lambda: json_dictionary(bundle_docs()))

    return make


def bundle_docs() -> list[Any]:
    import orjson

    from tests.wor import referral_bundle

    docs = [referral_bundle("REF-SEED-1")]
    plain = referral_bundle("REF-SEED-2")
    del plain["entry"][0]["request"]["ifNoneExist"]
    batch = referral_bundle("REF-SEED-3")
    batch["type"] = "batch"
    docs += [plain, batch]
    for name in ("01-referral-bundle", "07-unroutable-address", "08-invalid-bsn"):
        docs.append(orjson.loads((ROOT / "examples" / "scenarios" / f"{name}.json").read_bytes()))
    docs.append(orjson.loads((ROOT / "examples" / "v2" / "ref-i12-v25.json").read_bytes()))
    return docs


def bundle_seed_bytes() -> list[bytes]:
    return [_dumps(d) for d in bundle_docs()]


SEED_ONLY: dict[str, Callable[[], Target]] = {name: _seed_target(name) for name in TARGET_NAMES}


# -- reproduce and minimise ----------------------------------------------------------------------------
def _ddmin_bytes(data: bytes, same: Callable[[bytes], bool]) -> bytes:
    """Delta debugging over bytes: drop chunks while the finding stays the same."""
    chunk = max(len(data) // 2, 1)
    while chunk >= 1:
        i, changed = 0, False
        while i < len(data):
            candidate = data[:i] + data[i + chunk :]
            if candidate != data and same(candidate):
                data, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return data


def _shrink_json(doc: Any, same: Callable[[Any], bool]) -> Any:
    """Drop keys and list items, and shorten strings, while the finding stays the same."""
    changed = True
    while changed:
        changed = False
        for parent, key in reversed(_slots(doc)):
            try:
                value = parent[key]
            except (KeyError, IndexError):
                continue
            trial = copy.deepcopy(doc)
            for p, k in _slots(trial):
                if p is not None and _same_path(doc, parent, key, trial, p, k):
                    del p[k]
                    break
            else:
                continue
            if same(trial):
                doc, changed = trial, True
                break
            if isinstance(value, str) and len(value) > 1:
                parent[key] = value[: len(value) // 2]
                if same(doc):
                    changed = True
                    break
                parent[key] = value
    return doc


def _same_path(doc: Any, parent: Any, key: Any, trial: Any, p: Any, k: Any) -> bool:
    return _path_to(doc, parent, key) == _path_to(trial, p, k)


def _path_to(doc: Any, parent: Any, key: Any) -> tuple[Any, ...] | None:
    for path, node in _paths(doc):
        if node is parent:
            return (*path, key)
    return None


def _paths(doc: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, dict):
            stack.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))


def reproduce(args: argparse.Namespace) -> Finding | None:
    import_gateway()
    logging.disable(logging.CRITICAL)
    target = MAKERS[args.target]()
    data = Path(args.reproduce or args.minimize).read_bytes()
    finding = run_one(target, data)
    if finding is None:
        print("no finding")
        return None
    print(finding.text)
    if args.minimize:
        import orjson

        def same_bytes(candidate: bytes) -> bool:
            found = run_one(target, candidate)
            return found is not None and found.signature == finding.signature

        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if doc is not None and args.target in ("bundle", "fhir-json"):
            doc = _shrink_json(doc, lambda d: same_bytes(orjson.dumps(d)))
            data = orjson.dumps(doc)
        else:
            data = _ddmin_bytes(data, same_bytes)
        path = Path(args.minimize).with_suffix(".min")
        path.write_bytes(data)
        print(f"minimised to {len(data)} bytes: {path}\n{data[:2000]!r}")
    return finding


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=TARGET_NAMES, required=True)
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--instrument", choices=("gateway", "all", "none"), default="gateway")
    p.add_argument("--out", default=None, help="default benchmarks/results/fuzz/<target>")
    p.add_argument("--reproduce", default=None, help="run one input file and print its finding")
    p.add_argument("--minimize", default=None, help="shrink an input file keeping its finding")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out or str(OUT / args.target)
    args.libfuzzer = extra
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
    if args.child:
        child(args, extra)
    elif args.reproduce or args.minimize:
        reproduce(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
