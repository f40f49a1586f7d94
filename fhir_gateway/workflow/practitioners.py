"""A practice's own people: the locum or new colleague who is not (yet) in the public directory.

A GP practice is the authority on who works for it. It registers a Practitioner or a
PractitionerRole in its own compartment (never the public directory, which stays the
administrators'), over FHIR or implicitly from the PRD segment of an HL7 v2 referral. A
Practitioner registered without a role gets one at the practice, so the gateway knows whose person
the referrer is (authorship, feedback, the welfare organisation's view of the requester).
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, Stored


def check(data: dict[str, Any]) -> None:
    """A role a practice registers names its organisation (WriteCheck makes sure it is its own)."""
    if data.get("resourceType") == "PractitionerRole" and not (data.get("organization") or {}).get("reference"):
        raise FhirError(
            422,
            [
                error(
                    "required",
                    "A PractitionerRole a practice registers names the practice: PractitionerRole.organization",
                    "PractitionerRole.organization",
                )
            ],
        )


def registered(repo: Repository, principal: Principal, stored: Stored) -> Stored | None:
    """After a practice registered a (new, so role-less) Practitioner: its role at the practice,
    in the practice's compartment."""
    if stored.resource_type != "Practitioner" or not principal.organization:
        return None
    role = repo.create(
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": stored.reference},
            "organization": {"reference": principal.organization},
        }
    )
    repo.grant(role, {principal.organization})
    return role
