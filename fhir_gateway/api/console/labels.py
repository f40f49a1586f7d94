"""Dutch labels for every code the console shows: one dict, so a new code is added in one place.

Keys are the bare codes (Task.status, Task.businessStatus milestones, feedback kinds, outbox and
delivery states, MeasureReport population codes, HL7 v2 ACK codes, REST interactions, AuditEvent
actions and outcomes). `label(code)` falls back to the code itself, so an unknown code is still
shown, never hidden. Why not translate in the templates: the same code appears on several pages.
"""

from __future__ import annotations

LABELS: dict[str, str] = {
    # Task.status (and ServiceRequest/CarePlan/Communication status)
    "draft": "concept",
    "requested": "aangevraagd",
    "received": "ontvangen",
    "accepted": "geaccepteerd",
    "rejected": "afgewezen",
    "ready": "gereed",
    "cancelled": "geannuleerd",
    "in-progress": "in behandeling",
    "on-hold": "gepauzeerd",
    "failed": "mislukt",
    "completed": "afgerond",
    "entered-in-error": "foutief ingevoerd",
    "active": "actief",
    "revoked": "ingetrokken",
    "unknown": "onbekend",
    "preparation": "in voorbereiding",
    "not-done": "niet uitgevoerd",
    "stopped": "gestopt",
    # Task.businessStatus (WoR milestones) and feedback kinds
    "contact-attempted": "contact geprobeerd",
    "intake-planned": "intake gepland",
    "intake-held": "intake gehouden",
    "activity-found": "activiteit gevonden",
    "waitlisted": "op wachtlijst",
    "client-declined": "cliënt ziet af",
    "no-show": "niet verschenen",
    "closed-goal-reached": "afgesloten, doel bereikt",
    "closed-other": "afgesloten, andere reden",
    "no-intake-yet": "nog geen intake",
    "question": "vraag",
    "intake-overdue": "intake over tijd",
    "trajectory-overdue": "traject over tijd",
    # outbox / delivery
    "pending": "wacht op bezorging",
    "delivering": "wordt bezorgd",
    "delivered": "bezorgd",
    "dead": "onbezorgbaar",
    "poll": "praktijk haalt op",
    "rest-hook": "FHIR-push",
    "mllp": "HL7 v2 (MLLP)",
    # MeasureReport population codes
    "initial-population": "beginpopulatie",
    "numerator": "teller",
    "denominator": "noemer",
    "denominator-exclusion": "uitgesloten van noemer",
    "denominator-exception": "uitzondering op noemer",
    "numerator-exclusion": "uitgesloten van teller",
    "measure-population": "meetpopulatie",
    "measure-population-exclusion": "uitgesloten van meetpopulatie",
    "measure-observation": "meting",
    "population": "populatie",
    # HL7 v2 acknowledgement codes and directions
    "AA": "geaccepteerd (AA)",
    "AE": "fout (AE)",
    "AR": "geweigerd (AR)",
    "CA": "geaccepteerd (CA)",
    "CE": "fout (CE)",
    "CR": "geweigerd (CR)",
    "in": "ontvangen",
    "out": "verzonden",
    # REST interactions (AuditEvent.subtype) and AuditEvent action / outcome
    "read": "gelezen",
    "vread": "versie gelezen",
    "search-type": "gezocht",
    "history-instance": "historie gelezen",
    "create": "aangemaakt",
    "update": "bijgewerkt",
    "patch": "bijgewerkt (patch)",
    "delete": "verwijderd",
    "transaction": "transactie",
    "operation": "operatie",
    "C": "aanmaken",
    "R": "lezen",
    "U": "bijwerken",
    "D": "verwijderen",
    "E": "uitvoeren",
    "0": "gelukt",
    "4": "geweigerd",
    "8": "fout in de gateway",
    "12": "ernstige fout",
    # OperationOutcome issue codes shown with a refusal
    "invalid": "ongeldig",
    "structure": "structuurfout",
    "required": "ontbreekt",
    "value": "ongeldige waarde",
    "invariant": "regel geschonden",
    "business-rule": "bedrijfsregel",
    "not-found": "niet gevonden",
    "conflict": "conflict",
    "forbidden": "niet toegestaan",
    "security": "beveiliging",
    "login": "niet ingelogd",
    "processing": "verwerkingsfout",
    "code-invalid": "ongeldige code",
    "not-supported": "niet ondersteund",
    "duplicate": "dubbel",
    "too-costly": "te kostbaar",
    "exception": "fout",
}


def label(code: object) -> str:
    """The Dutch label of a code, or the code itself when it has none."""
    text = "" if code is None else str(code)
    return LABELS.get(text, text)
