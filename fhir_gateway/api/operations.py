"""FHIR operations ($name): each takes (request, service, type, id) and returns a response."""

from __future__ import annotations

from typing import Any

from fhir_gateway.api.request import FhirRequest, FhirResponse
from fhir_gateway.fhir.outcome import FhirError, error, information, operation_outcome


def validate(req: FhirRequest, svc: Any, resource_type: str | None, rid: str | None) -> FhirResponse:
    """`POST [type]/$validate`: the OperationOutcome of base + profile validation, nothing stored.

    Answers 200 whether or not the resource is valid (the outcome says which), per the spec."""
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        body = next(
            (p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"), None
        )
    if body is None:
        raise FhirError(400, [error("required", "$validate needs a resource (or Parameters.resource)")])
    try:
        issues = svc.validation_issues(body, resource_type)
    except FhirError as exc:
        issues = exc.issues
    if not any(i.is_error for i in issues):
        issues = [*issues, information("Validation successful: no errors")]
    return FhirResponse(200, operation_outcome(issues))
