"""`/docs` and `/redoc` in a real headless Chromium with every address but the gateway cut off.

Hospital and vendor test networks often have no internet: the pages must render from what the
gateway serves itself. Every request the browser makes is routed through a handler that aborts
anything not addressed to the gateway and records it; none may be attempted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    """Debian's chromium and playwright, or a skip (a failure under CI)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        reason = "needs Debian chromium (apt-get install -y chromium) and `pip install playwright`"
        if os.environ.get("CI"):
            pytest.fail(f"under CI the browser test must run: {reason}")
        pytest.skip(reason)
    return path


def serve(tmp_path: Path, **env: str) -> Iterator[str]:
    """`fhir-gateway serve` on a free port with `env` added; yields its base URL."""
    port = free_port()
    environ = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}", **env}
    environ.pop("GATEWAY_BASE_URL", None)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway.cli", "serve", "--port", str(port)],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    yield from serve(tmp_path)


class OfflineBrowser:
    """A page whose requests reach only `base`; the rest are aborted and kept in `outside`."""

    def __init__(self, browser: Any, base: str) -> None:
        self.origin = urlsplit(base).netloc
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.blocked: list[str] = []  # stopped by the page's Content-Security-Policy, not sent
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.route("**/*", self._route)
        self.page.on("requestfailed", self._failed)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == self.origin or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("internetdisconnected")

    def _failed(self, request: Any) -> None:
        csp = (request.failure or "").lower() in ("csp", "net::err_blocked_by_csp")
        (self.blocked if csp else self.failed).append(request.url)

    def check(self) -> None:
        assert self.outside == [], f"the page wanted the internet: {self.outside}"
        assert self.failed == [], f"requests failed: {self.failed}"
        assert self.errors == [], f"script errors: {self.errors}"
        assert all(urlsplit(u).netloc != self.origin for u in self.blocked), self.blocked


def test_swagger_ui_and_redoc_render_without_internet(gateway: str, tmp_path: Path) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            docs = OfflineBrowser(browser, gateway)
            docs.page.goto(f"{gateway}/docs")
            docs.page.wait_for_selector(".opblock", timeout=60_000)
            assert docs.page.locator(".opblock").count() > 50  # every type's interactions
            task_read = docs.page.locator('.opblock-get:has([data-path="/fhir/Task/{id}"])')
            assert task_read.count() == 1
            task_read.locator(".opblock-summary").first.click()  # opens: parameters render
            docs.page.wait_for_selector(".opblock.is-open .parameters", timeout=30_000)
            opened = docs.page.inner_text(".opblock.is-open")
            assert "If-None-Match" in opened and "Logical id of the Task" in opened
            docs.page.screenshot(path=str(tmp_path / "docs.png"))
            docs.check()

            redoc = OfflineBrowser(browser, gateway)
            redoc.page.goto(f"{gateway}/redoc")
            redoc.page.wait_for_selector("[data-section-id]", timeout=60_000)
            assert redoc.page.locator("h1").first.inner_text().startswith("fhir-gateway")
            assert redoc.page.locator("[data-section-id^='tag/Task']").count() >= 1
            assert "search Task" in redoc.page.inner_text("body")
            redoc.page.screenshot(path=str(tmp_path / "redoc.png"))
            redoc.check()
        finally:
            browser.close()
