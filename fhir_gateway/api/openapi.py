"""OpenAPI for `/docs` and `/redoc` (served without internet): the FHIR REST surface the catch-all route really serves.

The FHIR endpoints are one catch-all route (hidden from FastAPI's generator), so this module
writes their description from the same sources the gateway runs on: the REST types of
`fhir.models`, the search parameters of `fhir/searchparams.yaml`, the router's operations, and
request examples read from `examples/scenarios/` (so the examples are the tested ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from fhir_gateway.fhir.models import rest_types
from fhir_gateway.fhir.outcome import error, operation_outcome
from fhir_gateway.fhir.searchparams import load_search_params

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"
ER7 = "x-application/hl7-v2+er7"
SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
PARAM_HINTS = {
    "token": "token: `[system|]code`; modifiers `:not`, `:missing`",
    "reference": "reference: `Type/id` (or an absolute URL on this server); `:missing`",
    "date": "date: prefixes `eq ne gt lt ge le sa eb`, e.g. `ge2026-01-01`",
    "string": "string: starts-with, case and accent insensitive; `:exact`, `:contains`, `:missing`",
}
RESULT_PARAMS = {
    "_id": "Logical id (comma-separated for several)",
    "_lastUpdated": "date: when the current version was written, with prefixes `gt lt ge le sa eb ne`",
    "_count": "Page size (default 50, at most 1000)",
    "_sort": "`_lastUpdated`, `-_lastUpdated` or `_id`",
    "_include": "`Type:param` to include referenced resources",
    "_revinclude": "`Type:param` to include resources that refer to the matches",
    "_summary": "`count`: only the total",
    "_total": "`accurate`: compute Bundle.total",
    "_cursor": "Opaque paging cursor from a `next` link",
}
ERRORS = {
    "400": "Bad request (OperationOutcome)",
    "401": "No or invalid access token",
    "403": "The token lacks the scope or role",
    "404": "Unknown, or outside the caller's compartment (OperationOutcome)",
    "409": "Workflow conflict, e.g. an illegal Task transition (OperationOutcome names the allowed states)",
    "410": "Deleted",
    "412": "If-Match names a version that is not current",
    "406": "Accept or _format names a type the gateway cannot produce (FHIR JSON or XML)",
    "415": "A body type other than FHIR JSON, JSON, FHIR XML or XML (JSON Patch for PATCH)",
    "422": "Not valid against the base specification or the WoR profiles (OperationOutcome with expression)",
    "428": "Task updates need If-Match",
}
# the token endpoint's errors (RFC 6749 §5.2 bodies, Cache-Control: no-store)
OAUTH_ERRORS = {
    "400": "invalid_request / unsupported_grant_type / invalid_scope",
    "401": "invalid_client (also a replayed client_assertion jti)",
    "413": "invalid_request: the body exceeds 64 KiB",
    "429": "temporarily_unavailable: too many requests from this address (Retry-After)",
    "503": "temporarily_unavailable: the store refuses (Retry-After)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _fhir_body(schema: str = "Resource", examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if examples:
        media["examples"] = examples
    return {FHIR_JSON: media}


def _responses(ok: str, description: str, errors: Iterable[str], schema: str = "Resource") -> dict[str, Any]:
    out: dict[str, Any] = {ok: {"description": description}}
    if ok != "204":
        # the same resource in FHIR XML when asked for (Accept: application/fhir+xml, _format=xml)
        out[ok]["content"] = {**_fhir_body(schema), FHIR_XML: {"schema": {"type": "string"}}}
    for code in errors:
        out[code] = {"$ref": f"#/components/responses/E{code}"}
    return out


def _header(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def load_examples(folder: Path = SCENARIOS) -> dict[str, dict[str, Any]]:
    """Scenario files by what they exemplify: `Bundle`, a resource type, or `patch`."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        body = orjson.loads(path.read_bytes())
        kind = "patch" if isinstance(body, list) else str(body.get("resourceType", ""))
        found.setdefault(kind, {})[path.stem] = {"summary": path.name, "value": body}
    return found


READ_ERRORS = ("401", "403", "404", "410")
WRITE_ERRORS = ("400", "401", "403", "404", "409", "412", "415", "422")
IF_MATCH = 'W/"<versionId>" you last read (required for Task)'


