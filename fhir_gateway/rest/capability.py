"""The CapabilityStatement, built from what the router and search parameters really support."""

from __future__ import annotations

from typing import Any

from fhir_gateway import __version__
from fhir_gateway.fhir.search import SORTABLE_TYPES
from fhir_gateway.fhir.searchparams import load_search_params
from fhir_gateway.vocabulary import (
    BACKPORT_TOPIC_CANONICAL,
    OAUTH_URIS,
    RESTFUL_SECURITY_SERVICE,
    SMART_ON_FHIR,
    WORKLIST_TOPIC,
)

SUBSCRIPTION_DOCUMENTATION = (
    "rest-hook only; payload empty, id-only or full-resource (the owner's minimised view). "
    "Criteria-based (criteria = a search the owner may run) or topic-based (Subscriptions "
    "Backport IG: the worklist topic with backport-filter-criteria). Created `requested`; the "
    "gateway's handshake makes it `active` (or `error`). A client's Subscription is owned by its "
    "organisation and notifies only about what that organisation may see. channel.endpoint: https "
    "to a public host."
)

_SEARCH_TYPE_DOCS = {
    "token": "token",
    "reference": "reference",
    "date": "date",
    "string": "string",
}
_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]


def _operations(definitions: dict[tuple[str | None, str], dict[str, Any]], rtype: str | None) -> list[Any]:
    """CapabilityStatement operations at one level: each named by its definition's canonical url."""
    return [
        {"name": name.lstrip("$"), "definition": definition["url"]}
        for (t, name), definition in sorted(definitions.items(), key=lambda item: item[0][1])
        if t == rtype
    ]


def token_url_for(base_url: str) -> str:
    """The token endpoint beside the FHIR base (`…/fhir` → `…/auth/token`), as
    `api.auth.token_endpoint_url` derives it: clients reading only the CapabilityStatement find
    the same URL as those reading `.well-known/smart-configuration`."""
    base = base_url.rstrip("/")
    root = base[: -len("/fhir")] if base.endswith("/fhir") else base
    return root + "/auth/token"


def security(token_url: str) -> dict[str, Any]:
    """`rest.security` for SMART Backend Services (SMART App Launch: "Capability Statement
    discovery", kept for R4 clients that look here rather than at `.well-known`)."""
    return {
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": token_url}]}],
        "cors": False,
        "service": [
            {
                "coding": [{"system": RESTFUL_SECURITY_SERVICE, "code": SMART_ON_FHIR}],
                "text": "SMART Backend Services (client_credentials, private_key_jwt)",
            }
        ],
        "description": "Every call except /metadata needs a bearer token from the token endpoint; "
        "see [base]/.well-known/smart-configuration.",
    }


def _resource_entry(
    rtype: str,
    params: dict[str, Any],
    operations: dict[tuple[str | None, str], dict[str, Any]],
    profiles: dict[str, str],
) -> dict[str, Any]:
    """One `rest.resource`: interactions, search parameters, sort keys, profile, operations."""
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": [{"code": c} for c in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        # R4 has no element for sort keys: the resource's documentation names them
        "documentation": "_sort keys: "
        + ", ".join(["_lastUpdated", "_id", *(n for n, p in params.items() if p.type in SORTABLE_TYPES)]),
        "searchInclude": [f"{rtype}:{n}" for n, p in params.items() if p.type == "reference"],
        "searchParam": [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
            *(
                {"name": n, "type": _SEARCH_TYPE_DOCS[p.type], "documentation": p.expression}
                for n, p in params.items()
            ),
        ],
    }
    if rtype in profiles:
        entry["profile"] = profiles[rtype]
    if rtype == "Subscription":  # what the Backport IG asks a server to declare
        entry["extension"] = [{"url": BACKPORT_TOPIC_CANONICAL, "valueCanonical": WORKLIST_TOPIC}]
        entry["documentation"] += "\n\n" + SUBSCRIPTION_DOCUMENTATION
    ops = _operations(operations, rtype)
    if ops:
        entry["operation"] = ops
    return entry


def capability_statement(
    base_url: str,
    operations: dict[tuple[str | None, str], dict[str, Any]],
    profiles: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`operations`: (resource type or None, $name) → OperationDefinition."""
    resources = [
        _resource_entry(rtype, params, operations, profiles or {})
        for rtype, params in sorted(load_search_params().items())
    ]
    system_ops = _operations(operations, None)
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Welzijn op Recept referral gateway: GP practices refer, welfare organisations "
        "work the Task, feedback returns as Communication. Search chains one level on reference "
        "parameters (name:Type.param=value, or name.param when the parameter declares one target), "
        "confined like _has.",
        "security": security(token_url_for(base_url)),
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        "searchParam": [
            {"name": "_count", "type": "number"},
            {
                "name": "_sort",
                "type": "string",
                "documentation": "_lastUpdated, _id and each type's date, token and string parameters "
                "(listed per resource), '-' for descending, up to three keys; paging stays stable",
            },
            {
                "name": "_elements",
                "type": "string",
                "documentation": "top-level elements to return (with id, meta); on search matches, read "
                "and vread; cut from the caller's (minimised) view and tagged SUBSETTED",
            },
            {
                "name": "_has",
                "type": "special",
                "documentation": "one level: _has:Type:reference:param=value; the search on Type runs as "
                "the caller (scope, view, compartment), at most 1000 matches",
            },
            {"name": "_summary", "type": "token", "documentation": "count"},
            {"name": "_total", "type": "token", "documentation": "accurate"},
        ],
    }
    if system_ops:
        rest["operation"] = system_ops
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "fhir_gateway",
        "kind": "instance",
        "software": {"name": "fhir-gateway", "version": __version__},
        "implementation": {"description": "Welzijn op Recept FHIR gateway", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": [
            "json",
            "xml",
            "application/fhir+json",
            "application/fhir+xml",
            "application/json",
            "application/xml",
        ],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
