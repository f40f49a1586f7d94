"""Patients change over time: a referral that brings new demographics, and a patient who moves.

The practice is the authority on its own Patient records. A referral Bundle whose Patient (matched
by `ifNoneExist` inside the practice's compartment) differs from the stored one updates it: a new
version, and the request's Provenance says the referral brought it. The referral is then routed on the
address in force.

A change of address never re-routes an open referral: the welfare organisation that has it keeps
it. Both parties of every open referral of the patient get a notice (a Communication, pushed to
the practice like feedback) saying the address changed and whether the new address still lies in
that organisation's area — without the address itself, which the welfare organisation reads on
the Patient as far as the consent lets it.
"""

from __future__ import annotations

from typing import Any

from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.fhir.search import parse_search
from fhir_gateway.fhir.searchparams import format_instant, normalise_reference
from fhir_gateway.routing import route
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.vocabulary import REMINDER_KINDS, ReminderKind
from fhir_gateway.workflow import tasks
from fhir_gateway.workflow.context import GatewayContext

_NOT_COMPARED = ("id", "meta", "text")
STAYS = "De verwijzing blijft bij {owner}; de gateway routeert haar niet opnieuw."
MOVED_TEXT = {
    "inside": "Het adres van de patiënt is gewijzigd. Het nieuwe adres ligt in het werkgebied van {owner}. " + STAYS,
    "outside": (
        "Het adres van de patiënt is gewijzigd. Het nieuwe adres ligt buiten het werkgebied van {owner}"
        " ({other} is er verantwoordelijk). " + STAYS + " Overleg met de praktijk of het traject wordt overgedragen."
    ),
    "unknown": (
        "Het adres van de patiënt is gewijzigd. Voor het nieuwe adres is geen welzijnsorganisatie bekend. "
        + STAYS
    ),
}


def differs(stored: dict[str, Any], posted: dict[str, Any]) -> bool:
    """Does the posted Patient say something else than the stored one (server fields aside)?"""

    def core(content: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in content.items() if k not in _NOT_COMPARED}

    return core(stored) != core(posted)


def address_changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    return before is not None and (before.get("address") or []) != (after.get("address") or [])


def on_address_change(repo: Repository, ctx: GatewayContext, patient: Stored) -> list[Stored]:
    """One notice per open referral of the patient, to its welfare organisation and practice."""
    notices = []
    for task in repo.search(parse_search("Task", [("patient", patient.reference)])).matches:
        if task.content.get("status") in tasks.FINAL or not task.content.get("owner"):
            continue
        notices.append(_notice(repo, ctx, task, _where_now(repo, ctx, task, patient)))
    return notices


def _where_now(repo: Repository, ctx: GatewayContext, task: Stored, patient: Stored) -> tuple[str, str | None]:
    """Is the new address inside the Task owner's area ("inside"/"outside"/"unknown"), and who
    serves it otherwise. A referral routed to a named performer stays "inside"."""
    sr = _find(repo, task.content.get("focus"))
    directory = ctx.directory(repo)
    owner = normalise_reference(task.content["owner"].get("reference", ""), repo.base_url)
    try:
        chosen = route({**(sr.content if sr else {}), "performer": []}, patient.content, directory)
    except FhirError:
        return "unknown", None
    if sr is not None and sr.content.get("performer"):
        return "inside", None
    if chosen.organization == owner:
        return "inside", None
    other = directory.resolve(chosen.organization)
    return "outside", (other or {}).get("name") or chosen.organization


def _notice(repo: Repository, ctx: GatewayContext, task: Stored, where: tuple[str, str | None]) -> Stored:
    content = task.content
    owner = ctx.directory(repo).resolve(content["owner"].get("reference"))
    owner_name = (owner or {}).get("name") or content["owner"].get("reference", "")
    recipients = [content["owner"]] + ([content["requester"]] if content.get("requester") else [])
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": REMINDER_KINDS, "code": ReminderKind.ADDRESS_CHANGED}]}],
        "about": [{"reference": task.reference}],
        "partOf": [{"reference": task.reference}],
        "subject": content["for"],
        "sent": format_instant(ctx.clock()),
        "recipient": recipients,
        "payload": [{"contentString": MOVED_TEXT[where[0]].format(owner=owner_name, other=where[1])}],
    }
    if content.get("focus"):
        comm["basedOn"] = [content["focus"]]
    return repo.create(comm)


def _find(repo: Repository, reference: dict[str, Any] | None) -> Stored | None:
    ref = normalise_reference((reference or {}).get("reference", ""), repo.base_url) or ""
    rtype, _, rid = ref.partition("/")
    return repo.find(rtype, rid) if rid else None
