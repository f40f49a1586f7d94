"""`/openapi.json` documents the FHIR REST surface the catch-all route serves, and is valid OpenAPI 3."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.api.openapi import install_openapi
from fhir_gateway.fhir.searchparams import load_search_params
from fhir_gateway.rest.operations.wor_report import wor_report
from tests.conftest import make_client

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture
def schema(sqlite_url: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    with make_client(sqlite_url) as client:  # /openapi.json is not on the public list (yet)
        client.app.state.router.operations[(None, "$wor-report")] = wor_report  # type: ignore[attr-defined]
        install_openapi(client.app)  # type: ignore[arg-type]
        resp = client.get("/openapi.json")
        assert resp.status_code == 200
        yield client, resp.json()


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _structural_check(doc: dict[str, Any]) -> None:
    """What openapi-spec-validator checks that matters here, for when it is not installed."""
    assert re.fullmatch(r"3\.[01]\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    ids: list[str] = []

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.startswith("#/") and _resolve(doc, ref) is not None, ref
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            assert method in METHODS, (path, method)
            assert op["responses"], (path, method)
            ids.append(op["operationId"])
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, (path, method)
            for p in op.get("parameters", []):
                assert p["in"] in ("query", "header", "path", "cookie") and "schema" in p
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_openapi_is_valid(schema: tuple[TestClient, dict[str, Any]]) -> None:
    _, doc = schema
    _structural_check(doc)
    if importlib.util.find_spec("openapi_spec_validator") is not None:
        from openapi_spec_validator import validate

        validate(doc)


def test_task_interactions_and_search_parameters(schema: tuple[TestClient, dict[str, Any]]) -> None:
    _, doc = schema
    paths = doc["paths"]
    task = paths["/fhir/Task/{id}"]
    assert {"get", "put", "patch", "delete"} <= set(task)
    assert "If-Match" in {p["name"] for p in task["patch"]["parameters"]}
    assert task["patch"]["requestBody"]["content"]["application/json-patch+json"][
        "examples"
    ]  # from scenarios
    searched = {p["name"] for p in paths["/fhir/Task"]["get"]["parameters"]}
    assert set(load_search_params()["Task"]) <= searched
    assert {"_id", "_lastUpdated", "_count", "_include"} <= searched
    for suffix in ("/_history", "/{id}/_history", "/{id}/_history/{vid}", "/$validate", "/_search"):
        assert f"/fhir/Task{suffix}" in paths
    transaction = paths["/fhir"]["post"]["requestBody"]["content"]["application/fhir+json"]["examples"]
    assert transaction["01-referral-bundle"]["value"]["type"] == "transaction"
    for path in ("/fhir/$wor-report", "/auth/token", "/v2", "/fhir/metadata"):
        assert path in paths
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert paths["/fhir/metadata"]["get"]["security"] == []


def test_docs_page_is_served(schema: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = schema
    resp = client.get("/docs")
    assert resp.status_code == 200 and "swagger" in resp.text.lower()
