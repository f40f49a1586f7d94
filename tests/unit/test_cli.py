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
