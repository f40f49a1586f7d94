"""General acknowledgement (ACK) for v2.4 and v2.5 senders; hl7apy has no ACK helper.

Built as ER7 text (values escaped) rather than through hl7apy objects: it costs microseconds,
needs no parsed message (a garbage frame still gets an AR), and tests re-parse every ACK with
hl7apy to prove its structure. v2.4 has only ERR-1 (ELD: segment^sequence^field^code); v2.5 adds
ERR-2 (ERL location), ERR-3 (HL7 error code, table 0357), ERR-4 severity, ERR-5 application code
and ERR-8 user message, so the layout depends on the version answered.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from fhir_gateway.v2.mapping import Loc
from fhir_gateway.v2.message import STANDARD, Message, Segment, decode_bytes, encode_field, escape, parse_er7
from fhir_gateway.vocabulary import AMSTERDAM, ISSUE_TYPE

AckCode = Literal["AA", "AE", "AR"]

# HL7 table 0357 (message error condition codes)
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
UNKNOWN_KEY_IDENTIFIER = 204  # also: a sender not authorised for MSH-4 (0357 has no better code)
DUPLICATE_KEY = 205
APPLICATION_INTERNAL_ERROR = 207

TABLE_0357 = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

# FHIR issue-type code -> table 0357
_FROM_ISSUE = {
    "required": REQUIRED_FIELD_MISSING,
    "structure": DATA_TYPE_ERROR,
    "value": DATA_TYPE_ERROR,
    "invalid": DATA_TYPE_ERROR,
    "invariant": REQUIRED_FIELD_MISSING,
    "code-invalid": TABLE_VALUE_NOT_FOUND,
    "not-found": TABLE_VALUE_NOT_FOUND,
    "business-rule": TABLE_VALUE_NOT_FOUND,
    "duplicate": DUPLICATE_KEY,
    "conflict": DUPLICATE_KEY,
    "forbidden": UNKNOWN_KEY_IDENTIFIER,  # e.g. a requester (PRD) who is not one of the sending practice's people
    "processing": APPLICATION_INTERNAL_ERROR,
    "exception": APPLICATION_INTERNAL_ERROR,
    "transient": APPLICATION_INTERNAL_ERROR,
}

SUPPORTED_VERSIONS = ("2.4", "2.5", "2.5.1")
_DEFAULT_VERSION = "2.5"


def code_for_issue(issue_code: str | None) -> int:
    """The table 0357 code for a FHIR OperationOutcome issue code (unknown → 207)."""
    return _FROM_ISSUE.get(issue_code or "", APPLICATION_INTERNAL_ERROR)


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: what went wrong where, in HL7 terms (and the FHIR issue code if any)."""

    code: int
    text: str
    loc: Loc | None = None
    severity: Literal["E", "W", "I"] = "E"
    application_code: str | None = None  # ERR-5, e.g. the FHIR issue code 'business-rule'


@dataclass(frozen=True, slots=True)
class Header:
    """What an ACK copies from the inbound MSH (all optional: garbage frames have none)."""

    sending_application: list[list[list[str]]]
    sending_facility: list[list[list[str]]]
    receiving_application: list[list[list[str]]]
    receiving_facility: list[list[list[str]]]
    control_id: str
    processing_id: str
    version: str
    trigger: str

    @classmethod
    def of(cls, message: Message | Segment | None) -> Header:
        msh = message.msh if isinstance(message, Message) else message
        if msh is None:
            return cls([], [], [], [], "", "P", _DEFAULT_VERSION, "")
        return cls(
            msh.field(3),
            msh.field(4),
            msh.field(5),
            msh.field(6),
            msh.value(10),
            msh.value(11) or "P",
            msh.value(12),
            msh.value(9, 2),
        )


_counter = itertools.count(1)
_lock = threading.Lock()


def new_control_id(prefix: str = "WORGW") -> str:
    """Unique enough per process and restart: prefix + time + pid + counter (≤ 20 chars for MSH-10)."""
    with _lock:
        n = next(_counter)
    return f"{prefix[:5]}{datetime.now(AMSTERDAM):%y%m%d%H%M%S}{os.getpid() % 100:02d}{n % 1000:03d}"


def reply_version(version: str) -> str:
    """Answer in the sender's version when we speak it, else 2.5."""
    return version if version in SUPPORTED_VERSIONS else _DEFAULT_VERSION


