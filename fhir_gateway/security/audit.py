"""NEN 7513 access logging: every access to personal data becomes an AuditEvent.

One AuditEvent per request: what happened (action + REST interaction), when, which client on
behalf of which organisation and role, which resources and which patients, and the outcome. It
is a normal FHIR resource, so `GET /AuditEvent?patient=Patient/x` answers "who saw my data".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_gateway.fhir.search import FORBIDDEN_CHARACTERS
from fhir_gateway.fhir.searchparams import format_instant, normalise_reference, utc_now
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import (
    AUDIT_ENTITY_TYPE,
    AUDIT_EVENT_TYPE,
    CHANNEL,
    CLIENT_ID,
    DATA_OPERATION,
    DCM,
    OBJECT_ROLE,
    PARTICIPATION_TYPE,
    PROVENANCE_PARTICIPANT_TYPE,
    RESTFUL_INTERACTION,
    SECURITY_SOURCE_TYPE,
)

PERSONAL_TYPES = frozenset(
    {"Patient", "ServiceRequest", "Task", "CarePlan", "Communication", "Consent", "QuestionnaireResponse"}
)
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "search-type": "E",
    "history-instance": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "operation": "E",
}
PATIENT_FIELDS = ("subject", "for", "patient")


@dataclass
class AuditTrail:
    """What one request touched; written as one AuditEvent when the request ends."""

    principal: Principal
    address: str | None = None  # the client's network address
    request_id: str | None = None  # correlation id (X-Request-Id)
    interaction: str = ""
    entities: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # versioned references written (Provenance targets)
    reasons: list[str] = field(default_factory=list)  # why, when the change was not asked for as such
    query: str | None = None
    description: str | None = None  # what was attempted, when no stored resource says it
    outcome_text: str | None = None  # AuditEvent.outcomeDesc: why it was refused
    channel: str | None = None  # "hl7v2" when the request came in as an HL7 v2 message

    def attempt(self, interaction: str, what: str) -> None:
        """Record a refused attempt (no scope, admin-only, another's record) for the audit log."""
        self.interaction = self.interaction or interaction
        self.description = self.description or f"{interaction} {what[:200]}"

    def written(self) -> None:
        """The event was written inside the request's transaction: nothing left to log."""
        self.entities.clear()
        self.query = None
        self.description = None

    def touch(self, interaction: str, stored: Stored | None = None, *, query: str | None = None) -> None:
        self.interaction = self.interaction or interaction
        if query is not None:
            self.query = query
        if stored is None:
            return
        if interaction in ("create", "update", "patch", "delete"):
            self._add(self.changed, f"{stored.reference}/_history/{stored.version_id}")
        if stored.resource_type not in PERSONAL_TYPES:
            return
        self._add(self.entities, stored.reference)
        if stored.resource_type == "Patient":
            self._add(self.patients, stored.reference)
        for name in PATIENT_FIELDS:
            ref = normalise_reference((stored.content.get(name) or {}).get("reference", "") or "")
            if ref and ref.startswith("Patient/"):
                self._add(self.patients, ref)

    @staticmethod
    def _add(items: list[str], value: str) -> None:
        if value not in items and len(items) < 500:
            items.append(value)

    @property
    def needed(self) -> bool:
        return bool(self.entities) or (
            bool(self.interaction) and (self.query is not None or self.description is not None)
        )

    def event(self, status: int) -> dict[str, Any]:
        """The AuditEvent of this request: who (agents), what (entities), and the outcome."""
        outcome = "0" if status < 400 else ("4" if status < 500 else "8")
        entities = self._entities()
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "type": {"system": AUDIT_EVENT_TYPE, "code": "rest"},
            "subtype": [
                {"system": RESTFUL_INTERACTION, "code": self.interaction or "read"},
                *([{"system": CHANNEL, "code": self.channel}] if self.channel else []),
            ],
            "action": ACTIONS.get(self.interaction, "E"),
            "recorded": format_instant(utc_now()),
            "outcome": outcome,
            **({"outcomeDesc": self.outcome_text[:500]} if self.outcome_text else {}),
            "agent": self._agents(),
            "source": {
                "observer": {"display": "fhir-gateway"},
                "type": [{"system": SECURITY_SOURCE_TYPE, "code": "4"}],
            },
        }
        if entities:
            event["entity"] = entities
        return event

    def _agents(self) -> list[dict[str, Any]]:
        """The client (with its address), then the organisation it acted for, if any."""
        agents: list[dict[str, Any]] = [
            {
                "type": {
                    "coding": [
                        {
                            "system": PARTICIPATION_TYPE,
                            "code": "IRCP" if self.interaction in ("read", "vread", "search-type") else "AUT",
                        }
                    ]
                },
                "who": {
                    "identifier": {
                        "system": CLIENT_ID,
                        "value": self.principal.client_id,
                    }
                },
                "name": self.principal.client_id,
                "role": [{"text": self.principal.role}],
                "requestor": True,
            }
        ]
        if self.address:
            agents[0]["network"] = {"address": self.address, "type": "2"}
        if self.principal.organization:
            agents.append(
                {
                    "who": {"reference": self.principal.organization},
                    "requestor": False,
                    "role": [{"text": "on behalf of"}],
                }
            )
        return agents

    def _entities(self) -> list[dict[str, Any]]:
        """Resources touched, then patients (NEN 7513 looks them up), then query, text, request id."""
        entities: list[dict[str, Any]] = [
            {
                "what": {"reference": ref},
                "type": {"system": AUDIT_ENTITY_TYPE, "code": "2"},
            }
            for ref in self.entities
            if ref not in self.patients
        ]
        entities += [
            {
                "what": {"reference": ref},
                "type": {"system": AUDIT_ENTITY_TYPE, "code": "1"},
                "role": {"system": OBJECT_ROLE, "code": "1"},
            }
            for ref in self.patients
        ]
        if self.query is not None:
            entities.append(
                {
                    "type": {
                        "system": AUDIT_ENTITY_TYPE,
                        "code": "2",
                    },
                    "role": {"system": OBJECT_ROLE, "code": "24"},
                    "description": f"search {self.query[:200]}",
                }
            )
        if self.description:
            entities.append(
                {
                    "type": {
                        "system": AUDIT_ENTITY_TYPE,
                        "code": "2",
                    },
                    "role": {"system": OBJECT_ROLE, "code": "4"},
                    "description": self.description[:500],
                }
            )
        if self.request_id:
            entities.append(
                {
                    "type": {
                        "system": AUDIT_ENTITY_TYPE,
                        "code": "4",
                    },
                    "description": "request",
                    "detail": [{"type": "X-Request-Id", "valueString": self.request_id}],
                }
            )
        return entities

    def provenance(self) -> dict[str, Any]:
        """Who changed what, on whose behalf: one Provenance per changing request."""
        agent: dict[str, Any] = {
            "type": {
                "coding": [
                    {
                        "system": PROVENANCE_PARTICIPANT_TYPE,
                        "code": "author",
                    }
                ]
            },
            "who": {
                "identifier": {
                    "system": CLIENT_ID,
                    "value": self.principal.client_id,
                }
            },
        }
        if self.principal.organization:
            agent["onBehalfOf"] = {"reference": self.principal.organization}
        activity = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}.get(
            self.interaction, "UPDATE"
        )
        provenance: dict[str, Any] = {
            "resourceType": "Provenance",
            "target": [{"reference": ref} for ref in self.changed],
            "recorded": format_instant(utc_now()),
            "activity": {"coding": [{"system": DATA_OPERATION, "code": activity}]},
            "agent": [agent],
        }
        if self.reasons:
            provenance["reason"] = [{"text": text} for text in self.reasons]
        return provenance


