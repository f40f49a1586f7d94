"""Outbound v2: a feedback Communication → RRI^I12 for practices that only speak HL7 v2.

A pure function over dicts so the delivery worker can build the message inside its outbox
transaction and tests need no database. What the worker has to look up and call:

    row = V2MessageRow where direction='in' and focus = Task.focus.reference ('ServiceRequest/<id>')
    er7 = rri_for(communication, task, row, patient=..., service_request=..., requester=...,
                  version=<endpoint's version, e.g. '2.4'>)
    ack = await mllp.send_message(host, port, er7)      # Endpoint.address mllp://host:port
    MSA-1 == 'AA' → delivered; AE → dead letter (content); AR / timeout → retry with backoff
    journal: V2MessageRow(direction='out', sender=<MSH-5^MSH-6 of the RRI>, control_id=<its MSH-10>,
             message_type='RRI^I12', ack=<the ACK text>, ack_code=MSA-1, focus=<Communication/id>)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_gateway.v2.ack import Header, build_msh, new_control_id, reply_version
from fhir_gateway.v2.message import escape
from fhir_gateway.vocabulary import AGB, AMSTERDAM, BSN

# Task.status → RF1-1 (HL7 table 0283: A accepted, P pending, R rejected, E expired)
_RF1_STATUS = {
    "draft": ("P", "Pending"),
    "requested": ("P", "Pending"),
    "received": ("P", "Pending"),
    "ready": ("P", "Pending"),
    "accepted": ("A", "Accepted"),
    "in-progress": ("A", "Accepted"),
    "on-hold": ("A", "Accepted"),
    "completed": ("A", "Accepted"),
    "rejected": ("R", "Rejected"),
    "cancelled": ("R", "Rejected"),
    "failed": ("R", "Rejected"),
    "entered-in-error": ("R", "Rejected"),
}
_GENDER = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


def _get(original: Any, name: str) -> str:
    value = original.get(name) if isinstance(original, dict) else getattr(original, name, None)
    return str(value or "")


def _hd(text: str) -> list[list[list[str]]]:
    return [[[text]]] if text else []


def _ts(value: str | None) -> str:
    """FHIR dateTime/date → v2 DTM (keeps the zone; dates stay dates)."""
    if not value:
        return ""
    if len(value) <= 10:
        return value.replace("-", "")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return moment.strftime("%Y%m%d%H%M%S%z")


def _identifier(resource: dict[str, Any] | None, system: str) -> str:
    for ident in (resource or {}).get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return ""


def _xpn(resource: dict[str, Any] | None) -> str:
    names = (resource or {}).get("name") or []
    if not names:
        return ""
    name = names[0]
    given = " ".join(name.get("given") or [])
    return f"{escape(name.get('family', ''))}^{escape(given)}".rstrip("^")


def _text(communication: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for payload in communication.get("payload") or []:
        if payload.get("contentString"):
            lines.extend(str(payload["contentString"]).splitlines())
    return [line for line in lines if line.strip()]


def _milestone(communication: dict[str, Any]) -> tuple[str, str]:
    for coding in ((communication.get("topic") or {}).get("coding")) or []:
        if coding.get("code"):
            return str(coding["code"]), str(coding.get("display") or "")
    return "", ""


def rri_for(
    communication: dict[str, Any],
    task: dict[str, Any],
    original: Any,
    *,
    patient: dict[str, Any] | None = None,
    service_request: dict[str, Any] | None = None,
    requester: dict[str, Any] | None = None,
    version: str = "2.5",
    control_id: str | None = None,
    now: datetime | None = None,
    segment_separator: str = "\r",
) -> str:
    """RRI^I12: MSH (to the original sender), MSA (AA + original MSH-10), RF1, PRD, PID, NTE.

    `original` is the inbound journal row (V2MessageRow or a dict with sender, control_id).
    """
    sending_app, _, sending_fac = _get(original, "sender").partition("^")
    header = Header(
        sending_application=_hd(sending_app),
        sending_facility=_hd(sending_fac),
        receiving_application=[],
        receiving_facility=[],
        control_id="",
        processing_id="P",
        version=version,
        trigger="I12",
    )
    v = reply_version(version)
    msh = build_msh(header, "RRI^I12^RRI_I12", v, control_id=control_id or new_control_id(), now=now)
    msa = f"MSA|AA|{escape(_get(original, 'control_id'))}"

    status, status_text = _RF1_STATUS.get(str(task.get("status", "")), ("P", "Pending"))
    referral_id = ""
    for ident in (service_request or {}).get("identifier") or []:
        if ident.get("value"):
            referral_id = str(ident["value"])
            break
    effective = _ts(communication.get("sent")) or (now or datetime.now(AMSTERDAM)).strftime("%Y%m%d%H%M%S%z")
    rf1 = [""] * 12
    rf1[1] = f"{status}^{status_text}^HL70283"
    rf1[6] = escape(referral_id)
    rf1[7] = effective
    if task.get("id"):
        rf1[11] = f"{escape('Task/' + str(task['id']))}^WORGW"
    rf1_text = "RF1|" + "|".join(rf1[1:]).rstrip("|")

    prd = [""] * 8
    prd[1] = "RP^Referring provider^HL70286"
    prd[2] = _xpn(requester)
    agb = _identifier(requester, AGB)
    if agb:
        prd[7] = f"{escape(agb)}^AGB"
    segments = [msh, msa, rf1_text, "PRD|" + "|".join(prd[1:]).rstrip("|")]
    owner = (task.get("owner") or {}).get("display")
    if owner:
        segments.append(f"PRD|RT^Referred to provider^HL70286|{escape(str(owner))}")

    pid = [""] * 9
    pid[1] = "1"
    bsn = _identifier(patient, BSN)
    if bsn:
        pid[3] = f"{escape(bsn)}^^^NLMINBIZA^NNNLD"
    pid[5] = _xpn(patient)
    pid[7] = _ts((patient or {}).get("birthDate"))
    pid[8] = _GENDER.get(str((patient or {}).get("gender", "")), "")
    segments.append("PID|" + "|".join(pid[1:]).rstrip("|"))

    code, display = _milestone(communication)
    nte_type = f"{escape(code)}^{escape(display)}^WOR-MILESTONE" if code else ""
    lines = _text(communication)
    if lines:
        text = "~".join(escape(line) for line in lines)
        segments.append(f"NTE|1|L|{text}|{nte_type}".rstrip("|"))
    return segment_separator.join(segments) + segment_separator
