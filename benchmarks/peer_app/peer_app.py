"""fhirstarter app (runs in benchmarks/.peer-venv only): in-memory ServiceRequest create + read."""

import uuid

from fhir.resources.R4B.servicerequest import ServiceRequest
from fhirstarter import FHIRProvider, FHIRStarter, InteractionContext
from fhirstarter.exceptions import FHIRResourceNotFoundError

DB: dict[str, ServiceRequest] = {}
provider = FHIRProvider()


@provider.create(ServiceRequest)
def create(context: InteractionContext, resource: ServiceRequest) -> ServiceRequest:
    resource.id = str(uuid.uuid4())
    DB[resource.id] = resource
    return resource


@provider.read(ServiceRequest)
def read(context: InteractionContext, id_: str) -> ServiceRequest:
    if id_ not in DB:
        raise FHIRResourceNotFoundError
    return DB[id_]


app = FHIRStarter()
app.add_providers(provider)
