"""Feedback (terugkoppeling): one Communication to the referring practice per milestone.

Which Task changes send feedback, and the Dutch sentence, come from the region settings in
`mappings/regions/`; the Communication itself from `mappings/milestone-to-communication.yaml`.
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.searchparams import normalise_reference
from fhir_gateway.mapping import DEFAULT_REGION, feedback_for, feedback_inputs
from fhir_gateway.routing import Directory
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import PH_DIMENSIONS, PH_OUTPUT_CODES
from fhir_gateway.workflow.context import GatewayContext
from fhir_gateway.workflow.tasks import Change


def region_of_task(task: dict[str, Any], directory: Directory) -> str:
    """The region of the WoR service the Task was routed to (recorded in Task.input)."""
    for item in task.get("input", []):
        ref = (item.get("valueReference") or {}).get("reference")
        service = directory.resolve(ref) if ref else None
        if service is not None and service.get("resourceType") == "HealthcareService":
            return directory.region_of(service)
    return DEFAULT_REGION


def for_transition(repo: Repository, ctx: GatewayContext, task: Stored, change: Change) -> Stored | None:
    """Store the Communication this change earns in its region, or None if it earns none."""
    if not (change.status_changed or change.milestone_changed):
        return None
    directory = ctx.directory(repo)
    region = region_of_task(task.content, directory)
    settings = ctx.mappings.region_settings(region)
    feedback = feedback_for(
        settings,
        status=change.new_status if change.status_changed else None,
        milestone=change.new_milestone if change.milestone_changed else None,
    )
    if feedback is None:
        return None
    return send(repo, ctx, task, region, settings, feedback)


def send(
    repo: Repository,
    ctx: GatewayContext,
    task: Stored,
    region: str,
    settings: dict[str, Any],
    feedback: dict[str, Any],
) -> Stored:
    """Store the feedback Communication for `task` (from `feedback_for`) to the referring practice."""
    requester = (task.content.get("requester") or {}).get("reference", "")
    practice = ctx.directory(repo).practice_of(normalise_reference(requester, repo.base_url) or requester)
    inputs = feedback_inputs(
        settings,
        ctx.clock(),
        feedback,
        practice=f"Organization/{practice['id']}" if practice else None,
        positive_health=positive_health(repo, task.content),
    )
    communication = ctx.mappings.get("milestone-to-communication", region).apply(task.content, inputs)
    return repo.create(communication)


def positive_health(repo: Repository, task: dict[str, Any]) -> dict[str, Any] | None:
    """Positive Health scores at intake / closure from QuestionnaireResponses in Task.output."""
    found: dict[str, Any] = {}
    for out in task.get("output", []):
        codes = [c.get("code") for c in (out.get("type") or {}).get("coding", [])]
        moment = next((PH_OUTPUT_CODES[c] for c in codes if c in PH_OUTPUT_CODES), None)
        ref = normalise_reference((out.get("valueReference") or {}).get("reference", ""), repo.base_url) or ""
        if moment is None or not ref.startswith("QuestionnaireResponse/"):
            continue
        qr = repo.find("QuestionnaireResponse", ref.partition("/")[2])
        if qr is None:
            continue
        scores = _scores(qr.content)
        if scores:
            found[moment] = {"date": qr.content.get("authored", "")[:10], **scores}
    return found or None


def _scores(qr: dict[str, Any]) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for item in qr.get("item", []):
        if item.get("linkId") in PH_DIMENSIONS:
            for answer in item.get("answer", []):
                value = answer.get("valueInteger", answer.get("valueDecimal"))
                if isinstance(value, int | float) and 0 <= value <= 10:
                    scores[item["linkId"]] = value
    return scores
