"""The one path every read and write takes: validation, conditional logic, then the store.

The REST router, Bundle processing, the v2 inbound path and the CLI all call this, so a
rule added here holds everywhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import jsonpatch

from fhir_gateway.fhir.models import check_resource
from fhir_gateway.fhir.outcome import FhirError, Invalid, Issue, NotFound, error
from fhir_gateway.fhir.search import SearchQuery, parse_search
from fhir_gateway.fhir.searchparams import format_instant, utc_now
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, SearchPage, Stored
from fhir_gateway.workflow import feedback, referrals, tasks
from fhir_gateway.workflow.context import GatewayContext


class ResourceService:
    def __init__(self, repo: Repository, ctx: GatewayContext, principal: Principal) -> None:
        self.repo = repo
        self.ctx = ctx
        self.principal = principal

    # -- validation ------------------------------------------------------------------------------
    def validate(self, resource: Any, expected_type: str | None = None) -> dict[str, Any]:
        """Base specification (400) then the WoR profile for the type (422)."""
        data = check_resource(resource, expected_type)
        self.ctx.validator.ensure_valid(data)
        return data

    def validation_issues(self, resource: Any, expected_type: str | None = None) -> list[Issue]:
        """All issues (errors and warnings) without storing: base errors raise, profile ones return."""
        data = check_resource(resource, expected_type)
        return self.ctx.validator.validate(data)

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
        if data["resourceType"] == "ServiceRequest":
            referral = referrals.receive(self.repo, self.ctx, self.principal, data, resource_id=resource_id)
            return referral.service_request, referral.created
        return self.repo.create(data, resource_id=resource_id), True

    def find_referral(self, service_request: dict[str, Any]) -> Stored | None:
        """The referral already stored under one of this ServiceRequest's identifiers, if any."""
        return referrals.find_resend(self.repo, service_request)

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
        return self._update(data, if_match=if_match, method="PUT")

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
        if if_match is None and resource_type != "Task":  # Tasks insist on If-Match (see _update)
            if_match = current.version_id
        stored, _ = self._update(data, if_match=if_match, method="PATCH")
        return stored

    def _update(self, data: dict[str, Any], *, if_match: int | None, method: str) -> tuple[Stored, bool]:
        if data["resourceType"] != "Task":
            return self.repo.update(data, if_match=if_match, method=method)
        current = self.repo.find("Task", data["id"])
        if current is None:
            raise FhirError(
                422,
                [
                    error(
                        "business-rule",
                        "Tasks are created by the gateway from referrals; update an existing Task",
                        "Task.id",
                    )
                ],
            )
        change = tasks.check_update(
            current.content, data, self.principal, if_match, self._practice_of(current.content)
        )
        data = {**data, "lastModified": format_instant(utc_now())}
        stored, _ = self.repo.update(data, if_match=if_match, method=method)
        tasks.follow_up(self.repo, stored, change)
        feedback.for_transition(self.repo, self.ctx, stored, change)
        return stored, False

    def _practice_of(self, task: dict[str, Any]) -> str | None:
        requester = (task.get("requester") or {}).get("reference", "")
        practice = self.ctx.directory(self.repo).practice_of(requester)
        return f"Organization/{practice['id']}" if practice else None

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
