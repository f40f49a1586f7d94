"""The console in a real headless Chromium (Debian `chromium`, driven by Playwright for Python).

A gateway subprocess with one practice Endpoint pointed at a closed port and one delivery
attempt allowed, so the first feedback push becomes a dead letter; the browser signs in with
an admin token, filters the referrals, requeues the dead letter and takes a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import bearer, free_port

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None or not _has_playwright():
        reason = "needs Debian chromium (apt-get install -y chromium) and `pip install playwright`"
        if os.environ.get("CI"):
            pytest.fail(f"under CI the browser test must run: {reason}")
        pytest.skip(reason)
    return path


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_OUTBOX_MAX_ATTEMPTS": "1",  # the first failed push is a dead letter
        "GATEWAY_LOG_JSON": "false",
    }
    env.pop("GATEWAY_BASE_URL", None)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _scenario(name: str) -> Any:
    return orjson.loads((SCENARIOS / name).read_bytes())


def _dead_letter(base: str) -> str:
    """Point De Geinoord's feedback Endpoint at a closed port, refer and accept: the push dies."""
    admin, gp, coach = (
        bearer(base),
        bearer(base, "praktijk-de-geinoord-his"),
        bearer(base, "welzijn-de-brug-cms"),
    )
    j = {"content-type": "application/fhir+json"}
    endpoint = httpx.get(f"{base}/fhir/Endpoint/praktijk-de-geinoord-fhir", headers=admin).json()
    endpoint["address"] = f"http://127.0.0.1:{free_port()}/fhir/wor-feedback"
    assert (
        httpx.put(f"{base}/fhir/Endpoint/{endpoint['id']}", json=endpoint, headers={**admin, **j}).status_code
        == 200
    )
    resp = httpx.post(f"{base}/fhir", json=_scenario("01-referral-bundle.json"), headers={**gp, **j})
    assert resp.status_code == 200, resp.text
    sr = resp.json()["entry"][2]["resource"]["id"]
    task = httpx.get(f"{base}/fhir/Task", params={"focus": f"ServiceRequest/{sr}"}, headers=coach).json()[
        "entry"
    ][0]["resource"]
    resp = httpx.patch(
        f"{base}/fhir/Task/{task['id']}",
        content=(SCENARIOS / "02-accept.patch.json").read_bytes(),
        headers={**coach, "content-type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = httpx.get(f"{base}/admin/outbox", params={"status": "dead"}, headers=admin).json()["rows"]
        if rows:
            return str(rows[0]["eventId"])
        time.sleep(0.3)
    pytest.fail("no dead letter appeared within 30 s")


def test_console_in_a_real_browser(console_server: str, tmp_path: Path) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    base = console_server
    event_id = _dead_letter(base)
    token = bearer(base)["Authorization"].removeprefix("Bearer ")
    shot = tmp_path / "console.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/console/referrals")
            assert "/console/login" in page.url
            page.fill("textarea[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_selector("table.referrals")
            assert page.locator("tr[data-task]").count() == 1
            assert "geaccepteerd" in page.inner_text("tr[data-task]")
            page.select_option("select[name=state]", "closed")
            page.click("form.filters button[type=submit]")
            page.wait_for_load_state()
            assert "state=closed" in page.url
            assert page.locator("tr[data-task]").count() == 0
            page.select_option("select[name=state]", "accepted")
            page.click("form.filters button[type=submit]")
            page.wait_for_selector("tr[data-task]")
            page.screenshot(path=str(tmp_path / "referrals.png"), full_page=True)

            page.click("nav >> text=Vastgelopen")
            row = page.locator(f'tr[data-event="{event_id}"]')
            assert row.count() == 1
            row.locator("button").click()
            page.wait_for_selector("p.flash")
            assert "weer in de wachtrij" in page.inner_text("p.flash")
            page.screenshot(path=str(shot), full_page=True)

            page.click("nav >> text=Rapportage")
            page.select_option("select[name=municipality]", "Nieuwegein")
            page.click("form.filters button[type=submit]")
            page.wait_for_selector("figure.chart svg")
            page.screenshot(path=str(tmp_path / "reports.png"), full_page=True)
        finally:
            browser.close()
    rows = httpx.get(f"{base}/admin/outbox", headers=bearer(base)).json()["rows"]
    row = next(r for r in rows if r["eventId"] == event_id)
    assert row["attempts"] <= 1  # requeued with a fresh budget (it may have died again since)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    if os.environ.get("CONSOLE_SCREENSHOT_DIR"):  # keep them for a human to look at
        for name in ("console.png", "referrals.png", "reports.png"):
            shutil.copy(tmp_path / name, Path(os.environ["CONSOLE_SCREENSHOT_DIR"]) / name)
