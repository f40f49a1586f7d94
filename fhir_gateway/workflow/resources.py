"""The one path every read and write takes: scopes, compartments, validation, workflow, store,
minimisation, audit.

The REST router, Bundle processing, the v2 inbound path and the CLI all call this, so a
rule added here holds everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonpatch

from fhir_gateway.fhir.models import check_resource, is_known_type
from fhir_gateway.fhir.outcome import FhirError, Invalid, Issue, NotFound, error
from fhir_gateway.fhir.search import SearchQuery, parse_query, parse_search
from fhir_gateway.fhir.searchparams import format_instant, utc_now
from fhir_gateway.observability import request_id_var
from fhir_gateway.security.audit import AuditTrail
from fhir_gateway.security.compartments import (
    ADMIN_ONLY_TYPES,
    can_see,
    confine,
    organization_filter,
    registered_by_practice,
    sees_everything,
    visible_to,
)
from fhir_gateway.security.minimise import consent_scopes
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.scopes import require_scope
from fhir_gateway.security.writes import WriteCheck
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import after_commit
from fhir_gateway.store.repository import Repository, SearchPage, Stored, require_version
from fhir_gateway.vocabulary import DIRECTORY_TYPES, PRACTICE_REGISTERED_TYPES, SUBSCRIPTION_OWNER
from fhir_gateway.workflow import consents, feedback, linked_search, patients, practitioners, referrals, tasks
from fhir_gateway.workflow import subscriptions as subs
from fhir_gateway.workflow.context import GatewayContext

# What an update of these types sets off: (did it change what matters, what follows then)
FOLLOW_UPS: dict[str, tuple[Callable[[Any, dict[str, Any]], bool], Callable[[Repository, GatewayContext, Stored], Any]]] = {
    "Consent": (consents.withdrawn, consents.on_withdrawal),  # a withdrawal cancels the open Tasks
    "Patient": (patients.address_changed, patients.on_address_change),  # a move notifies, never re-routes
}


class ResourceService:
    def __init__(self, repo: Repository, ctx: GatewayContext, principal: Principal) -> None:
        self.repo = repo
        self.ctx = ctx
        self.principal = principal
        self.audit = AuditTrail(principal, request_id=request_id_var.get())
        self.promised: frozenset[str] = frozenset()  # Type/id a transaction creates: may be referenced
        # resources a transaction validated up front (by identity: the very dicts it dispatches),
        # each with its referral digest when it is a ServiceRequest: not validated twice
        self.prepared: dict[int, tuple[dict[str, Any], str | None]] = {}

    # -- access control --------------------------------------------------------------------------
    def _allow(self, resource_type: str, interaction: str) -> None:
        """Scope, admin-only and directory rules; a refusal is audited like any other attempt."""
        try:
            self._permitted(resource_type, interaction)
        except FhirError:
            self.audit.attempt(interaction, resource_type)
            raise
        self.audit.interaction = self.audit.interaction or interaction

    def _permitted(self, resource_type: str, interaction: str) -> None:
        require_scope(self.principal, resource_type, interaction)
        if resource_type in ADMIN_ONLY_TYPES:
            if not sees_everything(self.principal):
                raise FhirError(403, [error("forbidden", f"{resource_type} is for administrators only")])
            if interaction in ("create", "update", "patch", "delete"):
                raise FhirError(
                    405,
                    [
                        error(
                            "not-supported",
                            f"{resource_type} records are written by the gateway "
                            "itself and never changed through the API",
                        )
                    ],
                )
        if (
            interaction in ("create", "update", "patch", "delete")
            and resource_type in DIRECTORY_TYPES
            and not sees_everything(self.principal)
            and not self._registers(resource_type)
        ):
            raise FhirError(
                403, [error("forbidden", f"The directory ({resource_type}) is maintained by administrators")]
            )

    def _registers(self, resource_type: str) -> bool:
        """A GP practice registers its own people (a locum, a new colleague) in its compartment."""
        return resource_type in PRACTICE_REGISTERED_TYPES and self.principal.role == "gp-practice"

    def _own_registration(self, stored: Stored) -> Stored:
        """A practice changes only the Practitioner(Role) records it registered itself; the public
        directory stays the administrators'."""
        if self._registers(stored.resource_type) and not (
            registered_by_practice(self.repo, stored)
            and self.principal.organization in self.repo.compartments_of(stored.pk)
        ):
            raise FhirError(
                403,
                [
                    error(
                        "forbidden",
                        f"{stored.reference} is in the public directory, maintained by administrators; "
                        "a practice changes only the records it registered",
                    )
                ],
            )
        return stored

    def _visible(self, stored: Stored) -> Stored:
        """404, not 403, for what lies outside the caller's compartment: existence is not revealed."""
        if not can_see(self.repo, self.principal, stored):
            self.audit.touch("read", stored)  # a refused attempt is logged too
            raise NotFound(f"{stored.resource_type}/{stored.id} is not known")
        return stored

    def view(self, stored: Stored) -> dict[str, Any]:
        """The content the caller may see: welfare organisations get the consented minimum."""
        rules = self.ctx.minimisation
        if not rules.applies(self.principal.role, stored.resource_type):
            return stored.content
        return rules.minimise(stored.content, consent_scopes(self._consents_for(stored)))

    def _consents_for(self, stored: Stored) -> list[dict[str, Any]]:
        patient = (
            stored.reference
            if stored.resource_type == "Patient"
            else (stored.content.get("subject") or {}).get("reference")
        )
        if not patient:
            return []
        query = parse_search("Consent", [("patient", patient), ("status", "active")])
        return [c.content for c in self.repo.search(query).matches]

    # -- validation ------------------------------------------------------------------------------
    def validate(self, resource: Any, expected_type: str | None = None) -> dict[str, Any]:
        """Base specification (400), the WoR profile for the type (422) — all errors of both in
        one answer — and references only to what the caller may see (a coach writes about its
        own Tasks, not another's)."""
        if self._prepared(resource) is None:
            issues, status = self.validation_errors(resource, expected_type)
            if issues:
                raise Invalid(issues, status)
        data: dict[str, Any] = resource
        if not sees_everything(self.principal):
            if self._registers(data.get("resourceType", "")):
                practitioners.check(data)
            self._check_write(data)
        return data

    def _check_write(self, data: dict[str, Any]) -> None:
        WriteCheck(
            self.repo,
            self.ctx.directory(self.repo),
            self.principal,
            lambda stored: can_see(self.repo, self.principal, stored),
            promised=self.promised,
            on_refused=lambda stored: self.audit.touch("read", stored),
        )(data)

    def validation_errors(self, resource: Any, expected_type: str | None = None) -> tuple[list[Issue], int]:
        """Every error of `resource` and the status to answer with: the base specification's
        (400) and the WoR profile's (422) together, so a developer sees a bad code next to a
        structural error in one round trip instead of two. Profile rules run on structurally
        broken input too, unless the resource cannot be read as its type at all."""
        try:
            check_resource(resource, expected_type)
            base: list[Issue] = []
        except Invalid as exc:
            base = exc.issues
            if not _readable(resource, expected_type):
                return base, exc.status
        try:
            profile = [i for i in self.ctx.validator.validate(resource) if i.is_error]
        except Exception:  # the profile walk tripped over what the base errors already name
            if not base:
                raise
            profile = []
        seen = {i.expression for i in base}
        issues = base + [i for i in profile if i.expression is None or i.expression not in seen]
        return issues, 400 if base else 422

    def prepare(self, resource: dict[str, Any], digest: str | None = None) -> None:
        """Mark a resource `validation_errors` found valid (a transaction validates every entry
        before it writes one), with the referral digest of a ServiceRequest (`referrals`)."""
        self.prepared[id(resource)] = (resource, digest)

    def _prepared(self, resource: Any) -> tuple[dict[str, Any], str | None] | None:
        found = self.prepared.get(id(resource))
        return found if found is not None and found[0] is resource else None

    def may_write(self, resource_type: str, interaction: str) -> bool:
        """Whether the scope and type rules let the caller write this type (no audit: a refusal
        is reported, and audited, by the write itself)."""
        try:
            self._permitted(resource_type, interaction)
        except FhirError:
            return False
        return True

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
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        self._allow(resource_type or rtype or "Resource", "create")
        try:
            data = self.validate(resource, resource_type)
        except Invalid:
            if rtype == "ServiceRequest":  # a referral refused for its content
                referrals.count_refused(self.ctx, "invalid")
            raise
        prepared = self._prepared(resource)
        digest = prepared[1] if prepared is not None else None
        if if_none_exist:
            existing = self.conditional_match(data["resourceType"], if_none_exist, for_update=False)
            if existing is not None and referrals.shares_identifier(existing, data):
                # matched by its identifier: a resend, or a reused identifier with other content
                digest = digest or referrals.posted_digest(data)
                referrals.check_resend(self.repo, self.ctx, existing, digest)
            if existing is not None:  # one of the caller's own: a match never grants access
                self.audit.touch("create", existing)
                return existing, False
        data = {k: v for k, v in data.items() if k != "id"}  # the server assigns the id
        if data["resourceType"] == "Subscription":
            data = self._subscription(data, None)
        if data["resourceType"] == "ServiceRequest":
            referral = referrals.receive(
                self.repo, self.ctx, self.principal, data, resource_id=resource_id, digest=digest
            )
            stored, created = referral.service_request, referral.created
        else:
            stored, created = self.repo.create(data, resource_id=resource_id), True
        self.claim(stored)
        self.audit.touch("create", stored)
        if self._registers(stored.resource_type):
            role = practitioners.registered(self.repo, self.principal, stored)
            if role is not None:
                self.audit.touch("create", role)
        return stored, created

    def claim(self, stored: Stored) -> None:
        """Let the caller's organisation see a resource it created or proved to know."""
        if not self.principal.organization:
            return
        if stored.resource_type not in DIRECTORY_TYPES or self._registers(stored.resource_type):
            self.repo.grant(stored, {self.principal.organization})

    def find_referral(self, service_request: dict[str, Any]) -> Stored | None:
        """The caller's own referral already stored under one of this ServiceRequest's identifiers."""
        compartment = organization_filter(self.principal, "ServiceRequest")
        return referrals.find_resend(self.repo, service_request, compartment)

    def conditional_match(
        self, resource_type: str, criteria: str, where: str = "If-None-Exist", *, for_update: bool = True
    ) -> Stored | None:
        """The single resource matching `criteria` (a search query string) among those the caller
        may already see, None if none; 412 if several. Another organisation's record is no match:
        the caller makes its own, and learns nothing of the other.

        Holds a lock on the criteria (per organisation) until commit when it finds none, so two
        racing conditional creates cannot both miss (the second looks again once it has the lock),
        and on a match too when the caller writes to it (`for_update`: conditional update and
        delete, a referral's Patient), so those writes take turns. A match that is only read
        takes no lock: referrals of one practice naming its Organization and GP by ifNoneExist
        would otherwise run one at a time on PostgreSQL."""
        query = conditional_query(resource_type, criteria, self.ctx.settings, where)
        self._check_searchable(query)
        linked_search.resolve(query, self._linked_search)
        confine(query, self.principal)
        query.count = 2
        key = f"{query.compartment or '*'} {resource_type}?{criteria}"
        if not for_update:
            found = self._single_match(query, criteria, where)
            if found is not None:
                return found
        self.repo.lock(key)
        return self._single_match(query, criteria, where)

    def _single_match(self, query: SearchQuery, criteria: str, where: str) -> Stored | None:
        page = self.repo.search(query)
        if len(page.matches) > 1:
            raise FhirError(
                412,
                [
                    error(
                        "multiple-matches",
                        f"Criteria '{criteria}' match more than one {query.resource_type}",
                        where,
                    )
                ],
            )
        return page.matches[0] if page.matches else None

    def update(
        self, resource_type: str, rid: str, resource: Any, *, if_match: int | None = None
    ) -> tuple[Stored, bool]:
        self._allow(resource_type, "update")
        existing = self.repo.find(resource_type, rid)
        if existing is not None:
            self._own_registration(self._visible(existing))
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
        stored, created = self._update(data, if_match=if_match, method="PUT")
        if created:
            self.claim(stored)
        self.audit.touch("update", stored)
        return stored, created

    def refresh_patient(self, stored: Stored, posted: dict[str, Any]) -> Stored:
        """A referral's Patient that `ifNoneExist` matched to one of the caller's own records but
        says something new (a new address, a corrected name) updates that record: a new version
        (If-Match the matched one; the request's Provenance says the referral brought it), so the
        referral is routed on the address in force. A client that may not update Patients gets a
        409 instead of a referral routed on stale data."""
        if not patients.differs(stored.content, posted):
            return stored
        if not self.may_write("Patient", "update"):
            raise FhirError(
                409,
                [
                    error(
                        "conflict",
                        f"The Patient matched by ifNoneExist ({stored.reference}) differs from the "
                        "stored one and this client may not update Patients: update it first",
                        "Patient",
                    )
                ],
            )
        updated, _ = self.update("Patient", stored.id, {**posted, "id": stored.id}, if_match=stored.version_id)
        self.audit.reasons.append(f"{updated.reference} updated from the Patient of a referral Bundle")
        return updated

    def conditional_update(
        self, resource_type: str, criteria: str, resource: Any, *, if_match: int | None = None
    ) -> tuple[Stored, bool]:
        """`PUT [base]/Type?criteria` (R4 http.html#cond-update), matched by `conditional_match`
        inside the caller's compartment only: no match creates a record of the caller's own (the
        server assigns its id, so a body id never reaches another's record), one match is an
        ordinary update of it (If-Match honoured), several are 412. The match grants nothing:
        the update and the create check scopes and compartments as they always do."""
        self._allow(resource_type, "update")
        existing = self.conditional_match(resource_type, criteria, "url")
        if existing is None:
            if isinstance(resource, dict) and "id" in resource:  # a server-assigned id, never the body's
                resource = {k: v for k, v in resource.items() if k != "id"}
            return self.create(resource, resource_type=resource_type)
        if isinstance(resource, dict):
            if resource.get("id") not in (None, existing.id):
                raise Invalid(
                    [
                        error(
                            "invalid",
                            f"The resource id '{resource.get('id')}' is not the id of the match",
                            f"{resource_type}.id",
                        )
                    ]
                )
            resource = {**resource, "id": existing.id}
        return self.update(resource_type, existing.id, resource, if_match=if_match)

    def conditional_delete(self, resource_type: str, criteria: str) -> Stored | None:
        """`DELETE [base]/Type?criteria` in single-delete mode: the one match inside the caller's
        compartment is deleted as an ordinary delete; several are 412; none is 204, like the
        delete of what does not exist (R4 allows 204 or 404: 204 also says nothing about records
        of other organisations)."""
        self._allow(resource_type, "delete")
        existing = self.conditional_match(resource_type, criteria, "url")
        if existing is None:
            return None
        return self.delete(resource_type, existing.id)

    def patch(self, resource_type: str, rid: str, operations: Any, *, if_match: int | None = None) -> Stored:
        self._allow(resource_type, "patch")
        current = self._own_registration(self._visible(self.repo.read(resource_type, rid)))
        check_patch(operations)
        try:
            patched = jsonpatch.apply_patch(current.content, operations)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise FhirError(422, [error("processing", f"JSON Patch test failed: {exc}")]) from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise FhirError(422, [error("processing", f"JSON Patch could not be applied: {exc}")]) from None
        if not isinstance(patched, dict):  # check_patch refuses the ways there; kept as a net
            raise FhirError(422, [error("processing", "JSON Patch must leave a resource (an object)")])
        if patched.get("resourceType") != resource_type or patched.get("id") != rid:
            raise FhirError(422, [error("processing", "JSON Patch may not change resourceType or id")])
        data = self.validate(patched, resource_type)
        if if_match is None and resource_type != "Task":  # Tasks insist on If-Match (see _update)
            if_match = current.version_id
        stored, _ = self._update(data, if_match=if_match, method="PATCH")
        self.audit.touch("patch", stored)
        return stored

    def _update(self, data: dict[str, Any], *, if_match: int | None, method: str) -> tuple[Stored, bool]:
        if data["resourceType"] == "Subscription":
            data = self._subscription(data, self.repo.find("Subscription", data["id"]))
        follow_up = FOLLOW_UPS.get(data["resourceType"])
        if follow_up is not None:
            changed, then = follow_up
            before = self.repo.find(data["resourceType"], data["id"])
            stored, created = self.repo.update(data, if_match=if_match, method=method)
            if changed(before.content if before else None, stored.content):
                then(self.repo, self.ctx, stored)
            return stored, created
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
        # a stale If-Match is 412 before any workflow rule answers (RFC 9110 §13.2.1: preconditions
        # first), so a client that missed an update learns that, whatever the Task's state now
        require_version(current, if_match)
        change = tasks.check_update(
            current.content, data, self.principal, if_match, self._practice_of(current.content)
        )
        data = {**data, "lastModified": format_instant(utc_now())}
        stored, _ = self.repo.update(data, if_match=if_match, method=method)
        tasks.follow_up(self.repo, stored, change)
        metrics = self.ctx.metrics
        after_commit(self.repo.session, lambda: metrics.task_transition(change.old_status, change.new_status))
        feedback.for_transition(self.repo, self.ctx, stored, change)
        return stored, False

    def _subscription(self, data: dict[str, Any], existing: Stored | None) -> dict[str, Any]:
        """A Subscription as the gateway keeps it: owned by the caller's organisation (a client
        never names another owner), calling only an allowed endpoint, asking only for what the
        owner may search, and active only after the handshake the gateway runs itself."""
        subs.check_channel(data, loopback_http=self.ctx.settings.subscription_loopback_http)
        if self.principal.organization:
            data = _with_owner(data, self.principal.organization)
        self._check_criteria(data)
        if sees_everything(self.principal):
            return data
        status = _client_status(data, existing.content if existing is not None else None)
        data = {**data, "status": status}
        if status != "error":
            data.pop("error", None)
        return data

    def _check_criteria(self, data: dict[str, Any]) -> None:
        """Criteria (or a topic's filter) must be a search the caller could run itself: 422 when
        it is no valid search, 403 when it needs a scope or reads elements the view withholds."""
        sub = subs.info(data)
        if sub is None:
            raise FhirError(
                422,
                [
                    error(
                        "invalid",
                        "criteria must be a search (Type?param=value) or the SubscriptionTopic "
                        f"{', '.join(subs.TOPICS)} with backport-filter-criteria",
                        "Subscription.criteria",
                    )
                ],
            )
        if not sees_everything(self.principal):
            require_scope(self.principal, sub.resource_type, "search")
        try:
            query = parse_search(
                sub.resource_type, list(sub.params), strict=True, base_url=self.repo.base_url
            )
        except FhirError as exc:
            if exc.status >= 500:
                raise
            issues = [
                error("invalid", f"criteria: {i.diagnostics}", "Subscription.criteria") for i in exc.issues
            ]
            raise FhirError(422, issues) from None
        if query.includes:
            raise FhirError(422, [error("invalid", "criteria may not use _include", "Subscription.criteria")])
        if any(c.kind in ("chain", "has") for c in query.conditions):
            raise FhirError(
                422,
                [error("invalid", "criteria may not chain or use _has (they are matched per write)", "Subscription.criteria")],
            )
        self._check_searchable(query)

    def _practice_of(self, task: dict[str, Any]) -> str | None:
        requester = (task.get("requester") or {}).get("reference", "")
        practice = self.ctx.directory(self.repo).practice_of(requester)
        return f"Organization/{practice['id']}" if practice else None

    def delete(self, resource_type: str, rid: str) -> Stored | None:
        self._allow(resource_type, "delete")
        existing = self.repo.find(resource_type, rid)
        if existing is not None:
            self._own_registration(self._visible(existing))
            if resource_type == "Task" or resource_type == "ServiceRequest":
                raise FhirError(
                    409,
                    [
                        error(
                            "business-rule",
                            f"A {resource_type} of the WoR loop is not deleted; cancel the Task instead",
                        )
                    ],
                )
        deleted = self.repo.delete(resource_type, rid)
        if existing is not None:
            self.audit.touch("delete", existing)
        return deleted

    # -- reads -----------------------------------------------------------------------------------
    def read(self, resource_type: str, rid: str) -> Stored:
        self._allow(resource_type, "read")
        current = self.repo.find(resource_type, rid)
        if current is not None:
            self._visible(current)
        stored = self.repo.read(resource_type, rid)  # 404 / 410 with the right outcome
        self.audit.touch("read", stored)
        return stored

    def vread(self, resource_type: str, rid: str, version: int) -> Stored:
        self._allow(resource_type, "read")
        self.read_access_check(resource_type, rid)
        stored = self.repo.vread(resource_type, rid, version)
        self.audit.touch("vread", stored)
        return stored

    def read_access_check(self, resource_type: str, rid: str) -> Stored | None:
        """The current row (deleted or not) if the caller may see it; 404 if it may not."""
        row = self.repo.current(resource_type, rid)
        if row is not None:
            self._visible(row)
        return row

    def _check_searchable(self, query: SearchQuery) -> None:
        """A minimised caller searches only on elements its view always shows: a parameter (or
        `:missing`, an _include, a _sort key) on an element the consent may withhold would answer "is it
        there?" for what the view hides. Refused the same way whatever the data."""
        rules = self.ctx.minimisation
        params = [(c.param, c.name) for c in query.conditions if c.param is not None]
        params += [(inc.param, f"_{'rev' if inc.reverse else ''}include") for inc in query.includes]
        params += [
            (key.param, "_sort") for key in query.sort_keys if key.param is not None
        ]  # order leaks too
        for param, name in params:
            if not rules.applies(self.principal.role, param.resource_type):
                continue
            hidden = sorted({path[0] for path in param.paths} - rules.always[param.resource_type])
            if hidden:
                raise FhirError(
                    403,
                    [
                        error(
                            "forbidden",
                            f"Searching {param.resource_type} on '{param.name}' is not allowed: it reads "
                            f"{', '.join(hidden)}, which your view of the patient's data may leave out",
                            name,
                        )
                    ],
                )

    def search(self, query: SearchQuery) -> SearchPage:
        self.audit.touch(
            "search-type", query=query.resource_type + "?" + "&".join(f"{k}={v}" for k, v in query.echo)
        )
        self._allow(query.resource_type, "search")
        self._check_searchable(query)
        linked_search.resolve(query, self._linked_search)
        confine(query, self.principal)
        page = self.repo.search(query, include_filter=lambda s: can_see(self.repo, self.principal, s))
        for stored in (*page.matches, *page.included):
            self.audit.touch("search-type", stored)
        return page

    def _linked_search(self, sub: SearchQuery) -> SearchPage:
        """The search behind a chain or `_has`, run as the caller: its scope, its view, its compartment."""
        self._allow(sub.resource_type, "search")
        self._check_searchable(sub)
        confine(sub, self.principal)
        return self.repo.search(sub)

    def history(
        self, resource_type: str | None, rid: str | None, **kwargs: Any
    ) -> tuple[list[Stored], int | None]:
        if not (resource_type and rid):
            if not sees_everything(self.principal):
                raise FhirError(
                    403,
                    [
                        error(
                            "forbidden",
                            "Type and system history are for administrators; "
                            "read the history of a resource you can see",
                        )
                    ],
                )
            return self.repo.history(resource_type, rid, **kwargs)
        self._allow(resource_type, "read")
        if self.read_access_check(resource_type, rid) is None:
            raise NotFound(f"{resource_type}/{rid} is not known")
        entries, more = self.repo.history(resource_type, rid, **kwargs)
        if entries:
            self.audit.touch("history-instance", entries[0])
        return entries, more


