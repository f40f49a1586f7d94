"""What a client may write: references only to what it sees, authorship only as itself.

Trust is decided by the authenticated organisation, never by the payload. So every reference in
a write by a non-admin must resolve to a resource the caller may already see (or to the public
directory); a reference to another organisation's record gets the very same 422 as one to a
record that does not exist, so a write cannot be used to probe for existence. Elements that name
the author of a resource must name the caller's own organisation or its people, and a message to
a practice must belong to a referral both parties take part in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.routing import Directory
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import DIRECTORY_TYPES

# The elements that say who wrote a resource, per type: they must be the caller (or its people).
AUTHORSHIP: dict[str, tuple[str, ...]] = {
    "ServiceRequest": ("requester",),
    "Communication": ("sender",),
    "QuestionnaireResponse": ("author",),
    "CarePlan": ("author",),
    "Consent": ("organization",),
    "PractitionerRole": ("organization",),  # a practice registers roles at itself only
}
# A Communication's link to its referral: one of these must name a ServiceRequest or Task.
REFERRAL_LINKS = ("basedOn", "partOf", "about")


def references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(FHIRPath, reference) for every Reference.reference in a resource, contained ones too."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield f"{path}.reference", ref
        for key, value in node.items():
            if key != "reference":
                yield from references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from references(item, f"{path}[{i}]")


def unknown_reference(target: str, where: str) -> FhirError:
    """The one answer for a reference the caller cannot use, whether or not the target exists."""
    return FhirError(
        422,
        [
            error(
                "not-found",
                f"{target[:200]} is not known: reference a resource on this server that you may see, "
                "sent first or in the same transaction Bundle",
                where,
            )
        ],
    )


class WriteCheck:
    """The checks on one write by a non-admin principal (admins and the gateway are trusted)."""

    def __init__(
        self,
        repo: Repository,
        directory: Directory,
        principal: Principal,
        can_see: Callable[[Stored], bool],
        *,
        promised: frozenset[str] = frozenset(),
        on_refused: Callable[[Stored], None] = lambda _stored: None,
    ) -> None:
        self.repo = repo
        self.directory = directory
        self.principal = principal
        self.can_see = can_see
        self.promised = promised  # Type/id of entries created in the same transaction
        self.on_refused = on_refused  # audit hook: an attempt on someone else's record

    def __call__(self, data: dict[str, Any]) -> None:
        rtype = data["resourceType"]
        targets = {}
        for where, ref in references(data, rtype):
            targets[where] = self.resolve(ref, where)
        for element in AUTHORSHIP.get(rtype, ()):
            self._check_author(data, element)
        if rtype == "Communication":
            self._check_communication(data, targets)

    def resolve(self, ref: str, where: str) -> Stored | None:
        """The visible resource a reference names; None for contained ones, entries of the same
        transaction and the directory."""
        if ref.startswith("#"):
            return None  # contained: checked as part of this resource
        target = normalise_reference(ref, self.repo.base_url) or ""
        rtype, _, rid = target.partition("/")
        if "://" in target or target.startswith("urn:") or not rid or "/" in rid:
            raise unknown_reference(ref, where)  # another server, or an unresolved urn:uuid
        if target in self.promised:
            return None
        if rtype in DIRECTORY_TYPES:  # public: it only has to exist (the directory is in memory)
            if self.directory.get(rtype, rid) is None:
                raise unknown_reference(target, where)
            if f"{rtype}/{rid}" in self.directory.registered:  # ... unless a practice registered it
                stored = self.repo.find(rtype, rid)
                if stored is None or not self.can_see(stored):
                    raise unknown_reference(target, where)
            return None
        stored = self.repo.find(rtype, rid)
        if stored is None or stored.deleted:
            raise unknown_reference(target, where)
        if not self.can_see(stored):
            self.on_refused(stored)
            raise unknown_reference(target, where)
        return stored

    def _own(self, reference: str) -> bool:
        ref = normalise_reference(reference, self.repo.base_url) or ""
        if ref == self.principal.organization:
            return True
        return any(f"Organization/{org['id']}" == self.principal.organization for org in self._orgs(ref))

    def _orgs(self, reference: str) -> list[dict[str, Any]]:
        return self.directory.practices_of(normalise_reference(reference, self.repo.base_url) or "")

    def _check_author(self, data: dict[str, Any], element: str) -> None:
        values = data.get(element)
        for i, value in enumerate(values if isinstance(values, list) else [values]):
            ref = value.get("reference") if isinstance(value, dict) else None
            if value is None or (isinstance(ref, str) and self._own(ref)):
                continue
            where = f"{data['resourceType']}.{element}" + (f"[{i}]" if isinstance(values, list) else "")
            raise FhirError(
                403,
                [
                    error(
                        "forbidden",
                        f"{where} must be your own organisation or one of its people",
                        where,
                    )
                ],
            )

    def _check_communication(self, data: dict[str, Any], targets: dict[str, Stored | None]) -> None:
        """A message belongs to a referral the caller takes part in, and goes only to its parties."""
        referrals = [
            stored
            for where, stored in targets.items()
            if stored is not None
            and stored.resource_type in ("ServiceRequest", "Task")
            and where.split(".")[1].split("[")[0] in REFERRAL_LINKS
        ]
        if not referrals:
            raise FhirError(
                422,
                [
                    error(
                        "business-rule",
                        "A Communication belongs to a referral: basedOn its ServiceRequest "
                        "(or about its Task)",
                        "Communication.basedOn",
                    )
                ],
            )
        parties = {org for stored in referrals for org in self.repo.compartments_of(stored.pk)}
        subjects = {
            normalise_reference((s.content.get("subject") or s.content.get("for") or {}).get("reference", ""))
            for s in referrals
        }
        for i, recipient in enumerate(data.get("recipient") or []):
            ref = normalise_reference((recipient or {}).get("reference", ""), self.repo.base_url) or ""
            if ref in parties or ref in subjects:
                continue
            if any(f"Organization/{org['id']}" in parties for org in self._orgs(ref)):
                continue
            where = f"Communication.recipient[{i}]"
            raise FhirError(
                422,
                [
                    error(
                        "business-rule", f"{where} takes no part in the referral this message is about", where
                    )
                ],
            )