def _search_parameters(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The result parameters every type takes, then the type's own search parameters by name."""
    return [
        {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
        for n, d in RESULT_PARAMS.items()
    ] + [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": f"{p.expression} — {PARAM_HINTS.get(p.type, p.type)}",
            "schema": {"type": "string"},
        }
        for p in sorted(params.values(), key=lambda p: p.name)
    ]


def _type_paths(rtype: str, params: dict[str, Any], examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every interaction on one resource type, by path: type level first, then instance level."""
    search_params = _search_parameters(params)
    return {**_type_level_paths(rtype, search_params, examples), **_instance_paths(rtype, examples)}


def _type_level_paths(
    rtype: str, search_params: list[dict[str, Any]], examples: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Search, create, type history and `$validate` under `/fhir/{rtype}`."""
    base = f"/fhir/{rtype}"
    tag = [rtype]
    create_examples = examples.get(rtype)
    return {
        base: {
            "get": _search_operation(rtype, search_params),
            "post": _create_operation(rtype, create_examples),
            "put": _conditional_update_operation(rtype, search_params),
            "delete": _conditional_delete_operation(rtype, search_params),
        },
        f"{base}/_search": {"post": _search_form_operation(rtype, search_params)},
        f"{base}/_history": {
            "get": {
                "tags": tag,
                "summary": f"history of all {rtype} resources",
                "operationId": f"history-type-{rtype}",
                "parameters": [_query("_since"), _query("_count")],
                "responses": _responses("200", "history Bundle", ("401", "403"), "Bundle"),
            }
        },
        f"{base}/$validate": {
            "post": {
                "tags": tag,
                "summary": f"validate a {rtype} (base spec + WoR profiles); nothing is stored",
                "operationId": f"validate-{rtype}",
                "requestBody": {"required": True, "content": _fhir_body(examples=create_examples)},
                "responses": _responses(
                    "200", "OperationOutcome (valid or not)", ("400", "401", "415"), "OperationOutcome"
                ),
            }
        },
    }


def _search_operation(rtype: str, search_params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tags": [rtype],
        "summary": f"search {rtype}",
        "description": "Confined to the caller's compartment before paging. Unknown parameters are "
        "a warning in the Bundle (400 with `Prefer: handling=strict`).",
        "operationId": f"search-{rtype}",
        "parameters": search_params,
        "responses": _responses("200", "searchset Bundle", ("400", "401", "403"), "Bundle"),
    }


def _conditional_update_operation(rtype: str, search_params: list[dict[str, Any]]) -> dict[str, Any]:
    """`PUT /fhir/{rtype}?criteria`, matched inside the caller's compartment only."""
    return {
        "tags": [rtype],
        "summary": f"conditional update {rtype} (PUT {rtype}?criteria)",
        "description": "The criteria match only among the caller's own records: none creates one "
        "(server-assigned id; the create scope is needed too), one is updated (If-Match honoured, "
        "still required for Task), several are 412.",
        "operationId": f"conditional-update-{rtype}",
        "parameters": [*search_params, _header("If-Match", IF_MATCH)],
        "requestBody": {"required": True, "content": _fhir_body()},
        "responses": {
            **_responses("200", "Updated", (*WRITE_ERRORS, "428")),
            "201": {"description": "Created (no match)", "content": _fhir_body()},
        },
    }


def _conditional_delete_operation(rtype: str, search_params: list[dict[str, Any]]) -> dict[str, Any]:
    """`DELETE /fhir/{rtype}?criteria` in single mode."""
    return {
        "tags": [rtype],
        "summary": f"conditional delete {rtype} (DELETE {rtype}?criteria)",
        "description": "Single mode, inside the caller's compartment: one match is deleted, none is "
        "204 as any delete of what does not exist, several are 412.",
        "operationId": f"conditional-delete-{rtype}",
        "parameters": search_params,
        "responses": _responses("204", "Deleted (or nothing matched)", ("400", "401", "403", "409", "412")),
    }


def _search_form_operation(rtype: str, search_params: list[dict[str, Any]]) -> dict[str, Any]:
    """`POST _search`: the same parameters as a form body."""
    return {
        "tags": [rtype],
        "summary": f"search {rtype} (form body)",
        "operationId": f"search-post-{rtype}",
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {p["name"]: {"type": "string"} for p in search_params},
                    }
                }
            }
        },
        "responses": _responses("200", "searchset Bundle", ("400", "401", "403"), "Bundle"),
    }