def subscriber_view(
    repo: Repository, ctx: GatewayContext, owner: str | None, focus: str, version: int
) -> dict[str, Any] | None:
    """What a Subscription's owner may see of one version of `focus`, checked per notification
    (a Task may have moved on to another organisation since): None outside the owner's
    compartment, else the owner's own view — minimised unless the directory says the owner is a
    GP practice. No owner: the administrator's Subscription, the whole resource."""
    rtype, _, rid = focus.partition("/")
    current = repo.find(rtype, rid)
    if current is None:
        return None
    if owner is not None and not visible_to(repo, current, owner):
        return None
    try:
        stored = repo.vread(rtype, rid, version)
    except FhirError:
        return None
    if owner is None:
        return stored.content
    directory = ctx.directory(repo)
    org = directory.organization(owner.partition("/")[2])
    role = "gp-practice" if org is not None and directory.is_gp_practice(org) else "welfare-org"
    principal = Principal(
        client_id=f"subscription:{owner}", organization=owner, role=role, authenticated=True
    )
    return ResourceService(repo, ctx, principal).view(stored)


def _with_owner(subscription: dict[str, Any], organization: str) -> dict[str, Any]:
    """Record who owns a Subscription: notifications never leave the owner's compartment."""
    extensions = [e for e in subscription.get("extension", []) if e.get("url") != SUBSCRIPTION_OWNER]
    extensions.append({"url": SUBSCRIPTION_OWNER, "valueReference": {"reference": organization}})
    return {**subscription, "extension": extensions}


