"""`fhir-gateway demo`: play one whole Welzijn op Recept loop with the example files.

Why: integration testers, trainers and CI need one command that proves a gateway closes the
loop — a GP practice refers, the welfare organisation works the Task, the practice reads its
feedback, an HL7 v2 referral is acknowledged, and a bad referral is refused — and that shows
where every resource can be read afterwards. By default it starts its own gateway on a
temporary SQLite database (the example directory and DEV-ONLY clients are loaded into it);
`--base-url` plays against a running gateway instead, as often as wanted: each run sends its
referrals with new numbers (the example patient is found again by its BSN), and at the end
cancels, as the referring practice, whatever referral of the run is still open, so a shared test
gateway's worklists keep no demo referral. Every call carries a real access token from the SMART
Backend Services flow, signed with the dev-only keys in `examples/clients/`. The exit code is
non-zero when any step did not answer as expected.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fhir_gateway.commands.common import settings_of
from fhir_gateway.security.authn import make_client_assertion
from fhir_gateway.settings import Settings

GP_CLIENT = "praktijk-de-geinoord-his"
WELFARE_CLIENT = "welzijn-de-brug-cms"
V2_CLIENT = "praktijk-batau-his"  # the example REF^I12 comes from Huisartsen Batau-Noord
V2_FILE = "ref-i12-v25.hl7"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
ER7 = "x-application/hl7-v2+er7"
FINAL_TASK_STATES = ("completed", "cancelled", "rejected", "failed", "entered-in-error")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# A child gateway must not inherit settings that would make it someone else's gateway.
CHILD_ENV_DROP = (
    "GATEWAY_BASE_URL",
    "GATEWAY_INSECURE_DEV",
    "GATEWAY_LOAD_EXAMPLES",
    "GATEWAY_WORKER_IN_APP",
)


class StepFailed(Exception):
    """A step answered, but not as the loop needs; the message says what came back."""


@dataclass
class Step:
    """One thing the demo sends, what it expects, and what came back."""

    key: str
    title: str
    sent: str
    expected: str
    status: str = "-"
    ok: bool = False
    skipped: bool = False
    ids: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class LoopState:
    """Ids learnt along the way (later steps need them)."""

    patient: str = ""
    service_request: str = ""
    task: dict[str, Any] = field(default_factory=dict)
    questionnaires: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_gateway(port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """`fhir-gateway serve` in a child process on a fresh SQLite database; yields the root URL.

    The worker is off: deliveries to the example practices' (fictitious) endpoints would only
    make the demo slower and dependent on DNS; pushed feedback stays queued in the outbox."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="fhir-gateway-demo-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
        env.update(
            {
                "GATEWAY_DATABASE_URL": f"sqlite:///{Path(tmp) / 'gateway.db'}",
                "GATEWAY_LOAD_EXAMPLES": "true",
                "GATEWAY_LOG_JSON": "false",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        log_path = Path(tmp) / "gateway.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port), "--no-worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        root = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(root, proc, log_path, timeout)
            yield root
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _wait_ready(root: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"the gateway exited early (code {proc.returncode}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise click.ClickException(f"the gateway did not become ready within {timeout:.0f} s")


def split_base(base_url: str) -> tuple[str, str]:
    """`http://host/fhir` or `http://host` → (root, fhir base)."""
    base = base_url.rstrip("/")
    root = base[: -len("/fhir")] if base.endswith("/fhir") else base
    return root, root + "/fhir"


class LoopPlayer:
    """Plays the example scenario against one gateway as the three example clients."""

    def __init__(self, http: httpx.Client, root: str, examples: Path, unique: str | None = None) -> None:
        self.http = http
        self.root = root
        self.fhir = root + "/fhir"
        self.examples = examples
        self.unique = unique  # suffix for business identifiers when the gateway is not fresh
        self.state = LoopState()
        self.tokens: dict[str, str] = {}
        self.ack = ""
        self.v2_identifier = ""  # RF1-6 of the v2 referral this run sent (a shared gateway only)

    # -- plumbing -------------------------------------------------------------------------------
    def scenario(self, name: str, **placeholders: str) -> Any:
        text = (self.examples / "scenarios" / name).read_text(encoding="utf-8")
        for key, value in placeholders.items():
            text = text.replace(f"<{key}>", value)
        return orjson.loads(text)

    def token(self, client_id: str) -> str:
        """SMART Backend Services: a client assertion signed with the dev-only key → access token."""
        if client_id in self.tokens:
            return self.tokens[client_id]
        config = self.http.get(f"{self.root}/.well-known/smart-configuration")
        if config.status_code != 200:
            raise StepFailed(f"smart-configuration answered {config.status_code}")
        endpoint = config.json()["token_endpoint"]
        key_file = self.examples / "clients" / f"{client_id}.dev-only.private.jwk"
        if not key_file.is_file():
            raise StepFailed(f"no dev-only key for {client_id} in {key_file.parent}")
        assertion = make_client_assertion(client_id, orjson.loads(key_file.read_bytes()), endpoint)
        resp = self.http.post(
            endpoint,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
                "scope": "system/*.cruds",
            },
        )
        if resp.status_code != 200:
            raise StepFailed(f"token for {client_id}: {resp.status_code} {resp.text[:200]}")
        self.tokens[client_id] = resp.json()["access_token"]
        return self.tokens[client_id]

    def call(
        self,
        client_id: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {self.token(client_id)}", "Accept": FHIR_JSON}
        if body is not None:
            all_headers["Content-Type"] = FHIR_JSON
        all_headers.update(headers or {})
        content = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
        return self.http.request(
            method, f"{self.fhir}/{path}".rstrip("/"), content=content, headers=all_headers
        )

    def url(self, reference: str) -> str:
        return f"{self.fhir}/{reference}"

    @staticmethod
    def expect(resp: httpx.Response, status: int, step: Step) -> dict[str, Any]:
        step.status = str(resp.status_code)
        body = _json(resp)
        if resp.status_code != status:
            raise StepFailed(f"expected {status}, got {resp.status_code}: {_outcome_text(body)}")
        return body

    # -- the loop -------------------------------------------------------------------------------
    def steps(self) -> list[tuple[Step, Callable[[Step], None], bool]]:
        """(step, action, part of the chain): a failed chain step skips the chain steps after it."""
        return [
            (Step("gateway", "Gateway ready", "GET /readyz", "200"), self.ready, True),
            (
                Step("tokens", "SMART tokens", "POST /auth/token (private_key_jwt) x3", "200"),
                self.get_tokens,
                True,
            ),
            (
                Step(
                    "referral",
                    "GP refers (FHIR)",
                    "POST /fhir 01-referral-bundle.json (new identifier)",
                    "200, 201 (Patient 201 or 200 when known)",
                ),
                self.refer,
                True,
            ),
            (
                Step(
                    "worklist", "Welfare worklist", "GET /fhir/Task?focus=ServiceRequest/…", "200, requested"
                ),
                self.worklist,
                True,
            ),
            (
                Step("accept", "Coach accepts", "PATCH Task 02-accept.patch.json", "200, accepted"),
                self.accept,
                True,
            ),
            (
                Step("intake", "Intake held", "PATCH Task 03-intake-held.patch.json", "200, in-progress"),
                self.intake,
                True,
            ),
            (
                Step(
                    "positive-health",
                    "Positive Health x2",
                    "POST QuestionnaireResponse 04a, 04b",
                    "201, 201",
                ),
                self.positive_health,
                True,
            ),
            (
                Step("complete", "Trajectory closed", "PATCH Task 04c-complete.patch.json", "200, completed"),
                self.complete,
                True,
            ),
            (
                Step(
                    "feedback",
                    "GP reads feedback",
                    "GET /fhir/Communication?based-on=ServiceRequest/…",
                    "200, 3 Communications",
                ),
                self.feedback,
                True,
            ),
            (
                Step("v2", "HL7 v2 REF^I12", f"POST /v2 {V2_FILE}", "200, ACK AA"),
                self.v2,
                False,
            ),
            (
                Step(
                    "unroutable",
                    "Unroutable referral",
                    "POST /fhir 07-unroutable-address.json",
                    "422 business-rule",
                ),
                self.unroutable,
                False,
            ),
        ]

    def ready(self, step: Step) -> None:
        resp = self.http.get(f"{self.root}/readyz")
        self.expect(resp, 200, step)
        step.urls.append(f"{self.fhir}/metadata")
        step.detail = self.root

    def get_tokens(self, step: Step) -> None:
        for client_id in (GP_CLIENT, WELFARE_CLIENT, V2_CLIENT):
            self.token(client_id)
        step.status = "200"
        step.ids = [GP_CLIENT, WELFARE_CLIENT, V2_CLIENT]
        step.detail = "access tokens for the practice, the welfare organisation and the v2 sender"

    def refer(self, step: Step) -> None:
        bundle = self.scenario("01-referral-bundle.json")
        if self.unique:
            for entry in bundle["entry"]:
                resource = entry["resource"]
                if resource["resourceType"] == "ServiceRequest":
                    resource["identifier"][0]["value"] += f"-{self.unique}"
        body = self.expect(self.call(GP_CLIENT, "POST", "", body=bundle), 200, step)
        statuses = [e.get("response", {}).get("status", "") for e in body.get("entry", [])]
        step.status = "200: " + ", ".join(s.split(" ")[0] for s in statuses)
        for entry in body.get("entry", []):
            resource = entry.get("resource") or {}
            ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            step.ids.append(ref)
            if resource.get("resourceType") == "ServiceRequest":
                self.state.service_request = resource["id"]
                step.urls.append(self.url(ref))
            if resource.get("resourceType") == "Patient":
                self.state.patient = resource["id"]
        if not self.state.service_request or not self.state.patient:
            raise StepFailed("the transaction-response holds no Patient / ServiceRequest")
        by_type = dict(zip((e["resource"]["resourceType"] for e in bundle["entry"]), statuses, strict=False))
        # The Patient is created with ifNoneExist on the BSN: a gateway that met the example patient
        # before answers 200 with that patient (on this gateway's first demo, 201). The referral
        # itself must be new.
        if not by_type.get("ServiceRequest", "").startswith("201"):
            raise StepFailed(
                f"expected the ServiceRequest 201 Created, got {by_type.get('ServiceRequest')!r} "
                "(the same referral identifier was sent before)"
            )
        if not by_type.get("Patient", "").startswith(("200", "201")):
            raise StepFailed(f"expected the Patient 201 Created or 200 OK, got {by_type.get('Patient')!r}")
        if by_type.get("Patient", "").startswith("200"):
            step.detail = "the example patient was known already (ifNoneExist on the BSN): reused"

    def worklist(self, step: Step) -> None:
        sr = f"ServiceRequest/{self.state.service_request}"
        body = self.expect(self.call(WELFARE_CLIENT, "GET", f"Task?focus={sr}"), 200, step)
        tasks = [
            e["resource"]
            for e in body.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Task"
        ]
        if len(tasks) != 1:
            raise StepFailed(f"expected one Task for {sr}, found {len(tasks)}")
        task = self.state.task = tasks[0]
        owner = (task.get("owner") or {}).get("reference", "")
        step.status += f", {task['status']}"
        step.ids.append(f"Task/{task['id']}")
        step.urls.append(self.url(f"Task/{task['id']}"))
        step.detail = (
            f"owner {owner}, intake before {task.get('restriction', {}).get('period', {}).get('end', '?')}"
        )
        plans = self.call(WELFARE_CLIENT, "GET", f"CarePlan?supporting-info={sr}")
        if plans.status_code == 200:
            for e in plans.json().get("entry", []):
                step.ids.append(f"CarePlan/{e['resource']['id']}")
        if task["status"] != "requested":
            raise StepFailed(f"Task is {task['status']}, expected requested")

    def _patch(self, step: Step, name: str, want: str, **placeholders: str) -> None:
        task = self.state.task
        resp = self.call(
            WELFARE_CLIENT,
            "PATCH",
            f"Task/{task['id']}",
            body=self.scenario(name, **placeholders),
            headers={"Content-Type": JSON_PATCH, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
        )
        task = self.state.task = self.expect(resp, 200, step)
        business = ",".join(c.get("code", "") for c in (task.get("businessStatus") or {}).get("coding", []))
        step.status += f", {task.get('status')}" + (f" ({business})" if business else "")
        step.ids.append(f"Task/{task['id']}/_history/{task['meta']['versionId']}")
        step.urls.append(self.url(f"Task/{task['id']}/_history"))
        if task.get("status") != want:
            raise StepFailed(f"Task is {task.get('status')}, expected {want}")

    def accept(self, step: Step) -> None:
        self._patch(step, "02-accept.patch.json", "accepted")

    def intake(self, step: Step) -> None:
        self._patch(step, "03-intake-held.patch.json", "in-progress")

    def positive_health(self, step: Step) -> None:
        codes = []
        for key, name in (
            ("intake-id", "04a-positive-health-intake.json"),
            ("closure-id", "04b-positive-health-closure.json"),
        ):
            body = self.scenario(name, **{"patient-id": self.state.patient})
            resp = self.call(WELFARE_CLIENT, "POST", "QuestionnaireResponse", body=body)
            codes.append(str(resp.status_code))
            created = _json(resp)
            if resp.status_code != 201:
                step.status = ", ".join(codes)
                raise StepFailed(f"{name}: {resp.status_code} {_outcome_text(created)}")
            self.state.questionnaires[key] = created["id"]
            step.ids.append(f"QuestionnaireResponse/{created['id']}")
            step.urls.append(self.url(f"QuestionnaireResponse/{created['id']}"))
        step.status = ", ".join(codes)

    def complete(self, step: Step) -> None:
        self._patch(step, "04c-complete.patch.json", "completed", **self.state.questionnaires)

    def feedback(self, step: Step) -> None:
        sr = f"ServiceRequest/{self.state.service_request}"
        body = self.expect(self.call(GP_CLIENT, "GET", f"Communication?based-on={sr}"), 200, step)
        comms = [
            e["resource"]
            for e in body.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Communication"
        ]
        kinds = [
            c.get("code", "")
            for comm in comms
            for cat in comm.get("category", [])
            for c in cat.get("coding", [])
        ]
        step.status += f", {len(comms)} Communications"
        step.ids = [f"Communication/{c['id']}" for c in comms]
        step.urls.append(f"{self.fhir}/Communication?based-on={sr}")
        step.detail = "categories: " + ", ".join(kinds)
        if len(comms) < 3:
            raise StepFailed(
                f"expected 3 feedback Communications (accepted, intake-held, completed), got {len(comms)}"
            )

    def v2(self, step: Step) -> None:
        message = (self.examples / "v2" / V2_FILE).read_bytes()
        if self.unique:
            message = _unique_v2(message, self.unique)
        resp = self.http.post(
            f"{self.root}/v2",
            content=message,
            headers={"Content-Type": ER7, "Authorization": f"Bearer {self.token(V2_CLIENT)}"},
        )
        step.status = str(resp.status_code)
        self.ack = resp.text
        segments = {s.split("|", 1)[0]: s.split("|") for s in re.split(r"\r\n|\r|\n", self.ack) if s}
        msa = segments.get("MSA", [])
        code = msa[1] if len(msa) > 1 else "?"
        step.status += f", ACK {code}"
        if len(msa) > 2:
            step.ids.append(f"MSA-2 {msa[2]}")
        if resp.status_code != 200 or code != "AA":
            raise StepFailed(f"expected ACK AA, got {resp.status_code} {code}")
        self.v2_identifier = _rf1_6(message) if self.unique else ""
        step.urls.append(f"{self.fhir}/ServiceRequest?requester:missing=false&_sort=-_lastUpdated")
        step.detail = "REF^I12 v2.5 from Batau-Noord, mapped by mappings/v2-ref-i12.yaml"

    def withdraw_open_referrals(self) -> list[str]:
        """Against a shared gateway: cancel (as the referring practice) every referral this run
        made whose Task is still open, so no welfare worklist keeps a demo referral. Returns the
        Tasks cancelled; errors are left for the summary, which already names the failed step."""
        cancelled = []
        referrals = [(GP_CLIENT, self.state.service_request)]
        if self.v2_identifier:
            found = self.call(V2_CLIENT, "GET", f"ServiceRequest?identifier={self.v2_identifier}")
            entries = _json(found).get("entry", []) if found.status_code == 200 else []
            referrals += [(V2_CLIENT, e["resource"]["id"]) for e in entries if e.get("resource")]
        for client_id, sr_id in referrals:
            if not sr_id:
                continue
            tasks = _json(self.call(client_id, "GET", f"Task?focus=ServiceRequest/{sr_id}")).get("entry", [])
            for task in (e.get("resource") or {} for e in tasks):
                if task.get("resourceType") != "Task" or task.get("status") in FINAL_TASK_STATES:
                    continue
                resp = self.call(
                    client_id,
                    "PATCH",
                    f"Task/{task['id']}",
                    body=self.scenario("05-cancel-by-gp.patch.json"),
                    headers={"Content-Type": JSON_PATCH, "If-Match": f'W/"{task["meta"]["versionId"]}"'},
                )
                if resp.status_code == 200:
                    cancelled.append(f"Task/{task['id']}")
        return cancelled

    def unroutable(self, step: Step) -> None:
        resp = self.call(GP_CLIENT, "POST", "", body=self.scenario("07-unroutable-address.json"))
        body = self.expect(resp, 422, step)
        issue = (body.get("issue") or [{}])[0]
        step.status += f" {issue.get('code', '?')}"
        step.detail = f"refused as expected: {issue.get('diagnostics', '')}"
        if issue.get("code") != "business-rule":
            raise StepFailed(f"expected issue code business-rule, got {issue.get('code')}")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _outcome_text(body: dict[str, Any]) -> str:
    if body.get("resourceType") != "OperationOutcome":
        return ""
    return "; ".join(f"{i.get('code')}: {i.get('diagnostics', '')}" for i in body.get("issue", []))[:300]


def _rf1_6(message: bytes) -> str:
    """The referral number of a REF^I12 (RF1-6)."""
    for line in re.split(rb"\r\n|\r|\n", message):
        fields = line.split(b"|")
        if fields[0] == b"RF1" and len(fields) > 6:
            return fields[6].decode()
    return ""


def _unique_v2(message: bytes, suffix: str) -> bytes:
    """A new MSH-10 and RF1-6, so a gateway that saw the example before treats it as new."""
    lines = re.split(rb"(\r\n|\r|\n)", message)
    out = []
    for line in lines:
        fields = line.split(b"|")
        if fields[0] == b"MSH" and len(fields) > 9:
            fields[9] += b"-" + suffix.encode()
        if fields[0] == b"RF1" and len(fields) > 6:
            fields[6] += b"-" + suffix.encode()
        out.append(b"|".join(fields))
    return b"".join(out)


def play(player: LoopPlayer, console: Console) -> list[Step]:
    """Run every step under a progress display; returns the steps with their outcomes."""
    plan = player.steps()
    chain_broken = False
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("playing the WoR loop", total=len(plan))
        for step, action, chained in plan:
            progress.update(bar, description=step.title)
            if chained and chain_broken:
                step.skipped = True
                step.detail = "skipped: an earlier step of the loop failed"
            else:
                try:
                    action(step)
                    step.ok = True
                except (StepFailed, httpx.HTTPError, httpx.InvalidURL, OSError, KeyError, ValueError) as exc:
                    step.detail = (
                        f"{type(exc).__name__}: {exc}" if not isinstance(exc, StepFailed) else str(exc)
                    )
                    chain_broken = chain_broken or chained
            mark = "[green]✓[/]" if step.ok else ("[yellow]-[/]" if step.skipped else "[red]✗[/]")
            progress.console.print(f"{mark} {step.key:<16} {step.title:<22} {step.status:<28} {step.detail}")
            if step.key == "v2" and player.ack:
                progress.console.print(
                    Panel(player.ack.replace("\r", "\n").strip(), title="ACK from POST /v2", expand=False)
                )
            progress.advance(bar)
    return steps_only(plan)


def steps_only(plan: list[tuple[Step, Callable[[Step], None], bool]]) -> list[Step]:
    return [step for step, _, _ in plan]


def summary(steps: list[Step]) -> Table:
    table = Table(title="Welzijn op Recept loop — summary", show_lines=True, expand=True)
    table.add_column("step", no_wrap=True)
    table.add_column("sent", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("came back", overflow="fold")
    table.add_column("ids", overflow="fold")
    table.add_column("read it at", overflow="fold")
    for step in steps:
        verdict = "[green]ok[/]" if step.ok else ("[yellow]skipped[/]" if step.skipped else "[red]FAILED[/]")
        table.add_row(
            f"{verdict} {step.key}",
            step.sent,
            step.expected,
            step.status,
            "\n".join(step.ids),
            "\n".join(step.urls),
        )
    return table


@click.command("demo")
@click.option(
    "--base-url",
    default=None,
    help="Play against a running gateway (e.g. http://127.0.0.1:8080/fhir) instead of starting one.",
)
@click.option("--port", type=int, default=None, help="Port for the temporary gateway (default: a free one).")
@click.option(
    "--examples-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Where scenarios/, v2/ and clients/ are (default: the repository's examples/).",
)
def demo(base_url: str | None, port: int | None, examples_dir: Path | None) -> None:
    """Play a GP practice and a welfare organisation through the whole WoR loop."""
    examples = examples_dir or _examples_dir()
    missing = [f"{examples / n}" for n in ("scenarios", "v2", "clients") if not (examples / n).is_dir()]
    if missing:
        raise click.ClickException(f"not an examples directory, missing: {', '.join(missing)}")
    console = Console() if sys.stdout.isatty() else Console(width=200, highlight=False)
    started = time.monotonic()
    if base_url:
        root, _ = split_base(base_url)
        # A gateway that already holds the example referral would answer the resend: make it new.
        steps = _run(root, examples, console, unique=uuid.uuid4().hex[:8])
    else:
        console.print("starting a gateway on a temporary SQLite database …")
        with temporary_gateway(port) as root:
            console.print(f"gateway at {root}/fhir (stops when the demo ends)")
            steps = _run(root, examples, console, unique=None)
    console.print(summary(steps))
    failed = [s.key for s in steps if not s.ok]
    took = time.monotonic() - started
    if failed:
        console.print(f"[red]{len(failed)} step(s) failed: {', '.join(failed)}[/] ({took:.1f} s)")
        sys.exit(1)
    console.print(f"[green]all {len(steps)} steps answered as expected[/] ({took:.1f} s)")


def _examples_dir() -> Path:
    """The CLI's `examples_dir` setting; outside the CLI the default of `Settings`."""
    ctx = click.get_current_context(silent=True)
    return (settings_of(ctx) if ctx else Settings.from_env()).examples_dir


def _run(root: str, examples: Path, console: Console, unique: str | None) -> list[Step]:
    """Play the loop; on a shared gateway (`unique`) withdraw what this run left open."""
    with httpx.Client(timeout=30) as http:
        player = LoopPlayer(http, root, examples, unique)
        steps = play(player, console)
        if unique and (player.state.service_request or player.v2_identifier):
            try:
                withdrawn = player.withdraw_open_referrals()
            except (StepFailed, httpx.HTTPError, KeyError, ValueError) as exc:
                console.print(f"[yellow]could not withdraw this run's open referrals: {exc}[/]")
            else:
                console.print(
                    f"withdrew this run's open referral(s), cancelled as the practice: {', '.join(withdrawn)}"
                    if withdrawn
                    else "no referral of this run is left open"
                )
        return steps


if __name__ == "__main__":
    demo()
