"""`GET [base]/$wor-report?municipality=…&period=…`: the municipality report over REST.

Only administrators (and, once it exists, a municipality role) may run it: the figures are
aggregated and suppressed, but they span every organisation's referrals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.reports.municipality import REPORT_ROLES, build_report, parse_period
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.vocabulary import WOR_REPORT_OPERATION

DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "wor-report",
    "url": WOR_REPORT_OPERATION,
    "name": "WorReport",
    "title": "Welzijn op Recept municipality report",
    "status": "active",
    "kind": "operation",
    "code": "wor-report",
    "affectsState": False,
    "system": True,
    "type": False,
    "instance": False,
    "parameter": [
        {"name": "municipality", "use": "in", "min": 1, "max": "1", "type": "string"},
        {
            "name": "period",
            "use": "in",
            "min": 1,
            "max": "1",
            "type": "string",
            "documentation": "A year (2026), a quarter (2026-Q3) or a month (2026-09)",
        },
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "MeasureReport",
            "documentation": "Summary MeasureReport; every number below 5 suppressed",
        },
    ],
}


def require_report_access(principal: Any) -> None:
    """401 without credentials; 403 for any role that is not allowed to see municipality figures."""
    if not principal.authenticated:
        raise FhirError(
            401,
            [error("login", "Authentication is required: send 'Authorization: Bearer <access token>'")],
            {"WWW-Authenticate": 'Bearer realm="fhir-gateway"'},
        )
    if principal.role not in REPORT_ROLES:
        raise FhirError(
            403, [error("forbidden", "$wor-report is for administrators and municipalities only")]
        )


def wor_report(req: FhirRequest, svc: Any, resource_type: str | None, rid: str | None) -> FhirResponse:
    """Router operation `(None, "$wor-report")`: a MeasureReport (status complete, type summary)."""
    require_report_access(svc.principal)
    if resource_type is not None or rid is not None:
        raise FhirError(
            404, [error("not-supported", "$wor-report runs at the system level: [base]/$wor-report")]
        )
    params: dict[str, str] = {}
    for key, value in req.params:
        params.setdefault(key, value)
    if req.method == "POST" and isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
        for p in req.body.get("parameter", []):
            value = p.get("valueString") or p.get("valueCode")
            if value is not None:
                params.setdefault(p.get("name", ""), value)
    missing = [name for name in ("municipality", "period") if not params.get(name, "").strip()]
    if missing:
        raise FhirError(400, [error("required", f"$wor-report needs {' and '.join(missing)}", missing[0])])
    report = build_report(
        svc.repo,
        svc.ctx.directory(svc.repo),
        params["municipality"].strip(),
        parse_period(params["period"]),
        profiles_dir=Path(svc.ctx.settings.profiles_dir),
        now=svc.ctx.clock(),
    )
    return FhirResponse(200, report)
