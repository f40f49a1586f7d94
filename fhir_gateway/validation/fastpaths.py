"""Python twins of the WoR FHIRPath invariants, for the hot path.

fhirpathpy costs 100-500 µs per invariant evaluation, which would make profile validation the
largest cost of a referral. Each function here is the exact equivalent of one invariant in
profiles/ and is used only while the profile's expression is byte-for-byte the one it was
written for: edit the expression in the JSON and the gateway falls back to fhirpathpy (correct,
just slower). tests/unit/test_validation.py checks every twin against fhirpathpy.

Each function returns True where the FHIRPath expression evaluates to `[true]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_gateway.vocabulary import AGB, BIG, CONSENT_SCOPE, URA, UZI, ConsentScope

Resource = dict[str, Any]

_NL_POSTCODE = re.compile(r"^[1-9][0-9]{3} ?[A-Za-z]{2}$")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _has_ref(element: str, rtype: str) -> Callable[[Resource], bool]:
    pattern = re.compile(f"(^|/){rtype}/[^/]+(/_history/[^/]+)?$")

    def check(res: Resource) -> bool:
        for ref in _list(res.get(element)):
            if not isinstance(ref, dict):
                continue
            literal = ref.get("reference")
            if ref.get("type") == rtype or (isinstance(literal, str) and pattern.search(literal)):
                return True
        return False

    return check


def _implies_exists(key: str, value: str, required: str) -> Callable[[Resource], bool]:
    """`key = 'value' implies required.exists()` with FHIRPath's empty-collection logic."""

    def check(res: Resource) -> bool:
        left = res.get(key)
        if left is None:  # {} implies true = true; {} implies false = {}
            return required in res
        return left != value or required in res

    return check


def _has_identifier(*systems: str) -> Callable[[Resource], bool]:
    wanted = frozenset(systems)
    return lambda res: any(
        isinstance(i, dict) and i.get("system") in wanted for i in _list(res.get("identifier"))
    )


def _consent_permits_contact(res: Resource) -> bool:
    provision = res.get("provision")
    if not isinstance(provision, dict) or provision.get("type") != "permit":
        return False
    return any(
        isinstance(c, dict) and c.get("system") == CONSENT_SCOPE and c.get("code") == ConsentScope.CONTACT_DETAILS
        for cc in _list(provision.get("code"))
        if isinstance(cc, dict)
        for c in _list(cc.get("coding"))
    )


def _dutch_postcodes(res: Resource) -> bool:
    for address in _list(res.get("address")):
        if not isinstance(address, dict) or address.get("country") not in (None, "NL", "NLD", "Nederland"):
            continue
        code = address.get("postalCode")
        if isinstance(code, str) and not _NL_POSTCODE.search(code):
            return False
    return True


_REF = "{e}.exists(type = '{t}' or reference.matches('(^|/){t}/[^/]+(/_history/[^/]+)?$'))"

FAST_PATHS: dict[tuple[str, str], Callable[[Resource], bool]] = {
    ("wor-sr-1", _REF.format(e="supportingInfo", t="Consent")): _has_ref("supportingInfo", "Consent"),
    ("wor-cp-1", _REF.format(e="supportingInfo", t="ServiceRequest")): _has_ref(
        "supportingInfo", "ServiceRequest"
    ),
    ("wor-task-1", "status = 'rejected' implies statusReason.exists()"): _implies_exists(
        "status", "rejected", "statusReason"
    ),
    ("wor-fb-1", "status = 'completed' implies sent.exists()"): _implies_exists(
        "status", "completed", "sent"
    ),
    (
        "wor-con-1",
        "provision.type = 'permit' and provision.code.coding.where(system = "
        f"'{CONSENT_SCOPE}' and code = '{ConsentScope.CONTACT_DETAILS}').exists()",
    ): _consent_permits_contact,
    (
        "wor-pat-1",
        "address.where(country.empty() or country = 'NL' or country = 'NLD' or country = 'Nederland')"
        ".postalCode.all(matches('^[1-9][0-9]{3} ?[A-Za-z]{2}$'))",
    ): _dutch_postcodes,
    (
        "wor-prac-1",
        f"identifier.where(system = '{AGB}' or system = '{UZI}' or system = '{BIG}').exists()",
    ): _has_identifier(AGB, UZI, BIG),
    ("wor-org-1", f"identifier.where(system = '{AGB}' or system = '{URA}').exists()"): _has_identifier(
        AGB, URA
    ),
}
