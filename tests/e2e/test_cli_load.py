"""`fhir-gateway load --base-url` against a real, uvicorn-served gateway: with a registered
client (`--client`, minted as `fhir-gateway token` does) or a token (`--token`), and a clear
message without either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import bearer

ROOT = Path(__file__).resolve().parents[2]
REFERRAL = ROOT / "examples" / "scenarios" / "01-referral-bundle.json"
DIRECTORY = ROOT / "examples" / "directory" / "directory.json"

pytestmark = pytest.mark.e2e


def cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: another working directory, the gateway's database named
    (its development signing key lies beside it)."""
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "fhir_gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT / "examples",
    )


def test_load_base_url_with_client_or_token(
    server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    base, _ = server
    db = tmp_path / "gw.db"  # what the fixture serves

    anonymous = cli("load", "--base-url", f"{base}/fhir", str(REFERRAL), db=db)
    assert anonymous.returncode == 1 and "401" in anonymous.stdout, anonymous.stdout + anonymous.stderr
    assert "give --client CLIENT_ID or --token" in anonymous.stderr
    assert "Traceback" not in anonymous.stderr

    as_gp = cli(
        "load", "--base-url", f"{base}/fhir", "--client", "praktijk-de-geinoord-his", str(REFERRAL), db=db
    )
    assert as_gp.returncode == 0, as_gp.stdout + as_gp.stderr
    assert as_gp.stdout.startswith("200 ") and "3 entries" in as_gp.stdout

    token = cli("token", "gateway-admin", db=db)
    assert token.returncode == 0, token.stderr
    with_token = cli(
        "load", "--base-url", f"{base}/fhir", "--token", token.stdout.strip(), str(DIRECTORY), db=db
    )
    assert with_token.returncode == 0, with_token.stdout + with_token.stderr

    found = httpx.get(f"{base}/fhir/ServiceRequest?identifier=VRW-2026-0001", headers=bearer(base)).json()
    assert [e["resource"]["status"] for e in found["entry"]] == ["active"]
    wrong = cli("load", "--base-url", f"{base}/fhir", "--token", "not-a-token", str(DIRECTORY), db=db)
    assert wrong.returncode == 1 and wrong.stdout.startswith("401 ")
