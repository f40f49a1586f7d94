"""Consent withdrawal: the patient's "no" stops sharing with the social domain at once.

When a Consent that was active stops being active, every open Task of the referrals that rested
on it is cancelled (reason `consent-withdrawn`, feedback to the practice as usual), the social
question is taken off the Task, and the welfare organisations lose access to the patient, the
referral, the consent and the care plan. They keep seeing the (cancelled) Task itself, so their
system learns to stop.
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.search import parse_search
from fhir_gateway.fhir.searchparams import format_instant, normalise_reference, utc_now
from fhir_gateway.store.database import after_commit
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import REJECTION_REASONS, RejectionReason
from fhir_gateway.workflow import feedback, tasks
from fhir_gateway.workflow.context import GatewayContext

WITHDRAWN = {
    "coding": [
        {
            "system": REJECTION_REASONS,
            "code": RejectionReason.CONSENT_WITHDRAWN,
            "display": "Toestemming ingetrokken",
        }
    ],
    "text": "De patiënt heeft de toestemming ingetrokken",
}
SOCIAL_QUESTION = "Hulpvraag"


def withdrawn(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    return before is not None and before.get("status") == "active" and after.get("status") != "active"


def on_withdrawal(repo: Repository, ctx: GatewayContext, consent: Stored) -> None:
    for sr in repo.search(parse_search("ServiceRequest", [("supporting-info", consent.reference)])).matches:
        owners: set[str] = set()
        for task in repo.search(parse_search("Task", [("focus", sr.reference)])).matches:
            owner = normalise_reference((task.content.get("owner") or {}).get("reference", ""), repo.base_url)
            if owner:
                owners.add(owner)
            _cancel(repo, ctx, task)
        patient = _find(repo, sr.content.get("subject"))
        plans = repo.search(parse_search("CarePlan", [("supporting-info", sr.reference)])).matches
        for stored in (sr, consent, patient, *plans):
            if stored is not None:
                repo.revoke(stored, owners)


def _cancel(repo: Repository, ctx: GatewayContext, task: Stored) -> None:
    content = task.content
    inputs = [i for i in content.get("input", []) if (i.get("type") or {}).get("text") != SOCIAL_QUESTION]
    updated = {**content, "lastModified": format_instant(utc_now())}
    if inputs:
        updated["input"] = inputs
    else:
        updated.pop("input", None)
    change = None
    if content.get("status") not in tasks.FINAL:
        updated.update(status="cancelled", statusReason=WITHDRAWN)
        change = tasks.Change(
            content["status"], "cancelled", tasks.milestone_of(content), tasks.milestone_of(content)
        )
    stored, _ = repo.update(updated, method="PUT")
    if change is not None:
        tasks.follow_up(repo, stored, change)
        metrics, old, new = ctx.metrics, change.old_status, change.new_status
        after_commit(repo.session, lambda: metrics.task_transition(old, new))
        feedback.for_transition(repo, ctx, stored, change)


def _find(repo: Repository, reference: dict[str, Any] | None) -> Stored | None:
    ref = normalise_reference((reference or {}).get("reference", ""), repo.base_url) or ""
    rtype, _, rid = ref.partition("/")
    return repo.find(rtype, rid) if rid else None
