"""Every command, given bad input, says what is wrong in one line and exits non-zero: no traceback,
and no database or key left behind in GATEWAY_HOME.

The commands are found by walking the click group, so a new command fails
`test_every_command_has_bad_input` until it gets its cases in `BAD_INPUT` here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_gateway.cli import main
from fhir_gateway.commands.common import walk

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
REFERRAL = str(SCENARIOS / "01-referral-bundle.json")
PATCH = str(SCENARIOS / "02-accept.patch.json")
V2_OK = str(ROOT / "examples" / "v2" / "ref-i12-v25.hl7")
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none"
NOWHERE = "http://127.0.0.1:9/fhir"  # discard port: connection refused

# Placeholders filled per test run with files in a scratch folder (see `files`).
NOT_JSON, LIST_JSON, NO_ENTRY_RESOURCE, PATIENT, TASK = "@not-json", "@list", "@bundle", "@patient", "@task"
NOT_HL7, NO_PID, BAD_YAML, EMPTY_DIR, SCRATCH_DB = "@not-hl7", "@no-pid", "@bad-yaml", "@empty-dir", "@db"
CLIENT = ["--role", "gp-practice", "--scope", "system/Task.rs"]

BAD_INPUT: dict[tuple[str, ...], list[list[str]]] = {
    (): [["--no-such-option"], ["no-such-command"]],
    ("version",): [["surplus-argument"]],
    ("db",): [["no-such-command"]],
    ("db", "upgrade"): [["--database-url", UNREACHABLE]],
    ("serve",): [["--database-url", UNREACHABLE], ["--port", "eighty"]],
    ("load",): [
        [NOT_JSON, "--database-url", SCRATCH_DB],
        [LIST_JSON, "--database-url", SCRATCH_DB],
        [PATCH, "--database-url", SCRATCH_DB],
        [REFERRAL, "--database-url", UNREACHABLE],
        [REFERRAL, "--base-url", NOWHERE],
        [REFERRAL, "--base-url", "not a url"],
        [REFERRAL, "--base-url", NOWHERE, "--client", "gateway-admin"],  # no database in the home
        [REFERRAL, "--client", "gateway-admin"],  # without --base-url
        [REFERRAL, "--base-url", NOWHERE, "--client", "a", "--token", "b"],
    ],
    ("validate",): [[NOT_JSON], [PATCH], [LIST_JSON], [EMPTY_DIR], ["/no/such/file.json"]],
    ("map",): [  # the six of issue 16, and more
        ["/no/such/file.json"],
        [NOT_JSON],
        [LIST_JSON],
        [PATCH],
        [NO_ENTRY_RESOURCE],
        [PATIENT],
        [TASK],
        [TASK, "--milestone", "no-such-milestone"],
        [REFERRAL, "--mapping", "no-such-mapping"],
        [REFERRAL, "--directory", NOT_JSON],
        [REFERRAL, "--directory", PATIENT],
        [EMPTY_DIR],
    ],
    ("demo",): [["--base-url", NOWHERE], ["--base-url", "not a url"], ["--examples-dir", EMPTY_DIR]],
    ("report",): [
        ["--municipality", "Nieuwegein", "--period", "soon"],
        ["--municipality", "Nieuwegein", "--period", "2026"],  # no database in the home
        ["--municipality", "Nieuwegein", "--period", "2026", "--base-url", NOWHERE],
        ["--municipality", "Nieuwegein", "--period", "2026", "--csv", "--delimiter", ";;"],
    ],
    ("outbox",): [["no-such-command"]],
    ("outbox", "list"): [[], ["--status", "no-such-status"], ["--database-url", UNREACHABLE]],
    ("outbox", "retry"): [["some-event-id"], []],
    ("outbox", "purge"): [["--delivered-older-than", "7"], []],
    ("worker",): [["--once"], ["--once", "--database-url", UNREACHABLE]],
    ("clients",): [[], ["no-such-command"]],
    ("clients", "list"): [[], ["--database-url", UNREACHABLE]],
    ("clients", "add"): [
        ["new-his", *CLIENT, "--jwks", NOT_JSON],
        ["new-his", *CLIENT, "--jwks", PATIENT],  # JSON, but no database in the home
    ],
    ("clients", "load"): [[], [EMPTY_DIR]],
    ("clients", "disable"): [["gateway-admin"]],
    ("clients", "enable"): [["gateway-admin"]],
    ("token",): [["gateway-admin"], ["gateway-admin", "--database-url", UNREACHABLE], []],
    ("v2",): [["no-such-command"]],
    ("v2", "parse"): [[NOT_HL7], [NOT_JSON], ["--structure", NO_PID], [EMPTY_DIR]],
    ("v2", "map"): [[NOT_HL7], [NO_PID], [V2_OK, "--mapping", BAD_YAML]],
    ("mllp",): [
        ["--database-url", UNREACHABLE, "--port", "0"],
        ["--tls-cert", NOT_JSON, "--tls-key", NOT_JSON, "--database-url", UNREACHABLE],
        ["--tls-cert", NOT_JSON],
    ],
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "empty").mkdir()
    contents = {
        NOT_JSON: "this is not JSON\n",
        LIST_JSON: "[1, 2, 3]",
        NO_ENTRY_RESOURCE: '{"resourceType": "Bundle", "type": "collection", "entry": [{}]}',
        PATIENT: '{"resourceType": "Patient"}',
        TASK: '{"resourceType": "Task", "status": "accepted", "intent": "order"}',
        NOT_HL7: "hello\n",
        NO_PID: "\r".join(
            s for s in Path(V2_OK).read_text().replace("\n", "\r").split("\r") if not s.startswith("PID")
        ),
        BAD_YAML: "message: [",
    }
    paths = {}
    for i, (key, text) in enumerate(contents.items()):
        path = scratch / f"file{i}.txt"
        path.write_text(text)
        paths[key] = str(path)
    paths[EMPTY_DIR] = str(scratch / "empty")
    paths[SCRATCH_DB] = f"sqlite:///{scratch / 'db' / 'gw.db'}"
    return paths


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """`serve` and `mllp` configure logging onto the runner's stream; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def cases() -> list[tuple[tuple[str, ...], list[str]]]:
    return [(path, args) for path, argsets in BAD_INPUT.items() for args in argsets]


