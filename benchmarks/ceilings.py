"""Ceilings for the referral ingest: what FastAPI + uvicorn can do on this box at all.

    uvicorn benchmarks.ceilings:app --port 9000

POST /echo      (a) parse the referral Bundle with orjson, answer 201 — the HTTP/ASGI floor.
POST /validate  (b) the same, plus validate the ServiceRequest with fhir.resources R4B and dump it
                (model_dump_json) — the cost of one structural validation + serialisation.

Both run the handler in the threadpool like the gateway does (sync `def`), same single worker.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
CREATED = orjson.dumps(
    {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}
)


def _service_request(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle.get("entry", []):
        res = entry.get("resource", {})
        if res.get("resourceType") == "ServiceRequest":
            return res
    return bundle


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/echo")
async def echo(request: Request) -> Response:
    body = orjson.loads(await request.body())
    _service_request(body)
    return Response(CREATED, status_code=201, media_type="application/fhir+json")


@app.post("/validate")
async def validate(request: Request) -> Response:
    raw = await request.body()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_validate, raw)


def _validate(raw: bytes) -> Response:
    from fhir.resources.R4B.servicerequest import ServiceRequest

    sr = _service_request(orjson.loads(raw))
    model = ServiceRequest.model_validate(sr)
    return Response(model.model_dump_json(), status_code=201, media_type="application/fhir+json")