def refusal_text(outcome: Any) -> str:
    """An OperationOutcome as AuditEvent.outcomeDesc: each issue's code and diagnostics, so the
    operator can see why a request was refused (the console shows it with digit runs hidden)."""
    issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
    parts = [f"{i.get('code', '?')}: {i.get('diagnostics', '')}".rstrip(": ") for i in issues[:5]]
    # a diagnostics quotes what was sent: what the database cannot store (a NUL) is replaced
    return FORBIDDEN_CHARACTERS.sub("\ufffd", "; ".join(parts)[:500])


def write(repo: Repository, trail: AuditTrail, status: int) -> None:
    """The AuditEvent; for a successful change also its Provenance (same transaction)."""
    if trail.changed and status < 400:
        repo.create_all([(trail.provenance(), None), (trail.event(status), None)])  # one round trip
    else:
        repo.create(trail.event(status))


def login_event(
    account: str,
    *,
    succeeded: bool,
    detail: str,
    address: str | None = None,
    request_id: str | None = None,
    verified: bool = False,
    application: str = "fhir-gateway console",
) -> dict[str, Any]:
    """NEN 7513 for a sign-in attempt: who tried (the account: `console-password`, or the admin
    client an access token is for — as *claimed* by the token when it did not verify), from
    which address, the outcome and why. Never the password or the token itself."""
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPATION_TYPE, "code": "AUT"}]},
        "who": {"identifier": {"system": CLIENT_ID, "value": account}},
        "name": account if verified or succeeded else f"{account} (claimed)",
        "role": [{"text": "console sign-in"}],
        "requestor": True,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": "110122", "display": "Login"}],
        "action": "E",
        "recorded": format_instant(utc_now()),
        "outcome": "0" if succeeded else "4",
        "outcomeDesc": detail[:500],
        "agent": [agent],
        "source": {
            "observer": {"display": application},
            "type": [{"system": SECURITY_SOURCE_TYPE, "code": "4"}],
        },
    }
    if request_id:
        event["entity"] = [
            {
                "type": {"system": AUDIT_ENTITY_TYPE, "code": "4"},
                "description": "request",
                "detail": [{"type": "X-Request-Id", "valueString": request_id}],
            }
        ]
    return event
