"""The one path every read and write takes: validation, conditional logic, then the store.

The REST router, Bundle processing, the v2 inbound path and the CLI all call this, so a
rule added here holds everywhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import jsonpatch

from fhir_gateway.fhir.models import check_resource
from fhir_gateway.fhir.outcome import FhirError, Invalid, NotFound, error
from fhir_gateway.fhir.search import SearchQuery, parse_search
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, SearchPage, Stored
from fhir_gateway.workflow.context import GatewayContext


class ResourceService:
    def __init__(self, repo: Repository, ctx: GatewayContext, principal: Principal) -> None:
        self.repo = repo
        self.ctx = ctx
        self.principal = principal

    # -- validation ------------------------------------------------------------------------------
    def validate(self, resource: Any, expected_type: str | None = None) -> dict[str, Any]:
        return check_resource(resource, expected_type)

    # -- writes ----------------------------------------------------------------------------------
    def create(
        self,
        resource: Any,
        *,
        resource_type: str | None = None,
        if_none_exist: str | None = None,
        resource_id: str | None = None,
    ) -> tuple[Stored, bool]:
        """Returns (stored, created). With `if_none_exist` an existing match is returned instead.
        `resource_id` is only for ids the server promised earlier (transaction fullUrl mapping)."""
        data = self.validate(resource, resource_type)
        if if_none_exist:
            existing = self.conditional_match(data["resourceType"], if_none_exist)
            if existing is not None:
                return existing, False
        data = {k: v for k, v in data.items() if k != "id"}  # the server assigns the id
        return self.repo.create(data, resource_id=resource_id), True

    def conditional_match(self, resource_type: str, criteria: str) -> Stored | None:
        """The single resource matching `criteria` (a search query string), None if none;
        412 if several. Holds a lock on the criteria until commit, so two racing conditional
        creates cannot both miss."""
        params = _query_params(criteria)
        if not params:
            raise FhirError(
                400,
                [
                    error(
                        "invalid",
                        "If-None-Exist needs search criteria, e.g. identifier=system|value",
                        "If-None-Exist",
                    )
                ],
            )
        self.repo.lock(f"{resource_type}?{criteria}")
        query = parse_search(resource_type, params, strict=True)
        query.count = 2
        page = self.repo.search(query)
        if len(page.matches) > 1:
            raise FhirError(
                412,
                [
                    error(
                        "multiple-matches",
                        f"Criteria '{criteria}' match more than one {resource_type}",
                        "If-None-Exist",
                    )
                ],
            )
        return page.matches[0] if page.matches else None

    def update(
        self, resource_type: str, rid: str, resource: Any, *, if_match: int | None = None
    ) -> tuple[Stored, bool]:
        data = self.validate(resource, resource_type)
        if data.get("id") != rid:
            raise Invalid(
                [
                    error(
                        "invalid",
                        f"The resource id '{data.get('id')}' does not match the id '{rid}' in the URL",
                        f"{resource_type}.id",
                    )
                ]
            )
        return self.repo.update(data, if_match=if_match)

    def patch(self, resource_type: str, rid: str, operations: Any, *, if_match: int | None = None) -> Stored:
        current = self.repo.read(resource_type, rid)
        if not isinstance(operations, list):
            raise Invalid([error("structure", "A JSON Patch body is an array of operations")])
        try:
            patched = jsonpatch.apply_patch(current.content, operations)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise FhirError(422, [error("processing", f"JSON Patch could not be applied: {exc}")]) from None
        if patched.get("resourceType") != resource_type or patched.get("id") != rid:
            raise FhirError(422, [error("processing", "JSON Patch may not change resourceType or id")])
        data = self.validate(patched, resource_type)
        stored, _ = self.repo.update(
            data, if_match=if_match if if_match is not None else current.version_id, method="PATCH"
        )
        return stored

    def delete(self, resource_type: str, rid: str) -> Stored | None:
        return self.repo.delete(resource_type, rid)

    # -- reads -----------------------------------------------------------------------------------
    def read(self, resource_type: str, rid: str) -> Stored:
        return self.repo.read(resource_type, rid)

    def vread(self, resource_type: str, rid: str, version: int) -> Stored:
        return self.repo.vread(resource_type, rid, version)

    def search(self, query: SearchQuery) -> SearchPage:
        return self.repo.search(query)

    def history(
        self, resource_type: str | None, rid: str | None, **kwargs: Any
    ) -> tuple[list[Stored], int | None]:
        if resource_type and rid and not self.repo.exists(resource_type, rid):
            raise NotFound(f"{resource_type}/{rid} is not known")
        return self.repo.history(resource_type, rid, **kwargs)


def _query_params(criteria: str) -> list[tuple[str, str]]:
    return parse_qsl(criteria.lstrip("?"), keep_blank_values=False)
