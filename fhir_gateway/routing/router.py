"""Decide which welfare organisation receives a referral.

Two rules, in order: an explicit `ServiceRequest.performer` the referrer chose, else the patient's
postcode (and house number) against the coverage ranges in the directory. Errors are 422
`FhirError`s whose diagnostics name at most the postcode area (PC4): an OperationOutcome is logged
and echoed, so it must not carry the patient's address.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from fhir_gateway.fhir.outcome import fail
from fhir_gateway.routing.directory import (
    Directory,
    house_number,
    normalise_postcode,
    split_reference,
)
from fhir_gateway.vocabulary import HOUSE_NUMBER_URL

PERFORMER = "ServiceRequest.performer[0]"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a referral goes and why; `region` picks the mapping overlay and region settings."""

    organization: str  # "Organization/<id>"
    service: str  # "HealthcareService/<id>"
    region: str
    municipality: str | None
    reason: str  # "performer" | "postcode"

    def as_dict(self) -> dict[str, Any]:
        """The `%route` input of the mappings."""
        return asdict(self)


def route(service_request: dict[str, Any], patient: dict[str, Any] | None, directory: Directory) -> Route:
    """Route a referral; raises FhirError(422) when no single WoR service can be chosen."""
    performers = service_request.get("performer") or []
    if performers:
        return _by_performer(performers[0], patient, directory)
    return _by_postcode(patient, directory)


def _by_performer(ref: dict[str, Any], patient: dict[str, Any] | None, directory: Directory) -> Route:
    target = directory.resolve(ref.get("reference"))
    if target is None and ref.get("identifier"):
        ident = ref["identifier"]
        target = directory.organization_by_identifier(ident.get("system", ""), ident.get("value", ""))
    if target is None:
        raise fail(
            422, "not-found", "The performer is not a known welfare organisation or service", PERFORMER
        )

    rtype = target["resourceType"]
    if rtype == "PractitionerRole":
        # a named coach: take the WoR service on the role, else the role's organisation
        services = [directory.resolve(s.get("reference")) for s in target.get("healthcareService", ())]
        wor = [s for s in services if s and directory.is_wor_service(s)]
        if len(wor) == 1:
            target = wor[0]
        else:
            org = directory.resolve((target.get("organization") or {}).get("reference"))
            if org is None:
                raise fail(
                    422, "not-found", "The performer's organisation is not in the directory", PERFORMER
                )
            target, rtype = org, org["resourceType"]
    if rtype == "Organization":
        services = directory.services_of(target["id"])
        if len(services) != 1:
            what = "no" if not services else "more than one"
            raise fail(
                422,
                "business-rule",
                f"Organization/{target['id']} provides {what} Welzijn op Recept service; "
                "refer to its HealthcareService",
                PERFORMER,
            )
        target = services[0]
    elif rtype != "HealthcareService":
        raise fail(422, "business-rule", f"A {rtype} cannot receive a Welzijn op Recept referral", PERFORMER)

    if not directory.is_wor_service(target):
        raise fail(
            422,
            "business-rule",
            f"HealthcareService/{target['id']} is not an active Welzijn op Recept service",
            PERFORMER,
        )
    org = split_reference((target.get("providedBy") or {}).get("reference"))
    if not org or directory.organization(org[1]) is None:
        raise fail(422, "business-rule", f"HealthcareService/{target['id']} has no provider", PERFORMER)
    return Route(
        organization=f"Organization/{org[1]}",
        service=f"HealthcareService/{target['id']}",
        region=directory.region_of(target),
        municipality=_municipality_for(target["id"], patient, directory),
        reason="performer",
    )


def _municipality_for(service_id: str, patient: dict[str, Any] | None, directory: Directory) -> str | None:
    """For a performer route: the municipality of the patient's range in that service, else its only one."""
    picked = pick_address(patient)
    if picked:
        _, address = picked
        pc = normalise_postcode(address.get("postalCode"))
        if pc:
            for rng in directory.coverage_for(pc, address_house_number(address)):
                if rng.service_id == service_id:
                    return rng.municipality
    names = directory.municipalities_of(service_id)
    return names[0] if len(names) == 1 else None


def _by_postcode(patient: dict[str, Any] | None, directory: Directory) -> Route:
    picked = pick_address(patient)
    if picked is None:
        raise fail(
            422,
            "business-rule",
            "No performer given and the patient has no address to route the referral by",
            "Patient.address",
        )
    index, address = picked
    where = f"Patient.address[{index}].postalCode"
    pc = normalise_postcode(address.get("postalCode"))
    if pc is None:
        raise fail(
            422, "business-rule", "The patient's postal code is missing or not a Dutch postcode", where
        )
    number = address_house_number(address)
    matches = directory.coverage_for(pc, number)
    if not matches:
        raise fail(
            422, "business-rule", f"No Welzijn op Recept provider covers postcode area {pc[:4]}", where
        )

    best = matches[0]
    tied = [m for m in matches if (m.level, m.width) == (best.level, best.width)]
    if len({m.service_id for m in tied}) > 1:
        # overlapping ranges of equal specificity: the municipality on the address decides,
        # otherwise refuse rather than send the patient's data to a possibly wrong organisation
        district = (address.get("district") or "").strip().casefold()
        by_district = [m for m in tied if m.municipality.casefold() == district]
        if len({m.service_id for m in by_district}) != 1:
            raise fail(
                422,
                "business-rule",
                f"More than one Welzijn op Recept provider covers postcode area {pc[:4]}; "
                "name the provider in ServiceRequest.performer",
                where,
            )
        best = by_district[0]

    service = directory.service(best.service_id) or {}
    return Route(
        organization=f"Organization/{best.organization_id}",
        service=f"HealthcareService/{best.service_id}",
        region=directory.region_of(service),
        municipality=best.municipality,
        reason="postcode",
    )


def pick_address(patient: dict[str, Any] | None) -> tuple[int, dict[str, Any]] | None:
    """The first `home` address (not `old`), else the first address; with its index for expressions."""
    addresses = (patient or {}).get("address") or []
    for i, a in enumerate(addresses):
        if a.get("use") == "home":
            return i, a
    for i, a in enumerate(addresses):
        if a.get("use") != "old":
            return i, a
    return None


_NUMBER_TOKEN = re.compile(r"^(\d+)")


def address_house_number(address: dict[str, Any]) -> int | None:
    """House number from the ISO 21090 houseNumber extension on Address.line, else parsed from the line.

    The fallback takes the last word after the street's first word that starts with digits
    ('Dorpsstraat 12A' -> 12, '2e Kruisstraat 5 bis' -> 5), so ordinal street names do not count.
    """
    for line_ext in address.get("_line") or ():
        for ext in (line_ext or {}).get("extension", ()):
            if ext.get("url") == HOUSE_NUMBER_URL:
                number = house_number(ext.get("valueString"))
                if number is not None:
                    return number
    for line in address.get("line") or ():
        words = line.split()
        for word in reversed(words[1:]):
            m = _NUMBER_TOKEN.match(word)
            if m:
                return int(m.group(1))
    return None
