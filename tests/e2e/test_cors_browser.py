"""CORS as a real browser does it: a page from another origin calls the gateway with a token.

The page is served by a second little HTTP server on `localhost` (another origin than the
gateway's `127.0.0.1`); Chromium sends the preflight itself (an Authorization header is not
CORS-safelisted), and the script reads the FHIR answer and its ETag. A page from an origin not
in `GATEWAY_CORS_ORIGINS` gets nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import bearer, free_port
from tests.e2e.test_docs_browser import CHROMIUM_ARGS, chromium, serve

pytestmark = pytest.mark.e2e
PAGE = b"<!doctype html><title>wijkapp</title><p>a browser app of a welfare organisation</p>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def page_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def app_origin() -> Iterator[str]:
    yield from page_server()


@pytest.fixture
def other_origin() -> Iterator[str]:
    yield from page_server()


@pytest.fixture
def gateway(tmp_path: Path, app_origin: str) -> Iterator[str]:
    yield from serve(tmp_path, GATEWAY_CORS_ORIGINS=app_origin)


FETCH = """async ([url, token]) => {
  try {
    const r = await fetch(url, {headers: {Authorization: "Bearer " + token,
                                          Accept: "application/fhir+json", Prefer: "return=representation"}});
    return {status: r.status, etag: r.headers.get("ETag"), type: (await r.json()).resourceType};
  } catch (e) {
    return {error: String(e)};
  }
}"""


def test_a_page_of_an_allowed_origin_reads_fhir_and_etag(
    gateway: str, app_origin: str, other_origin: str
) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    token = bearer(gateway)["Authorization"].removeprefix("Bearer ")
    url = f"{gateway}/fhir/Organization/welzijn-de-brug"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(app_origin)
            got = page.evaluate(FETCH, [url, token])
            assert got == {"status": 200, "etag": 'W/"1"', "type": "Organization"}, got
            refused = page.evaluate(FETCH, [url, "not-a-token"])
            assert refused["status"] == 401 and refused["type"] == "OperationOutcome", refused

            page.goto(other_origin.replace("localhost", "127.0.0.1"))  # not on the list
            blocked = page.evaluate(FETCH, [url, token])
            assert "Failed to fetch" in blocked.get("error", ""), blocked
        finally:
            browser.close()
