"""The console in a real headless Chromium (Debian `chromium`, driven by Playwright for Python).

A gateway subprocess with one practice Endpoint pointed at a closed port and one delivery
attempt allowed, so the first feedback push becomes a dead letter, plus an HL7 v2 referral; the
browser signs in with an admin token, filters the referrals, opens one referral's loop,
requeues the dead letter, and checks the layout at 360 px and at desktop width (no horizontal
scroll of the document, header as wide as the window). The screenshots it takes are the ones in
the README's (docs/screenshots/) when run with `CONSOLE_SCREENSHOT_DIR=docs/screenshots`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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
# the README's screenshots: CONSOLE_SCREENSHOT_DIR=docs/screenshots refreshes them; a plain run
# keeps the working tree clean
SHOTS = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "console-screenshots")
PASSWORD = "browser test password"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 360, "height": 740}
LOOP_PARTS = ("service-request", "task-history", "careplan", "communications", "v2-messages", "audit")
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
        "GATEWAY_CONSOLE_PASSWORD": PASSWORD,
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


def _v2_referral(base: str) -> None:
    """A v2.5 REF^I12 from Batau-Noord over POST /v2: the v2 journal gets a row for the loop."""
    ack = httpx.post(
        f"{base}/v2",
        content=(ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes(),
        headers={**bearer(base, "praktijk-batau-his"), "content-type": "x-application/hl7-v2+er7"},
    )
    assert ack.status_code == 200 and "MSA|AA" in ack.text, ack.text


LAYOUT = """() => {
  const header = document.querySelector('header.top').getBoundingClientRect();
  return {scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
          height: window.innerHeight, header_width: header.width, header_left: header.left,
          header_height: header.height};
}"""


def assert_layout(page: Any, where: str) -> None:
    """No horizontal scroll of the document; the header spans the window and leaves room."""
    m = page.evaluate(LAYOUT)
    assert m["scroll"] <= m["inner"], f"{where}: document scrolls sideways ({m})"
    assert m["header_left"] == 0 and m["header_width"] >= m["inner"] - 1, (
        f"{where}: header not full width ({m})"
    )
    assert m["header_height"] <= 0.3 * m["height"], f"{where}: header covers too much ({m})"


def luminance(css: str) -> float:
    """Relative luminance of an `rgb(r, g, b)` / `rgba(...)` colour (WCAG)."""
    parts = [float(x) / 255 for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in parts]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(page: Any, selector: str) -> float:
    colour, background = page.eval_on_selector(
        selector, "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    high, low = sorted((luminance(colour), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)
    data = (SHOTS / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_console_in_a_real_browser(console_server: str, tmp_path: Path) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    base = console_server
    refused = httpx.post(
        f"{base}/fhir",
        json=_scenario("07-unroutable-address.json"),  # before the others: its Patient is new
        headers={**bearer(base, "praktijk-de-geinoord-his"), "content-type": "application/fhir+json"},
    )
    assert refused.status_code == 422, refused.text
    event_id = _dead_letter(base)
    _v2_referral(base)
    token = bearer(base)["Authorization"].removeprefix("Bearer ")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=DESKTOP)
            page.goto(f"{base}/console/referrals")
            assert "/console/login" in page.url
            assert_layout(page, "login, desktop")
            page.fill("textarea[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_selector("table.referrals")
            assert page.locator("tr[data-task]").count() == 2
            assert "geaccepteerd" in page.inner_text("table.referrals")
            page.select_option("select[name=state]", "closed")
            page.click("form.filters button[type=submit]")
            page.wait_for_load_state()
            assert "state=closed" in page.url
            assert page.locator("tr[data-task]").count() == 0
            page.select_option("select[name=state]", "")
            page.click("form.filters button[type=submit]")
            page.wait_for_selector("tr[data-task]")
            assert_layout(page, "referrals, desktop")
            shoot(page, "console-referrals.png")
            hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
            assert hrefs and all(h.startswith("/console") or h.startswith("#") for h in hrefs), hrefs

            page.locator("tr[data-stage=accepted] a.open").click()  # the FHIR referral with the dead push
            page.wait_for_selector("#task-history")
            assert "/console/referrals/" in page.url
            for part in LOOP_PARTS:
                assert page.locator(f"section#{part}").is_visible(), part
            assert page.locator("#task-history tr[data-version]").count() == 2
            assert "aangevraagd" in page.inner_text("#task-history")
            assert "onbezorgbaar" in page.inner_text("#communications")  # the dead letter
            assert page.locator("#audit tbody tr").count() >= 2
            assert_layout(page, "referral, desktop")
            shoot(page, "console-referral.png")
            desktop_referral = page.url

            page.click("nav >> text=Vastgelopen")
            row = page.locator(f'tr[data-event="{event_id}"]')
            assert row.count() == 1
            assert "postcode" in page.inner_text("table.refusals td.reason")  # why it was refused
            assert_layout(page, "stuck, desktop")
            shoot(page, "console-stuck.png")
            row.locator("button").click()
            page.wait_for_selector("p.flash")
            assert "weer in de wachtrij" in page.inner_text("p.flash")

            page.click("nav >> text=Rapportage")
            page.select_option("select[name=municipality]", "Nieuwegein")
            page.click("form.filters button[type=submit]")
            page.wait_for_selector("figure.chart svg")
            assert_layout(page, "reports, desktop")
            shoot(page, "console-reports.png")

            phone(page, base, desktop_referral)
        finally:
            browser.close()
    rows = httpx.get(f"{base}/admin/outbox", headers=bearer(base)).json()["rows"]
    row = next(r for r in rows if r["eventId"] == event_id)
    assert row["attempts"] <= 1  # requeued with a fresh budget (it may have died again since)


def phone(page: Any, base: str, referral_url: str) -> None:
    """The same pages at 360 px: the v2 referral's loop, search, the lists, sign-in."""
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/console/referrals")
    page.wait_for_selector("table.referrals")
    assert_layout(page, "referrals, 360 px")
    shoot(page, "console-referrals-360.png")
    page.locator("tr[data-task]").first.locator("a.open").click()  # newest first: the v2 referral
    page.wait_for_selector("#v2-messages")
    for part in LOOP_PARTS:
        assert page.locator(f"section#{part}").is_visible(), part
    assert "REF^I12" in page.inner_text("#v2-messages")
    assert_layout(page, "referral, 360 px")
    shoot(page, "console-referral-360.png")
    page.goto(referral_url)
    assert_layout(page, "other referral, 360 px")
    for path in ("/console/stuck", "/console/reports?municipality=Nieuwegein", "/console/search"):
        page.goto(f"{base}{path}")
        assert_layout(page, f"{path}, 360 px")
    page.fill("input[name=bsn]", "999999151")
    page.click("text=Zoek BSN")
    page.wait_for_load_state()
    assert "999999151" not in page.content()
    page.click("form.who button[type=submit]")  # sign out: the sign-in page with a password field
    page.goto(f"{base}/console/login")
    page.fill("input[name=password]", "visible text")
    assert contrast(page, "input[name=password]") >= 4.5  # dark on light, not white on light
    assert_layout(page, "login, 360 px")
    shoot(page, "console-login-360.png")
