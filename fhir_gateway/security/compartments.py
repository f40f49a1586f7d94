"""Organisation compartments: which organisations may see which resource.

Visibility is written down when a resource is written (index rows `_compartment` naming
organisations), so searches filter in the query itself — counts and paging never leak — and a
read is one indexed lookup. Admins and the gateway itself see everything; the directory (the
social map) is readable by every authenticated client.
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.search import SearchQuery
from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.routing import Directory
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import DIRECTORY_TYPES, PRACTICE_REGISTERED_TYPES, SUBSCRIPTION_OWNER

ADMIN_ONLY_TYPES = frozenset({"AuditEvent", "Provenance"})


def sees_everything(principal: Principal) -> bool:
    return principal.role in ("admin", "system")


def organization_filter(principal: Principal, resource_type: str) -> str | None:
    """The organisation a search must be confined to; None = no confinement."""
    if sees_everything(principal) or resource_type in DIRECTORY_TYPES:
        return None
    return principal.organization or "Organization/-none-"


def confine(query: SearchQuery, principal: Principal) -> SearchQuery:
    """Confine a search (or a conditional match) to what the principal may see: its compartment;
    for Practitioner and PractitionerRole the public directory plus the practice's own records."""
    query.compartment = organization_filter(principal, query.resource_type)
    if query.resource_type in PRACTICE_REGISTERED_TYPES and not sees_everything(principal):
        query.compartment = principal.organization or "Organization/-none-"
        query.with_public = True
    return query


def registered_by_practice(repo: Repository, stored: Stored) -> bool:
    """A Practitioner(Role) a practice registered for itself (it has a compartment; the public
    directory's records have none)."""
    return stored.resource_type in PRACTICE_REGISTERED_TYPES and bool(repo.compartments_of(stored.pk))


def visible_to(repo: Repository, stored: Stored, organization: str | None) -> bool:
    """May `organization` see this resource? None stands for admin / the gateway itself."""
    if organization is None:
        return True
    if stored.resource_type in DIRECTORY_TYPES:
        return not registered_by_practice(repo, stored) or organization in repo.compartments_of(stored.pk)
    if stored.resource_type in ADMIN_ONLY_TYPES:
        return False
    return organization in repo.compartments_of(stored.pk)


def can_see(repo: Repository, principal: Principal, stored: Stored) -> bool:
    if sees_everything(principal):
        return True
    return visible_to(repo, stored, principal.organization or "Organization/-none-")


class CompartmentKeeper:
    """Write listener: grants follow the relations of the WoR loop.

    A Task makes its SR, Patient and Consent visible to the owner (welfare) and the requesting
    practice; a CarePlan follows its referral; a Communication is seen by its sender and its
    recipients' organisations; a Subscription by its owner."""

    def __init__(self, directory_of: Any) -> None:
        self.directory_of = directory_of  # Callable[[Repository], Directory]

    def __call__(self, repo: Repository, stored: Stored) -> None:
        if stored.deleted:
            return
        handler = getattr(self, f"_{stored.resource_type.lower()}", None)
        if handler is not None:
            handler(repo, stored, self.directory_of(repo))

    def _task(self, repo: Repository, task: Stored, directory: Directory) -> None:
        content = task.content
        orgs = {_ref(repo, content.get("owner")), _practice(repo, directory, content.get("requester"))}
        orgs.discard(None)
        sr = _find(repo, content.get("focus"))
        related = [task, sr, _find(repo, content.get("for")), *_registered_people(repo, directory, content)]
        if sr is not None:
            consents = (_find(repo, info) for info in sr.content.get("supportingInfo", []))
            related += [c for c in consents if c is not None and c.resource_type == "Consent"]
        repo.grant_all((r, orgs) for r in related if r is not None)  # type: ignore[misc]

    def _careplan(self, repo: Repository, plan: Stored, directory: Directory) -> None:
        for info in plan.content.get("supportingInfo", []):
            sr = _find(repo, info)
            if sr is not None and sr.resource_type == "ServiceRequest":
                repo.grant(plan, repo.compartments_of(sr.pk))
                repo.grant(plan, {_practice(repo, directory, sr.content.get("requester"))} - {None})  # type: ignore[arg-type]

    def _communication(self, repo: Repository, comm: Stored, directory: Directory) -> None:
        parties = [comm.content.get("sender"), *comm.content.get("recipient", [])]
        orgs = {_practice(repo, directory, p) for p in parties} - {None}
        repo.grant(comm, orgs)  # type: ignore[arg-type]

    def _subscription(self, repo: Repository, sub: Stored, directory: Directory) -> None:
        for ext in sub.content.get("extension", []):
            if ext.get("url") == SUBSCRIPTION_OWNER:
                owner = _ref(repo, ext.get("valueReference"))
                if owner:
                    repo.grant(sub, {owner})


def _registered_people(repo: Repository, directory: Directory, task: dict[str, Any]) -> list[Stored]:
    """The referrer a practice registered for itself (a locum's role and its practitioner): the
    parties of the referral see it, as everyone sees the public directory's. The directory knows
    which records are registered, so a public requester costs no lookup."""
    role_ref = _ref(repo, task.get("requester"))
    if not role_ref or role_ref not in directory.registered:
        return []
    found = [_find(repo, task.get("requester"))]
    role = directory.resolve(role_ref) or {}
    practitioner = _ref(repo, role.get("practitioner"))
    if practitioner in directory.registered:
        found.append(_find(repo, role.get("practitioner")))
    return [s for s in found if s is not None]


def _ref(repo: Repository, reference: dict[str, Any] | None) -> str | None:
    raw = (reference or {}).get("reference")
    return normalise_reference(raw, repo.base_url) if isinstance(raw, str) else None


def _find(repo: Repository, reference: dict[str, Any] | None) -> Stored | None:
    ref = _ref(repo, reference)
    if not ref or "/" not in ref:
        return None
    rtype, _, rid = ref.partition("/")
    return repo.find(rtype, rid)


def _practice(repo: Repository, directory: Directory, reference: dict[str, Any] | None) -> str | None:
    """The organisation a reference acts for: itself, or the practice of a (role of a) practitioner."""
    ref = _ref(repo, reference)
    if not ref:
        return None
    if ref.startswith("Organization/"):
        return ref
    practice = directory.practice_of(ref)
    return f"Organization/{practice['id']}" if practice else None
