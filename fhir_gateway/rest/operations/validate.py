"""FHIR operations ($name): each takes (request, service, type, id) and returns a response."""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error, information, operation_outcome
from fhir_gateway.rest.request import FhirRequest, FhirResponse

DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "validate",
    "url": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "name": "Validate",
    "title": "Validate a resource",
    "status": "active",
    "kind": "operation",
    "code": "validate",
    "resource": ["Resource"],
    "system": False,
    "type": True,
    "instance": False,
    "parameter": [
        {"name": "resource", "use": "in", "min": 0, "max": "1", "type": "Resource"},
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "OperationOutcome",
            "documentation": "Base specification and WoR profile issues; nothing is stored",
        },
    ],
}


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
