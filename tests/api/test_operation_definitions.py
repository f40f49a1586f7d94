"""Every operation the router offers has its OperationDefinition: named in the CapabilityStatement by
canonical url, served at [base]/OperationDefinition/{id}, and a valid R4 resource."""

from __future__ import annotations

from fhir.resources.R4B.operationdefinition import OperationDefinition

from tests.conftest import make_client


def test_each_operation_is_defined_published_and_served(sqlite_url: str) -> None:
    with make_client(sqlite_url) as client:
        router = client.app.state.router  # type: ignore[attr-defined]
        assert set(router.operations) == set(router.operation_definitions)
        statement = client.get("/fhir/metadata").json()["rest"][0]
        published = {op["definition"] for op in statement.get("operation", [])}
        for resource in statement["resource"]:
            published |= {op["definition"] for op in resource.get("operation", [])}
        for (rtype, name), definition in router.operation_definitions.items():
            OperationDefinition.model_validate(definition)  # a valid resource
            assert definition["code"] == name.lstrip("$")
            assert definition["url"] in published, name
            assert (rtype in definition.get("resource", [])) or rtype is None
            served = client.get(f"/fhir/OperationDefinition/{definition['id']}")
            assert served.status_code == 200 and served.json() == definition
        assert client.get("/fhir/OperationDefinition/no-such-operation").status_code == 404
