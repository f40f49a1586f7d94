"""`$process-message`: a referral as a FHIR message Bundle (MessageHeader + resources).

Some GP systems and integration engines send messages rather than transactions. The message is
turned into the equivalent transaction — Patients matched on their BSN, directory resources on
their identifiers — and runs through the very same path; the answer is a response message.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from fhir_gateway.fhir.outcome import FhirError, Invalid, error
from fhir_gateway.fhir.search import search_escape
from fhir_gateway.fhir.searchparams import format_instant, utc_now
from fhir_gateway.rest.bundles import BundleProcessor, check_shell
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.vocabulary import AGB, BSN, MESSAGE_EVENTS, MessageEvent

DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "process-message",
    "url": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
    "name": "ProcessMessage",
    "title": "Process a referral message",
    "status": "active",
    "kind": "operation",
    "code": "process-message",
    "system": True,
    "type": False,
    "instance": False,
    "parameter": [
        {
            "name": "content",
            "use": "in",
            "min": 1,
            "max": "1",
            "type": "Bundle",
            "documentation": "A message Bundle: MessageHeader (event referral), Patient, Consent, ServiceRequest",
        },
        {
            "name": "return",
            "use": "out",
            "min": 0,
            "max": "1",
            "type": "Bundle",
            "documentation": "The response message",
        },
    ],
}


MATCH_ON = {  # resource type → identifier system an existing resource is matched on
    "Patient": BSN,
    "Practitioner": AGB,
    "Organization": AGB,
}


class MessageProcessor:
    own_transaction = True  # the transaction it builds runs in a transaction of its own

    def __init__(self, bundles: BundleProcessor) -> None:
        self.bundles = bundles

    def __call__(self, req: FhirRequest, _svc: Any, _type: str | None, _id: str | None) -> FhirResponse:
        bundle = check_shell(req.body)
        entries = bundle.get("entry") or []
        if (
            bundle.get("type") != "message"
            or not entries
            or (entries[0].get("resource") or {}).get("resourceType") != "MessageHeader"
        ):
            raise Invalid(
                [
                    error(
                        "invalid",
                        "$process-message takes a Bundle of type message whose first "
                        "entry is a MessageHeader",
                        "Bundle.type",
                    )
                ]
            )
        header = entries[0]["resource"]
        transaction = [_as_transaction_entry(e, i) for i, e in enumerate(entries[1:], start=1)]
        response = self.bundles.transaction(req, transaction)
        if response.status >= 400:
            return response
        stored = [e.get("resource") for e in (response.body or {}).get("entry", []) if e.get("resource")]
        focus = [
            {"reference": f"{r['resourceType']}/{r['id']}"}
            for r in stored
            if r["resourceType"] == "ServiceRequest"
        ]
        reply_header: dict[str, Any] = {
            "resourceType": "MessageHeader",
            "id": str(uuid.uuid4()),
            "eventCoding": header.get("eventCoding")
            or {"system": MESSAGE_EVENTS, "code": MessageEvent.REFERRAL},
            "source": {"name": "fhir-gateway", "endpoint": req.base_url or "urn:fhir-gateway"},
            "response": {"identifier": bundle.get("id") or header.get("id") or "unknown", "code": "ok"},
        }
        if header.get("source", {}).get("endpoint"):
            reply_header["destination"] = [{"endpoint": header["source"]["endpoint"]}]
        if focus:
            reply_header["focus"] = focus
        reply = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "message",
            "timestamp": format_instant(utc_now()),
            "entry": [{"fullUrl": f"urn:uuid:{reply_header['id']}", "resource": reply_header}]
            + [{"fullUrl": f"{req.base_url}/{r['resourceType']}/{r['id']}", "resource": r} for r in stored],
        }
        return FhirResponse(200, reply)


def _as_transaction_entry(entry: dict[str, Any], i: int) -> dict[str, Any]:
    resource = entry.get("resource")
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise FhirError(
            400, [error("required", "Every message entry needs a resource", f"Bundle.entry[{i}]")]
        )
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    system = MATCH_ON.get(resource["resourceType"])
    for ident in resource.get("identifier", []) if system else []:
        if ident.get("system") == system and ident.get("value"):
            # escaped for the search and the query string: a value with `,` `|` `&` `+` is one value
            criteria = f"{search_escape(system)}|{search_escape(str(ident['value']))}"
            request["ifNoneExist"] = f"identifier={quote(criteria, safe='|')}"
            break
    out = {"resource": resource, "request": request}
    if entry.get("fullUrl"):
        out["fullUrl"] = entry["fullUrl"]
    return out
