"""Load FHIR JSON files (resources or Bundles) through the same router as HTTP calls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_gateway.rest.request import FhirRequest
from fhir_gateway.rest.router import Router
from fhir_gateway.security.principal import Principal


@dataclass
class LoadResult:
    path: Path
    status: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.status < 400


def request_for(document: dict[str, Any], base_url: str, principal: Principal) -> FhirRequest:
    """A Bundle of type batch/transaction goes to the base; a resource with an id is PUT, else POSTed."""
    headers = {"content-type": "application/fhir+json"}
    rtype = document.get("resourceType", "")
    if rtype == "Bundle" and document.get("type") in ("batch", "transaction"):
        return FhirRequest("POST", "", body=document, headers=headers, principal=principal, base_url=base_url)
    if document.get("id"):
        return FhirRequest(
            "PUT",
            f"{rtype}/{document['id']}",
            body=document,
            headers=headers,
            principal=principal,
            base_url=base_url,
        )
    return FhirRequest("POST", rtype, body=document, headers=headers, principal=principal, base_url=base_url)


def json_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.json")) if path.is_dir() else [path])
    return files


def load_files(
    router: Router, paths: Iterable[Path], *, base_url: str = "", principal: Principal | None = None
) -> list[LoadResult]:
    principal = principal or Principal.system("fhir-gateway load")
    results = []
    for path in json_files(paths):
        document, problem = read_resource(path)
        if document is None:
            results.append(LoadResult(path, 400, problem))
            continue
        response = router.handle(request_for(document, base_url, principal))
        detail = _summary(response.body)
        results.append(LoadResult(path, response.status, detail))
    return results


def read_resource(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The FHIR resource in a JSON file, or None and why not (said per file, the load goes on)."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        return None, f"cannot read JSON: {exc}"
    if isinstance(document, dict) and isinstance(document.get("resourceType"), str):
        return document, ""
    if isinstance(document, list) and all(isinstance(op, dict) and "op" in op for op in document):
        return None, "a JSON Patch document, not a FHIR resource (send it as PATCH to the Task)"
    return None, f"not a FHIR resource (JSON {type(document).__name__} without a resourceType)"


def post_files(
    base_url: str, paths: Iterable[Path], token: str | None, *, timeout: float = 60
) -> list[LoadResult]:
    """Send each file to a running gateway as `load_files` does in-process (PUT with an id, else
    POST; batch/transaction Bundles to the base), with the bearer token when there is one."""
    headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    results = []
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as client:
        for path in json_files(paths):
            document, problem = read_resource(path)
            if document is None:
                results.append(LoadResult(path, 400, problem))
                continue
            req = request_for(document, "", Principal.system("fhir-gateway load"))
            resp = client.request(req.method, "/" + req.path, content=orjson.dumps(req.body), headers=headers)
            try:
                body = resp.json() if resp.content else None
            except ValueError:
                body = None
            detail = _summary(body) if isinstance(body, dict) else resp.text[:200]
            results.append(LoadResult(path, resp.status_code, detail))
    return results


def _summary(body: dict[str, Any] | None) -> str:
    if not body:
        return ""
    if body.get("resourceType") == "OperationOutcome":
        return "; ".join(i.get("diagnostics", "") for i in body.get("issue", []))[:500]
    if body.get("resourceType") == "Bundle":
        return f"{len(body.get('entry', []))} entries"
    return f"{body.get('resourceType')}/{body.get('id')}"
