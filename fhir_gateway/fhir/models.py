"""Structural validation against the FHIR base models (fhir.resources R4B reading R4 JSON).

We validate the incoming dict once and keep the dict: dumping the model costs more than
validating it and would rewrite the client's JSON.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_gateway.fhir.outcome import FhirError, Invalid, Issue, error
from fhir_gateway.fhir.searchparams import supported_types

# Types the REST API serves (each has search parameters) plus Bundle for batch/transaction.
_EXTRA_TYPES = ("Bundle", "OperationOutcome", "Parameters")


@cache
def rest_types() -> frozenset[str]:
    return frozenset(supported_types())


def is_known_type(resource_type: str) -> bool:
    return resource_type in rest_types() or resource_type in _EXTRA_TYPES


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def model_class(resource_type: str) -> Any:
    """The R4B model of a type (cached): the XML reader and writer (`fhir.xml`) build on it."""
    return _model(resource_type)


def check_resource(data: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Return `data` if it is a structurally valid resource, else raise `Invalid` (400)."""
    if not isinstance(data, dict):
        raise Invalid([error("structure", "The body must be a JSON object holding one FHIR resource")])
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise Invalid([error("required", "The resource has no resourceType", "resourceType")])
    if expected_type and resource_type != expected_type:
        raise Invalid(
            [
                error(
                    "invalid",
                    f"resourceType is '{resource_type}' but the URL names '{expected_type}'",
                    "resourceType",
                )
            ]
        )
    if not is_known_type(resource_type):
        raise Invalid(
            [
                error(
                    "not-supported",
                    f"Resource type '{resource_type}' is not supported by this server",
                    "resourceType",
                )
            ]
        )
    try:
        _model(resource_type).model_validate(data)
    except ValidationError as exc:
        raise Invalid(issues_from_validation(resource_type, exc)) from None
    except Exception as exc:
        # fhir.resources' own validators assume the JSON type they expect and fail with whatever
        # Python raises on the wrong one: a bare KeyError for a nested resource of unknown type,
        # AttributeError for a number where a url/uri/canonical belongs ({"address": 12} on an
        # Endpoint: `12.startswith`). Whichever it is, the input could not be read: a 400, not a 500.
        raise Invalid(
            [
                error(
                    "structure",
                    f"{resource_type} could not be read: {type(exc).__name__} {str(exc)[:200]}",
                    resource_type,
                )
            ]
        ) from None
    return data


def issues_from_validation(resource_type: str, exc: ValidationError) -> list[Issue]:
    issues: list[Issue] = []
    for err in exc.errors(include_url=False)[:50]:
        expression = _expression(resource_type, err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            code, text = "structure", f"Unknown element '{expression}'"
        elif kind == "missing":
            code, text = "required", f"Missing required element '{expression}'"
        else:
            code, text = "value", f"Invalid value at '{expression}': {err.get('msg', kind)}"
        issues.append(error(code, text, expression))
    return issues or [error("structure", f"{resource_type} is not valid")]


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "union[")) and part != "__root__":
            path += f".{part}"
    return path


def require(condition: bool, status: int, code: str, diagnostics: str, expression: str | None = None) -> None:
    if not condition:
        raise FhirError(status, [error(code, diagnostics, expression)])
