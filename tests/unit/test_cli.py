"""The command line: exit codes and output of version, db upgrade, load, validate, map."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from fhir_gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"


def run(*args: str, db: Path | None = None) -> object:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{db}"} if db else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_version_and_help() -> None:
    assert run("version").output.startswith("fhir-gateway ")
    for cmd in ((), ("db",), ("load",), ("serve",), ("validate",), ("map",)):
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_db_upgrade_and_load(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    result = run("db", "upgrade", db=db)
    assert result.exit_code == 0 and "schema at revision" in result.output
    result = run("load", str(ROOT / "examples" / "directory"), db=db)
    assert result.exit_code == 0, result.output
    result = run("load", str(SCENARIOS / "08-invalid-bsn.json"), db=db)
    assert result.exit_code == 1 and "BSN" in result.output


def test_db_upgrade_reports_unreachable_database() -> None:
    result = CliRunner().invoke(
        main, ["db", "upgrade"], env={"GATEWAY_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    assert result.exit_code == 1 and "upgrade failed" in result.output


def test_validate_exit_codes() -> None:
    ok = run("validate", str(SCENARIOS / "01-referral-bundle.json"))
    assert ok.exit_code == 0 and ok.output.startswith("valid")
    bad = run("validate", str(SCENARIOS / "08-invalid-bsn.json"))
    assert bad.exit_code == 1 and "identifier[0].value" in bad.output


def test_map_routes_and_maps_offline() -> None:
    result = run("map", str(SCENARIOS / "01-referral-bundle.json"))
    assert result.exit_code == 0, result.output
    mapped = orjson.loads(result.output)
    assert mapped["servicerequest-to-task"]["owner"]["reference"] == "Organization/welzijn-de-brug"
    assert mapped["servicerequest-to-careplan"]["resourceType"] == "CarePlan"
    unroutable = run("map", str(SCENARIOS / "07-unroutable-address.json"))
    assert unroutable.exit_code == 1 and "cannot route" in unroutable.output


# -- issue 16: the same settings from any directory ---------------------------------------------
def _home_env(home: Path | None) -> dict[str, str | None]:
    clean: dict[str, str | None] = {
        k: None for k in ("GATEWAY_DATABASE_URL", "GATEWAY_TOKEN_KEY", "GATEWAY_TOKEN_KEY_FILE")
    }
    return {**clean, "GATEWAY_HOME": str(home) if home else None}


def test_token_and_clients_outside_the_home_create_nothing(tmp_path: Path, monkeypatch: object) -> None:
    """Run in a directory that is not the gateway's: a clear message, exit 1, no var/ left."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # type: ignore[attr-defined]
    for args in (["token", "gateway-admin"], ["clients"], ["clients", "load"], ["outbox", "list"]):
        result = CliRunner().invoke(main, args, env=_home_env(None), catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert f"no database at {elsewhere / 'var' / 'gateway.db'}" in result.output
        assert "GATEWAY_HOME" in result.output
        assert list(elsewhere.iterdir()) == []


def test_token_from_any_directory_with_gateway_home(tmp_path: Path, monkeypatch: object) -> None:
    from fhir_gateway.security.tokens import dev_key_path, load_gateway_keys
    from fhir_gateway.settings import Settings

    home, elsewhere = tmp_path / "gw", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # type: ignore[attr-defined]
    env = _home_env(home)
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert CliRunner().invoke(main, ["clients", "load"], env=env).exit_code == 0
    # the database is there, the signing key (made by `serve` on first start) is not: refused
    result = CliRunner().invoke(main, ["token", "gateway-admin"], env=env, catch_exceptions=False)
    assert result.exit_code == 1 and "no gateway signing key" in result.output
    key = dev_key_path(Settings(home=home))
    assert not key.exists() and key.parent == (home / "var").resolve()
    load_gateway_keys(Settings(home=home))  # what `serve` does on first start
    via_env = CliRunner().invoke(main, ["token", "gateway-admin"], env=env, catch_exceptions=False)
    via_option = CliRunner().invoke(
        main, ["token", "gateway-admin", "--home", str(home)], env=_home_env(None), catch_exceptions=False
    )
    for result in (via_env, via_option):
        assert result.exit_code == 0, result.output
        assert result.output.count(".") == 2  # a JWT
    assert list(elsewhere.iterdir()) == []


def test_token_refuses_a_database_without_schema(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "gateway.db").write_bytes(b"")
    result = CliRunner().invoke(
        main, ["token", "gateway-admin", "--home", str(tmp_path)], env=_home_env(None)
    )
    assert result.exit_code == 1 and "db upgrade" in result.output
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["gateway.db"]


def test_every_command_takes_the_settings_options() -> None:
    from fhir_gateway.commands.common import walk

    for path, command in walk(main):
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "--database-url" in result.output and "--home" in result.output, path
        names = {p.name for p in command.params}
        assert {"database_url", "home"} <= names, path


def test_serve_takes_database_url(tmp_path: Path) -> None:
    """`serve --database-url` is an option of serve (it was only one of the group)."""
    result = CliRunner().invoke(
        main,
        ["serve", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"],
        env=_home_env(tmp_path),
    )
    assert result.exit_code == 1 and "No such option" not in result.output
    assert "opening the database" in result.output and "Connection refused" in result.output


def test_command_option_wins_over_the_environment(tmp_path: Path) -> None:
    env = {**_home_env(None), "GATEWAY_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    db = tmp_path / "x.db"
    result = run_env(["db", "upgrade", "--database-url", f"sqlite:///{db}"], env)
    assert result.exit_code == 0 and db.is_file()


def run_env(args: list[str], env: dict[str, str | None]) -> object:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


# -- issue 16: validate, v2 parse, report --------------------------------------------------------
def test_validate_says_what_it_skips() -> None:
    result = CliRunner().invoke(main, ["validate", str(SCENARIOS)])
    lines = result.output.splitlines()
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped) == len(list(SCENARIOS.glob("*.patch.json"))) == 5
    assert all("JSON Patch" in line and ".patch.json" in line for line in skipped)
    assert not any(line.startswith("INVALID") and ".patch.json" in line for line in lines)
    assert "INVALID" in result.output and "08-invalid-bsn.json" in result.output  # the rest is validated
    assert "6 valid, 1 invalid, 5 skipped" in result.output
    assert result.exit_code == 1
    clients = CliRunner().invoke(main, ["validate", str(ROOT / "examples" / "clients")])
    assert clients.exit_code == 1 and "client registration" in clients.output
    assert "nothing to validate" in clients.output


def test_v2_parse_structure_error_exits_non_zero(tmp_path: Path) -> None:
    good = ROOT / "examples" / "v2" / "ref-i12-v25.hl7"
    ok = CliRunner().invoke(main, ["v2", "parse", "--structure", str(good)])
    assert ok.exit_code == 0 and "structure ok" in ok.output
    segments = good.read_text().replace("\n", "\r").split("\r")
    broken = tmp_path / "no-pid.hl7"
    broken.write_text("\r".join(s for s in segments if not s.startswith("PID")))
    result = CliRunner().invoke(main, ["v2", "parse", "--structure", str(broken)])
    assert result.exit_code == 1 and "PID" in result.output and "structure errors" in result.output


def test_report_csv_delimiter(tmp_path: Path) -> None:
    from fhir_gateway.commands.report import with_delimiter

    text = 'measure,stratum,value\nreferrals,"Houten; Nieuwegein",12\n"say ""hi""",,3\n'
    assert with_delimiter(text, ";") == (
        'measure;stratum;value\nreferrals;"Houten; Nieuwegein";12\n"say ""hi""";;3\n'
    )
    assert with_delimiter(text, ",") == text
    db = tmp_path / "g.db"
    assert run("db", "upgrade", db=db).exit_code == 0
    args = ["report", "--municipality", "Nieuwegein", "--period", "2026", "--csv"]
    comma = run(*args, db=db)
    semicolon = run(*args, "--delimiter", ";", db=db)
    assert comma.exit_code == semicolon.exit_code == 0, semicolon.output
    header = comma.output.splitlines()[0]
    assert "," in header and semicolon.output.splitlines()[0] == header.replace(",", ";")
    assert len(semicolon.output.splitlines()) == len(comma.output.splitlines()) > 1
    tab = run(*args, "--delimiter", "tab", db=db)
    assert tab.output.splitlines()[0] == header.replace(",", "\t")
