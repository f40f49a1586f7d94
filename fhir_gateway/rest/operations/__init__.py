"""FHIR operations (`$name`): one module each, with its OperationDefinition, registered here.

A handler takes (request, service, type, id) and returns a response. `register_operations` is the
one place that puts them on the router; the CapabilityStatement names each by its definition's
canonical url, and `GET [base]/OperationDefinition/{id}` serves the definitions themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_gateway.rest.operations import (
    process_message,
    subscription_events,
    subscription_status,
    validate,
    wor_report,
)
from fhir_gateway.rest.request import FhirRequest, FhirResponse

Handler = Callable[[FhirRequest, Any, str | None, str | None], FhirResponse]


@dataclass(frozen=True)
class OperationSpec:
    definition: dict[str, Any]
    handler: Handler

    @property
    def name(self) -> str:
        return "$" + str(self.definition["code"])

    @property
    def keys(self) -> list[tuple[str | None, str]]:
        """Router keys: (resource type, $name); None stands for the system level or any type."""
        types = [t for t in self.definition.get("resource", []) if t != "Resource"]
        return [(t, self.name) for t in types] or [(None, self.name)]


def operation_specs(router: Any) -> list[OperationSpec]:
    """Every operation the gateway offers ($process-message runs through the router's Bundles)."""
    return [
        OperationSpec(validate.DEFINITION, validate.validate),
        OperationSpec(process_message.DEFINITION, process_message.MessageProcessor(router.bundle_handler)),
        OperationSpec(wor_report.DEFINITION, wor_report.wor_report),
        OperationSpec(subscription_status.DEFINITION, subscription_status.subscription_status),
        OperationSpec(subscription_events.DEFINITION, subscription_events.subscription_events),
    ]


def register_operations(router: Any) -> None:
    """Put every operation on the router, with its definition (idempotent)."""
    for spec in operation_specs(router):
        for key in spec.keys:
            router.operations[key] = spec.handler
            router.operation_definitions[key] = spec.definition