def _client_status(data: dict[str, Any], existing: dict[str, Any] | None) -> str:
    """The status a client's write leaves: `off` turns a Subscription off, anything else asks for
    a (new) handshake — unless the client puts back an active or failed one unchanged."""
    status = data.get("status")
    if status == "off":
        return "off"
    unchanged = existing is not None and all(
        existing.get(k) == data.get(k) for k in ("criteria", "_criteria", "channel")
    )
    if (
        status in ("active", "error")
        and unchanged
        and existing is not None
        and existing.get("status") == status
    ):
        return str(status)
    return "requested"


# Search result parameters: they shape a page, they select nothing (`_format`, `_pretty` may ride
# along on a conditional update's URL and shape only the answer)
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_cursor", "_elements"}
)


def conditional_query(
    resource_type: str, criteria: str, settings: Settings, where: str = "If-None-Exist"
) -> SearchQuery:
    """The search an If-None-Exist header (or a Bundle entry's ifNoneExist, or the query of a
    conditional update or delete: `where` = "url") asks for: strict, and capped like any search
    (400 before the store is asked)."""
    params = parse_query(
        criteria.lstrip("?"),
        max_parameters=settings.max_query_parameters,
        where=where,
        keep_blank_values=False,
    )
    if not params:
        raise FhirError(
            400,
            [
                error(
                    "invalid",
                    f"{where} needs search criteria, e.g. identifier=system|value",
                    where,
                )
            ],
        )
    shaping = [name for name, _ in params if name.partition(":")[0] in RESULT_PARAMETERS]
    if shaping:  # `_summary=count` alone matched nothing, so a conditional write always created
        raise FhirError(
            400,
            [
                error(
                    "invalid",
                    f"{where} takes criteria that select resources; '{shaping[0][:64]}' only shapes "
                    "a search result",
                    where,
                )
            ],
        )
    return parse_search(
        resource_type,
        params,
        strict=True,
        max_or_values=settings.max_search_or_values,
        max_parameters=settings.max_query_parameters,
        max_values=settings.max_search_values,
    )