def is_v24(version: str) -> bool:
    try:
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) < (2, 5)
    except ValueError:
        return False


def timestamp(moment: datetime | None = None) -> str:
    """DTM with seconds and zone, e.g. 20261105103000+0100."""
    return (moment or datetime.now(AMSTERDAM)).astimezone(AMSTERDAM).strftime("%Y%m%d%H%M%S%z")


def build_msh(
    header: Header,
    message_type: str,
    version: str,
    *,
    control_id: str | None = None,
    now: datetime | None = None,
    default_application: str = "WORGW",
    default_facility: str = "WOR",
) -> str:
    """MSH with sender and receiver swapped (our application/facility default when unknown)."""
    e = escape
    sending_app = encode_field(header.receiving_application) or e(default_application)
    sending_fac = encode_field(header.receiving_facility) or e(default_facility)
    return "|".join(
        [
            "MSH",
            STANDARD.encoding_characters,
            sending_app,
            sending_fac,
            encode_field(header.sending_application),
            encode_field(header.sending_facility),
            timestamp(now),
            "",
            message_type,
            e(control_id or new_control_id()),
            e(header.processing_id[:3] or "P"),
            e(version),
        ]
    )


def _err_segment(err: AckError, version: str) -> str:
    e = escape
    code_text = TABLE_0357.get(err.code, "")
    loc = err.loc
    if is_v24(version):
        # ERR-1 ELD: segment ID ^ sequence ^ field position ^ code identifying error (CE, as subcomponents)
        eld = (
            [e(loc.segment), str(loc.sequence), "" if loc.field is None else str(loc.field)]
            if loc
            else ["", "", ""]
        )
        eld.append(f"{err.code}&{e(code_text)}&HL70357")
        return "ERR|" + "^".join(eld)
    fields = [""] * 9  # ERR-1 .. ERR-8
    if loc is not None:
        fields[2] = "^".join(e(p) for p in loc.erl())
    fields[3] = f"{err.code}^{e(code_text)}^HL70357"
    fields[4] = err.severity
    if err.application_code:
        fields[5] = f"{e(err.application_code)}^^{ISSUE_TYPE}"
    fields[8] = e(err.text[:250])
    while fields and fields[-1] == "":
        fields.pop()
    return "ERR|" + "|".join(fields[1:])


def build_ack(
    inbound: Message | Segment | Header | None,
    code: AckCode,
    errors: list[AckError] | tuple[AckError, ...] = (),
    *,
    text: str | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    segment_separator: str = "\r",
) -> str:
    """ACK^<trigger>^ACK: MSH (swapped), MSA-1 code, MSA-2 inbound control id, ERR per error.

    MSA-3 (text) is written for v2.4 receivers only: in v2.5 it is deprecated in favour of ERR-8.
    """
    header = inbound if isinstance(inbound, Header) else Header.of(inbound)
    version = reply_version(header.version)
    trigger = header.trigger or ""
    msg_type = f"ACK^{escape(trigger, exact=True)}^ACK"
    msh = build_msh(header, msg_type, version, control_id=control_id, now=now)
    msa = ["MSA", code, escape(header.control_id, exact=True)]  # MSA-2 reads back as MSH-10
    if is_v24(version) and (text or errors):
        msa.append(escape((text or errors[0].text)[:80]))
    segments = [msh, "|".join(msa)]
    segments.extend(_err_segment(err, version) for err in errors)
    return segment_separator.join(segments) + segment_separator


def ack_code_of(ack: str) -> str | None:
    """MSA-1 of an ACK text (cheap; used by the journal and tests)."""
    for seg in ack.replace("\n", "\r").split("\r"):
        if seg.startswith("MSA"):
            parts = seg.split(seg[3] if len(seg) > 3 else "|")
            return parts[1] if len(parts) > 1 else None
    return None


def header_guess(data: bytes | str) -> Header | None:
    """The MSH of an unreadable message, if its first line is readable at all (for MSA-2)."""
    try:
        text = decode_bytes(data).strip("\x0b\x1c\r\n \t\ufeff")
        first = text.replace("\r\n", "\r").replace("\n", "\r").split("\r", 1)[0]
        return Header.of(parse_er7(first).msh)
    except Exception:
        return None