def test_every_command_has_bad_input() -> None:
    commands = {path for path, _ in walk(main)}
    assert commands == set(BAD_INPUT), (
        f"commands without bad-input cases: {sorted(commands - set(BAD_INPUT))}; "
        f"cases for commands that are gone: {sorted(set(BAD_INPUT) - commands)}"
    )


@pytest.mark.parametrize(("path", "args"), cases(), ids=lambda v: " ".join(v)[-60:])
def test_bad_input_is_one_line_not_a_traceback(
    path: tuple[str, ...],
    args: list[str],
    files: dict[str, str],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [*path, *(files.get(a, a) for a in args)]
    env = {
        "GATEWAY_HOME": str(home),
        "GATEWAY_DATABASE_URL": None,
        "GATEWAY_TOKEN_KEY": None,
        "GATEWAY_TOKEN_KEY_FILE": None,
        "GATEWAY_ACCESS_TOKEN": None,
    }
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not the home: nothing may land here either
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=False)  # an exception fails here
    assert result.exit_code != 0, (argv, result.output)
    assert "Traceback" not in result.output, (argv, result.output)
    assert any(word in result.output for word in ("Error", "FAILED", "INVALID", "failed")), result.output
    assert not any((tmp_path / "elsewhere").iterdir()), f"{argv} wrote into the current directory"
    assert not any(home.iterdir()), f"{argv} left {list(home.rglob('*'))} in GATEWAY_HOME"