MAX_PATCH_OPERATIONS = 1000
# what a JSON Patch may not change: the document itself (use PUT), what names the resource, and
# what the server keeps (the store sets versionId and lastUpdated anyway: refusing says so)
_PROTECTED_PATHS = ("", "/resourceType", "/id", "/meta/versionId", "/meta/lastUpdated")
_MUTATING = {
    "add": ("path",),
    "remove": ("path",),
    "replace": ("path",),
    "move": ("path", "from"),
    "copy": ("path",),
}


def check_patch(operations: Any) -> None:
    """The JSON Patch's shape, before it is applied: an array of at most MAX_PATCH_OPERATIONS
    (413 `too-costly`), and no operation that changes the whole document, resourceType, id or the
    server's meta (422 `processing`, `Patch[i]`). `test` may read anything; everything else
    (unknown op, bad pointer, missing value, failed test) jsonpatch refuses: 422 too."""
    if not isinstance(operations, list):
        raise Invalid([error("structure", "A JSON Patch body is an array of operations")])
    if len(operations) > MAX_PATCH_OPERATIONS:
        raise FhirError(
            413,
            [
                error(
                    "too-costly",
                    f"A JSON Patch of {len(operations)} operations; at most {MAX_PATCH_OPERATIONS} "
                    "are accepted (send a PUT instead)",
                )
            ],
        )
    for i, op in enumerate(operations):
        if not isinstance(op, dict):
            raise FhirError(
                422, [error("processing", f"JSON Patch operation {i} is not an object", f"Patch[{i}]")]
            )
        for member in _MUTATING.get(op.get("op"), ()) if isinstance(op.get("op"), str) else ():
            pointer = op.get(member)
            if isinstance(pointer, str) and pointer in _PROTECTED_PATHS:
                target = "the whole resource (use PUT)" if pointer == "" else f"'{pointer}'"
                raise FhirError(
                    422,
                    [
                        error(
                            "processing",
                            f"JSON Patch operation {i} ({op['op']}) may not change {target}",
                            f"Patch[{i}].{member}",
                        )
                    ],
                )


def _readable(resource: Any, expected_type: str | None) -> bool:
    """Whether profile rules can be applied: an object of a known type, the one the URL names."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    return isinstance(rtype, str) and is_known_type(rtype) and expected_type in (None, rtype)
