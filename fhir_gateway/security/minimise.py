"""Consent-driven minimisation: the social domain sees only what the patient agreed to share.

The rules are data (`mappings/privacy/minimisation.yaml`): per resource type, which elements each
consent scope (`wor-consent-scope` codes in Consent.provision.code) releases. Elements no rule
names are never shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from fhir_gateway.vocabulary import CONSENT_SCOPE, OBSERVATION_VALUE

REDACTED = {
    "system": OBSERVATION_VALUE,
    "code": "REDACTED",
    "display": "redacted",
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
            # Coding.code is optional (0..1): a coding of the scope system without one grants nothing
            scopes.update(
                c["code"]
                for c in concept.get("coding", [])
                if c.get("system") == CONSENT_SCOPE and isinstance(c.get("code"), str)
            )
    return scopes


@dataclass(frozen=True)
class MinimisationRules:
    roles: frozenset[str]
    always: dict[str, frozenset[str]]  # resource type → elements shared with any active consent
    by_scope: dict[str, dict[str, frozenset[str]]]  # resource type → scope → elements

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MinimisationRules:
        resources = data.get("resources") or {}
        return cls(
            roles=frozenset(data.get("roles") or ()),
            always={t: frozenset(r.get("always") or ()) for t, r in resources.items()},
            by_scope={
                t: {scope: frozenset(elems) for scope, elems in (r.get("scopes") or {}).items()}
                for t, r in resources.items()
            },
        )

    def applies(self, role: str, resource_type: str) -> bool:
        return role in self.roles and resource_type in self.always

    def minimise(self, resource: dict[str, Any], scopes: set[str]) -> dict[str, Any]:
        """The view a minimised role may have of `resource`, marked REDACTED when cut."""
        rtype = resource["resourceType"]
        allowed = set(self.always.get(rtype, ()))
        for scope, elements in self.by_scope.get(rtype, {}).items():
            if scope in scopes:
                allowed |= elements
        view = {k: v for k, v in resource.items() if k in ALWAYS or k in allowed}
        if len(view) < len(resource):
            meta = dict(view.get("meta") or {})
            meta["security"] = [*meta.get("security", []), REDACTED]
            view["meta"] = meta
        return view


@cache
def load_rules(path: Path) -> MinimisationRules:
    return MinimisationRules.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
