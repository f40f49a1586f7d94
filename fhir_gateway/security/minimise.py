"""Consent-driven minimisation: the social domain sees only what the patient agreed to share.

A welfare organisation is no treatment provider under the WGBO. What its coach needs is who the
patient is, how to reach them and the social question; diagnosis codes and clinical notes only
when the consent says so (`wor-consent-scope` codes in Consent.provision.code).
"""

from __future__ import annotations

from typing import Any

CONSENT_SCOPE = "https://wor.example.nl/fhir/CodeSystem/wor-consent-scope"
REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}
SOCIAL_DOMAIN_ROLES = frozenset({"welfare-org"})
MINIMISED_TYPES = frozenset({"Patient", "ServiceRequest"})

# element → the consent scope that releases it; elements not listed are never shared
PATIENT_ELEMENTS = {
    "name": "contact-details",
    "telecom": "contact-details",
    "address": "contact-details",
    "communication": "contact-details",
    "gender": "contact-details",
}
SERVICE_REQUEST_ELEMENTS = {
    "identifier": None,
    "status": None,
    "intent": None,
    "category": None,
    "priority": None,
    "subject": None,
    "authoredOn": None,
    "requester": None,
    "performer": None,
    "supportingInfo": None,
    "note": "social-question",
    "patientInstruction": "social-question",
    "reasonCode": "diagnosis-codes",
    "orderDetail": "clinical-notes",
    "reasonReference": "clinical-notes",
}
ALWAYS = ("resourceType", "id", "meta")


def consent_scopes(consents: list[dict[str, Any]]) -> set[str]:
    """Scopes granted by the patient's active, permitting consents."""
    scopes: set[str] = set()
    for consent in consents:
        provision = consent.get("provision") or {}
        if consent.get("status") != "active" or provision.get("type", "permit") != "permit":
            continue
        for concept in provision.get("code", []):
            scopes.update(c["code"] for c in concept.get("coding", []) if c.get("system") == CONSENT_SCOPE)
    return scopes


def minimise(resource: dict[str, Any], scopes: set[str]) -> dict[str, Any]:
    """The view of `resource` a welfare organisation may have, marked REDACTED when cut."""
    rules = PATIENT_ELEMENTS if resource["resourceType"] == "Patient" else SERVICE_REQUEST_ELEMENTS
    view = {k: v for k, v in resource.items() if k in ALWAYS}
    for key, value in resource.items():
        if key in ALWAYS or key not in rules:
            continue
        needed = rules[key]
        if needed is None or needed in scopes:
            view[key] = value
    if len(view) < len(resource):
        meta = dict(view.get("meta") or {})
        meta["security"] = [*meta.get("security", []), REDACTED]
        view["meta"] = meta
    return view