def _create_operation(rtype: str, create_examples: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "tags": [rtype],
        "summary": f"create {rtype}",
        "operationId": f"create-{rtype}",
        "parameters": [
            _header("If-None-Exist", "Conditional create: a search query, e.g. identifier=system|value")
        ],
        "requestBody": {"required": True, "content": _fhir_body(examples=create_examples)},
        "responses": {
            **_responses("201", "Created (Location header names the version)", WRITE_ERRORS),
            "200": {
                "description": "Already there (If-None-Exist / duplicate referral)",
                "content": _fhir_body(),
            },
        },
    }


def _instance_paths(rtype: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Read, update, patch, delete, instance history and vread under `/fhir/{rtype}/{id}`."""
    base = f"/fhir/{rtype}"
    tag = [rtype]
    rid = _path_param("id", f"Logical id of the {rtype}")
    return {
        f"{base}/{{id}}": {
            "get": {
                "tags": tag,
                "summary": f"read {rtype}",
                "operationId": f"read-{rtype}",
                "parameters": [rid, _header("If-None-Match", "ETag; 304 when unchanged")],
                "responses": {
                    **_responses("200", "The resource (ETag, Last-Modified)", READ_ERRORS),
                    "304": {"description": "Not modified"},
                },
            },
            "put": _update_operation(rtype, rid),
            "patch": _patch_operation(rtype, rid, examples),
            "delete": {
                "tags": tag,
                "summary": f"delete {rtype} (soft: history kept, 410 afterwards)",
                "operationId": f"delete-{rtype}",
                "parameters": [rid],
                "responses": _responses("204", "Deleted", ("401", "403", "404", "409")),
            },
        },
        f"{base}/{{id}}/_history": {
            "get": {
                "tags": tag,
                "summary": f"history of one {rtype}",
                "operationId": f"history-instance-{rtype}",
                "parameters": [rid, _query("_since"), _query("_count")],
                "responses": _responses("200", "history Bundle", READ_ERRORS, "Bundle"),
            }
        },
        f"{base}/{{id}}/_history/{{vid}}": {
            "get": {
                "tags": tag,
                "summary": f"vread {rtype}",
                "operationId": f"vread-{rtype}",
                "parameters": [rid, _path_param("vid", "Version id")],
                "responses": _responses("200", "That version", READ_ERRORS),
            }
        },
    }


def _update_operation(rtype: str, rid: dict[str, Any]) -> dict[str, Any]:
    """PUT: 200 for an update, 201 when the id was new (update as create)."""
    update: dict[str, Any] = {
        "tags": [rtype],
        "summary": f"update {rtype} (creates it under this id when new)",
        "operationId": f"update-{rtype}",
        "parameters": [rid, _header("If-Match", IF_MATCH)],
        "requestBody": {"required": True, "content": _fhir_body()},
        "responses": _responses("200", "Updated", (*WRITE_ERRORS, "428")),
    }
    update["responses"]["201"] = {"description": "Created", "content": _fhir_body()}
    return update


def _patch_operation(rtype: str, rid: dict[str, Any], examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON Patch; the Task patches of the scenarios are its examples."""
    patch_body: dict[str, Any] = {
        "schema": {"type": "array", "items": _ref("JsonPatchOperation")},
    }
    if rtype == "Task" and examples.get("patch"):
        patch_body["examples"] = examples["patch"]
    return {
        "tags": [rtype],
        "summary": f"patch {rtype} (JSON Patch)",
        "operationId": f"patch-{rtype}",
        "parameters": [rid, _header("If-Match", IF_MATCH)],
        "requestBody": {"required": True, "content": {JSON_PATCH: patch_body}},
        "responses": _responses("200", "Patched", (*WRITE_ERRORS, "428")),
    }


def _query(name: str, description: str = "", required: bool = False) -> dict[str, Any]:
    text = description or {
        "_since": "Only versions written at or after this instant",
        "_count": "Page size",
    }.get(name, name)
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": text,
        "schema": {"type": "string"},
    }


def _system_paths(
    examples: dict[str, dict[str, Any]], operations: Iterable[tuple[str | None, str]]
) -> dict[str, Any]:
    """The routes outside a resource type: whole-system FHIR, auth, v2, and the report if offered."""
    paths = {**_fhir_system_paths(examples), **_auth_paths(), **_v2_paths()}
    if (None, "$wor-report") in set(operations):
        paths.update(_report_paths())
    return paths


