"""`/docs` and `/redoc` load nothing from outside the gateway, and are public like /openapi.json.

The browser half (the pages really render with the network cut off) is
tests/e2e/test_docs_browser.py; here the HTML and the asset route are checked over TestClient.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.api.openapi import DOC_ASSETS, doc_assets_dir
from tests.conftest import make_client

# src/href values and url(...) in the pages: each must be a path on this server
REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.fixture
def anonymous(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url, client_id=None) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_refer_only_to_this_server(anonymous: TestClient, page: str) -> None:
    resp = anonymous.get(page)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    refs = [a or b for a, b in REFERENCE.findall(resp.text)]
    assert refs, "the page loads its script from somewhere"
    for ref in refs:
        assert ref.startswith("/"), f"{page} refers to {ref} outside the gateway"
        assert not ref.startswith("//"), ref
        assert anonymous.get(ref).status_code == 200, ref
    assert "googleapis" not in resp.text and "cdn." not in resp.text


def test_swagger_ui_has_no_online_validator_badge(anonymous: TestClient) -> None:
    assert '"validatorUrl": null' in anonymous.get("/docs").text


@pytest.mark.parametrize("name", sorted(DOC_ASSETS))
def test_every_asset_is_served_with_its_type_and_caching(anonymous: TestClient, name: str) -> None:
    resp = anonymous.get(f"/docs/assets/{name}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(DOC_ASSETS[name])
    assert resp.content == (doc_assets_dir() / name).read_bytes()
    assert "max-age" in resp.headers["cache-control"] and resp.headers["etag"]


@pytest.mark.parametrize(
    "name", ["LICENSE", "..%2F__init__.py", "%2E%2E%2Fcore.py", "swagger-ui-bundle.js.map", "core.py"]
)
def test_nothing_else_is_served_from_the_package(anonymous: TestClient, name: str) -> None:
    resp = anonymous.get(f"/docs/assets/{name}")
    # 404; a dot-segment is not public at all (api/auth.py::is_public): 401
    assert resp.status_code == (401 if "%2F" in name.upper() else 404)
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_a_big_asset_is_compressed_with_a_weak_etag(anonymous: TestClient) -> None:
    plain = anonymous.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "identity"})
    packed = anonymous.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert not plain.headers["etag"].startswith("W/")
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["etag"] == "W/" + plain.headers["etag"]  # another byte sequence
    assert packed.content == plain.content  # httpx decoded it
    assert packed.num_bytes_downloaded < len(plain.content) / 2


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_may_reach_nothing_but_the_gateway(anonymous: TestClient, page: str) -> None:
    policy = anonymous.get(page).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "style-src", "img-src", "connect-src", "font-src", "worker-src"):
        sources = directives[name].split()
        assert all(s in ("'self'", "'unsafe-inline'", "data:", "blob:") for s in sources), (name, sources)
