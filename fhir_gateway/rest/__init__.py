"""The transport-neutral FHIR core: one request type, one route table, Bundles and operations.

HTTP (`fhir_gateway.api`), HL7 v2, the CLI and the tests all send a `FhirRequest` through the
router `build_router` makes; nothing here knows about FastAPI or sockets.
"""

from __future__ import annotations

from fhir_gateway.rest.bundles import BundleProcessor
from fhir_gateway.rest.capability import capability_statement
from fhir_gateway.rest.operations import register_operations
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.rest.router import Router
from fhir_gateway.workflow.context import GatewayContext

__all__ = ["FhirRequest", "FhirResponse", "Router", "build_router"]


def build_router(ctx: GatewayContext) -> Router:
    """The FHIR router with Bundle processing, the CapabilityStatement and the operations."""
    router = Router(ctx)
    router.bundle_handler = BundleProcessor(router)
    router.capability = lambda req: capability_statement(
        req.base_url, router.operation_definitions, ctx.validator.profiles.default_profiles
    )
    register_operations(router)
    return router