def _fhir_system_paths(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bundles posted to `/fhir`, the CapabilityStatement and system history."""
    return {
        "/fhir": {
            "post": {
                "tags": ["system"],
                "summary": "transaction or batch Bundle (a referral: Patient, Consent, ServiceRequest)",
                "description": "A transaction runs in one database transaction: all entries or none.",
                "operationId": "transaction",
                "requestBody": {"required": True, "content": _fhir_body("Bundle", examples.get("Bundle"))},
                "responses": _responses(
                    "200",
                    "transaction-response / batch-response Bundle",
                    ("400", "401", "403", "415", "422"),
                    "Bundle",
                ),
            }
        },
        "/fhir/metadata": {
            "get": {
                "tags": ["system"],
                "summary": "CapabilityStatement (no token needed)",
                "operationId": "capabilities",
                "security": [],
                "responses": _responses("200", "CapabilityStatement 4.0.1", ()),
            }
        },
        "/fhir/_history": {
            "get": {
                "tags": ["system"],
                "summary": "history of everything the caller may see",
                "operationId": "history-system",
                "parameters": [_query("_since"), _query("_count")],
                "responses": _responses("200", "history Bundle", ("401", "403"), "Bundle"),
            }
        },
    }


def _auth_paths() -> dict[str, Any]:
    """SMART Backend Services: the token endpoint (RFC 6749 errors) and its discovery document."""
    return {
        "/auth/token": {
            "post": {
                "tags": ["auth"],
                "summary": "SMART Backend Services token (client_credentials + private_key_jwt)",
                "operationId": "token",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": _token_request_schema()}},
                },
                "responses": {
                    "200": {
                        "description": "Access token (at most 5 minutes)",
                        "content": {"application/json": {"schema": _ref("TokenResponse")}},
                    },
                    **{
                        code: {
                            "description": text,
                            "content": {"application/json": {"schema": _ref("OAuthError")}},
                        }
                        for code, text in OAUTH_ERRORS.items()
                    },
                },
            }
        },
        "/.well-known/smart-configuration": {
            "get": {
                "tags": ["auth"],
                "summary": "SMART configuration (token endpoint, supported algorithms)",
                "operationId": "smart-configuration",
                "security": [],
                "responses": {
                    "200": {
                        "description": "SMART configuration",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def _token_request_schema() -> dict[str, Any]:
    """The client_credentials form with a private_key_jwt client assertion."""
    return {
        "type": "object",
        "required": ["grant_type", "client_assertion_type", "client_assertion"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {
                "type": "string",
                "example": "system/Task.rus system/Communication.rs",
            },
            "client_assertion_type": {
                "type": "string",
                "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
            },
            "client_assertion": {
                "type": "string",
                "description": "JWT signed RS384/ES384",
            },
        },
    }


def _v2_paths() -> dict[str, Any]:
    return {
        "/v2": {
            "post": {
                "tags": ["hl7v2"],
                "summary": "HL7 v2 REF^I12 referral over HTTP (answered with an ACK)",
                "operationId": "v2",
                "requestBody": {"required": True, "content": {ER7: {"schema": {"type": "string"}}}},
                "responses": {
                    "200": {
                        "description": "ACK (AA, AE or AR)",
                        "content": {ER7: {"schema": {"type": "string"}}},
                    },
                    "401": {"$ref": "#/components/responses/E401"},
                    "413": {"description": "Message too large"},
                    "415": {"description": "Not an ER7 content type"},
                },
            }
        },
    }


def _report_paths() -> dict[str, Any]:
    return {
        "/fhir/$wor-report": {
            "get": {
                "tags": ["reports"],
                "summary": "municipality report (MeasureReport; counts under 5 suppressed); admins only",
                "operationId": "wor-report",
                "parameters": [
                    _query("municipality", "Municipality name, e.g. Nieuwegein", True),
                    _query("period", "`2026`, `2026-Q4`, `2026-03` or `2026-01-01/2026-12-31`", True),
                ],
                "responses": _responses("200", "MeasureReport", ("400", "401", "403"), "MeasureReport"),
            }
        }
    }


def _components() -> dict[str, Any]:
    resource = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"type": "string"},
            "id": {"type": "string"},
            "meta": {"type": "object"},
        },
        "additionalProperties": True,
    }
    typed = lambda name: {  # noqa: E731
        "allOf": [
            _ref("Resource"),
            {"type": "object", "properties": {"resourceType": {"type": "string", "enum": [name]}}},
        ]
    }
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Access token from POST /auth/token (SMART Backend Services)",
            }
        },
        "schemas": {
            "Resource": resource,
            "Bundle": typed("Bundle"),
            "OperationOutcome": typed("OperationOutcome"),
            "MeasureReport": typed("MeasureReport"),
            "JsonPatchOperation": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
            "TokenResponse": {
                "type": "object",
                "properties": {
                    "access_token": {"type": "string"},
                    "token_type": {"type": "string"},
                    "expires_in": {"type": "integer"},
                    "scope": {"type": "string"},
                },
            },
            "OAuthError": {
                "type": "object",
                "description": "RFC 6749 §5.2 error (the token endpoint's errors are not OperationOutcomes)",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
            },
        },
        "responses": {
            f"E{code}": {"description": text, "content": _fhir_body("OperationOutcome")}
            for code, text in ERRORS.items()
        },
    }


def build_openapi(
    base: dict[str, Any], operations: Iterable[tuple[str | None, str]] = ((None, "$validate"),)
) -> dict[str, Any]:
    """FastAPI's own schema (the few ordinary routes) plus the FHIR REST interactions."""
    examples = load_examples()
    params = load_search_params()
    schema = dict(base)
    paths = dict(schema.get("paths", {}))
    paths.update(_system_paths(examples, operations))
    for rtype in sorted(rest_types()):
        paths.update(_type_paths(rtype, params.get(rtype, {}), examples))
    schema["paths"] = paths
    components = dict(schema.get("components", {}))
    for key, value in _components().items():
        components[key] = {**components.get(key, {}), **value}
    schema["components"] = components
    schema["security"] = [{"bearer": []}]
    tags = [{"name": t, "description": f"FHIR R4 {t}"} for t in sorted(rest_types())]
    schema["tags"] = [
        {"name": "system", "description": "Whole-system interactions at the FHIR base /fhir"},
        {"name": "auth", "description": "SMART Backend Services"},
        {"name": "hl7v2", "description": "HL7 v2 over HTTP"},
        {"name": "reports", "description": "Aggregated, suppressed figures"},
        *tags,
    ]
    return schema


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` (served at /openapi.json, shown at /docs) with the full schema, built once."""
    default: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            router = getattr(app.state, "router", None)
            operations = list(getattr(router, "operations", {}) or [(None, "$validate")])
            app.openapi_schema = build_openapi(default(), operations)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Swagger UI and ReDoc as fastapi-offline ships them (both, kept current with upstream): served
# from here, so /docs and /redoc work on a network without internet (hospital and vendor test
# networks often are). Only these names are served; the files change only with the package.
DOC_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
DOC_ASSETS_PATH = "/docs/assets"
# The pages may load and call nothing but this gateway: a browser then never reaches out, even
# where a bundle would (ReDoc's footer logo is an image on the vendor's CDN). Inline script and
# style: Swagger UI's start-up script, ReDoc's generated styles; blob: ReDoc's search worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'"
)
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def doc_assets_dir() -> Path:
    """Where fastapi-offline keeps its copies of the Swagger UI and ReDoc bundles."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """`/docs` (Swagger UI) and `/redoc` pages whose scripts, styles and icon come from this
    gateway. Create the app with `docs_url=None, redoc_url=None` (FastAPI's own load a CDN)."""
    assets = doc_assets_dir()

    def page(html: HTMLResponse) -> HTMLResponse:
        html.headers["Content-Security-Policy"] = DOCS_CSP
        return html

    def urls(request: Request) -> tuple[str, str]:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return root + (app.openapi_url or "/openapi.json"), root + DOC_ASSETS_PATH

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, base = urls(request)
        return page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} — Swagger UI",
                swagger_js_url=f"{base}/swagger-ui-bundle.js",
                swagger_css_url=f"{base}/swagger-ui.css",
                swagger_favicon_url=f"{base}/favicon.png",
                oauth2_redirect_url=OAUTH2_REDIRECT,
                # no badge from the public validator service: it would call out to the internet
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, base = urls(request)
        return page(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} — ReDoc",
                redoc_js_url=f"{base}/redoc.standalone.js",
                redoc_favicon_url=f"{base}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.get(DOC_ASSETS_PATH + "/{name}", include_in_schema=False)
    async def doc_asset(name: str) -> Response:
        media_type = DOC_ASSETS.get(name)
        if media_type is None:
            return JSONResponse(
                operation_outcome([error("not-found", "No such documentation asset")]),
                status_code=404,
                media_type="application/fhir+json",
            )
        return FileResponse(
            assets / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )
