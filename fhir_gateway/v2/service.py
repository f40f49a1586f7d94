"""One inbound v2 message → one ACK: parse, sender, journal, map, the FHIR router, ACK.

The referral takes the SAME path as a FHIR transaction Bundle (`router.handle(POST /)`), so
validation, routing, Task creation and auditing apply to v2 senders without a second copy.

Duplicates: (direction 'in', MSH-3^MSH-4, MSH-10) is unique in `v2_messages`; a resend of a
journalled message gets the stored ACK byte for byte and is not processed again. The journal
row is written in the referral's own transaction (`journal.Claim`, the router's hook): see
`v2/journal.py` for what that guarantees for crashes and concurrent copies. AE outcomes are
journalled, AR outcomes (rejects, transient failures) are not, so the sender's retry is processed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from fhir_gateway import tracing
from fhir_gateway.observability import request_id_var
from fhir_gateway.rest.request import FhirRequest, FhirResponse
from fhir_gateway.security import audit
from fhir_gateway.security.principal import Principal
from fhir_gateway.store.database import DatabaseUnavailable
from fhir_gateway.v2.ack import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    AckError,
    build_ack,
    code_for_issue,
    header_guess,
)
from fhir_gateway.v2.inbound import V2ContentError, V2Rejected, accept, load_mappings
from fhir_gateway.v2.journal import Claim, Journal, Lost, Outcome
from fhir_gateway.v2.limits import check_limits
from fhir_gateway.v2.mapping import Loc, MappingResult, V2Mapping
from fhir_gateway.v2.message import Message, V2ParseError, parse_er7
from fhir_gateway.v2.mllp import Answer, Peer, PeerHandler
from fhir_gateway.v2.senders import (
    V2_SCOPES,
    Refused,
    Sender,
    SenderSource,
    Unidentified,
    authorise,
    facility_principal,
    identify_peer,
)

log = logging.getLogger(__name__)

MAX_ERR_SEGMENTS = 20
MAX_CONTROL_ID = 64  # v2_messages.control_id: the journal's key, with the sender
MAX_SENDER = 255  # v2_messages.sender (MSH-3.1^MSH-4.1)
# not the content's fault: AR, so the sender tries again. A 403 is the content's (a requester who
# is not one of the practice's people): resending the same message would fail the same way.
_RETRYABLE = {401, 408, 429}


__all__ = ["V2_SCOPES", "Outcome", "V2Service"]  # V2_SCOPES: re-exported from senders


class V2Service:
    """`handle(er7 bytes, sender) -> ACK bytes`; thread-safe (call it from `asyncio.to_thread`).

    `sender` is who the transport authenticated (`senders.V2Sender`), `senders.Unidentified`, or
    a callable giving either (run inside, so its database reads get the same error handling).
    None means the transport names nobody: refused, unless `insecure_dev`, where MSH-4 decides."""

    def __init__(
        self,
        router: Any,
        base_url: str = "",
        *,
        mappings: dict[str, V2Mapping] | None = None,
        validator: Any | None = None,
        stale_after: timedelta = timedelta(minutes=2),
        insecure_dev: bool = False,
    ) -> None:
        self.router = router
        self.database = router.ctx.database
        self.base_url = base_url.rstrip("/")
        self.mappings = mappings if mappings is not None else load_mappings(router.ctx.settings.mappings_dir)
        self.validator = validator  # optional pre-check until the create path validates profiles
        self.insecure_dev = insecure_dev
        self.journal = Journal(self.database, stale_after)
        # messages worth processing at once (the listener's `max_concurrent`): the work is CPU
        # under one GIL, and SQLite writers take turns, so on SQLite more threads only contend
        # (8 connections: 1 -> 115 msg/s p99 87 ms, 16 -> 97 msg/s p99 300+ ms); PostgreSQL
        # overlaps its round trips, except where ifNoneExist locks serialise one practice anyway
        self.concurrency = 1 if self.database.is_sqlite else 4
        settings = router.ctx.settings
        self.max_segments = settings.max_v2_segments
        self.max_repetitions = settings.max_v2_repetitions

    # -- entry points --------------------------------------------------------------------------
    def handle(self, data: bytes | str, sender: SenderSource = None) -> bytes:
        """Process one message; always returns an ACK (AR when even the header is unreadable)."""
        return self.respond(data, sender)[0]

    def respond(self, data: bytes | str, sender: SenderSource = None) -> tuple[bytes, bool]:
        """The ACK, and whether the message was refused for want of an authenticated sender."""
        latin1 = isinstance(data, bytes) and not _is_utf8(data)
        unauthenticated = False
        code = "AR"
        with tracing.span("v2.message") as span:
            try:
                outcome = self.process(data, sender)
                ack, unauthenticated, code = outcome.ack, outcome.unauthenticated, outcome.code
            except DatabaseUnavailable as exc:  # down, full, read-only: AR, the sender retries later
                log.warning("v2 message not processed: %s", type(exc).__name__)
                error = AckError(APPLICATION_INTERNAL_ERROR, f"Not processed, retry later: {exc.diagnostics}")
                ack = build_ack(header_guess(data), "AR", [error])
            except Exception:  # never leave a sender without an answer
                log.exception("v2 message failed unexpectedly")
                ack = build_ack(
                    header_guess(data),
                    "AR",
                    [AckError(APPLICATION_INTERNAL_ERROR, "Internal error; send the message again later")],
                )
            span.set_attribute("v2.ack_code", code)
        self.router.ctx.metrics.v2_ack("sent", code)
        return (ack.encode("latin-1", "replace") if latin1 else ack.encode("utf-8")), unauthenticated

    def process(self, data: bytes | str, sender: SenderSource = None) -> Outcome:
        started = time.perf_counter()
        over = check_limits(data, self.max_segments, self.max_repetitions)
        if over is not None:  # before the parser and the mapping: their cost grows with the size
            return Outcome(build_ack(header_guess(data), "AR", [over]), "AR")
        try:
            message = parse_er7(data)
        except V2ParseError as exc:
            code = SEGMENT_SEQUENCE_ERROR if exc.segment == "MSH" and exc.field is None else DATA_TYPE_ERROR
            loc = Loc(exc.segment, exc.sequence, exc.field)
            return Outcome(build_ack(header_guess(data), "AR", [AckError(code, str(exc), loc)]), "AR")
        admitted = self._admit(message, sender)
        if isinstance(admitted, Outcome):
            return admitted
        if admitted.mapping is None:
            outcome = self.journal.settle(
                admitted.claim, Outcome(build_ack(message, "AE", admitted.content_errors), "AE")
            )
        else:
            outcome = self._deliver(
                message, admitted.mapping, admitted.principal, admitted.address, admitted.claim
            )
        log.info(
            "v2 %s from %s answered %s in %.1f ms",
            message.message_type,
            message.msh.value(4) or "?",
            outcome.code,
            (time.perf_counter() - started) * 1000,
        )
        return outcome

    def for_peer(self, peer: Peer) -> PeerHandler:
        """The MLLP listener's handler for one connection: each message's sender is looked up
        from the peer (certificate, address) when it arrives, so a registration change counts
        from the next message. A message from a peer that names no registration is answered AR
        and the connection is closed (a stranger gets one ACK per connection, not a stream)."""

        def handle(payload: bytes) -> Answer:
            ack, unauthenticated = self.respond(payload, partial(identify_peer, peer))
            return Answer(ack, close=unauthenticated)

        return handle

    # -- the sender, the kind of message, the journal ----------------------------------------
    def _admit(self, message: Message, sender: SenderSource) -> _Admitted | Outcome:
        """In ONE read transaction, in this order: who sends (AR, audited, when they may not:
        no journal lookup, no stored ACK for a stranger), whether the gateway takes this kind of
        message (AR), and whether it was answered before (the stored ACK). The registration and
        the directory are read as they are now, so a change counts from the next message."""
        with self.database.connection(write=False) as connection:
            resolved = sender(connection) if callable(sender) else sender
            if resolved is None:
                resolved = Unidentified("the transport authenticated no sender")
            try:
                principal = self._principal(connection, message, resolved)
            except Refused as refused:
                refusal = refused
            else:
                accepted = _accepted(message, self.mappings)
                if isinstance(accepted, Outcome):
                    return accepted
                found = self.journal.lookup(connection, message)
                if isinstance(found, Outcome):
                    return found
                return _Admitted(principal, resolved.address, found, *accepted)
        return self._refuse(message, resolved, refusal)  # audited in a write transaction of its own

    def _principal(self, connection: Any, message: Message, sender: Sender) -> Principal:
        """Who the referral runs as; `Refused` when the sender may not send this message."""
        directory = self.router.ctx.directory(self.router.ctx.repository(connection))
        if isinstance(sender, Unidentified) and self.insecure_dev:
            log.warning("INSECURE DEV: v2 message accepted as MSH-4 says (%s)", sender.reason)
            return facility_principal(message, directory)
        return authorise(sender, message, directory)

    def _refuse(self, message: Message, sender: Sender, refused: Refused) -> Outcome:
        self._audit_refusal(message, sender, refused)
        log.warning(
            "v2 %s from %s refused: %s",
            message.message_type,
            getattr(sender, "client_id", None) or sender.address or "?",
            refused.error.text,
            extra={"event": "auth"},
        )
        return Outcome(
            build_ack(message, "AR", [refused.error]),
            "AR",
            unauthenticated=isinstance(sender, Unidentified),
        )

    def _audit_refusal(self, message: Message, sender: Sender, refused: Refused) -> None:
        """A refused v2 message is logged like any refused request (NEN 7513): who (as far as
        known, with the address), what was attempted, why it was refused. Not the content."""
        trail = audit.AuditTrail(sender.principal, address=sender.address, request_id=request_id_var.get())
        trail.interaction = "create"
        trail.channel = "hl7v2"
        trail.description = (
            f"HL7 v2 {message.message_type} control id {message.control_id[:64]} via {sender.via}, "
            f"sending facility (MSH-4) '{message.msh.value(4)[:64]}'"
        )
        trail.outcome_text = refused.error.text
        with self.database.connection(write=True) as connection:
            audit.write(self.router.ctx.repository(connection, self.base_url), trail, refused.status)

    # -- the FHIR path ---------------------------------------------------------------------------
    def _deliver(
        self, message: Message, mapping: V2Mapping, principal: Principal, address: str | None, claim: Claim
    ) -> Outcome:
        """The referral and its journal row in one transaction (`claim` is its hook)."""
        result = mapping.apply(message)
        if self.validator is not None:
            issues = [i for i in self.validator.validate(result.bundle) if i.is_error]
            if issues:
                return self.journal.settle(
                    claim, Outcome(build_ack(message, "AE", errors_from_issues(result, issues)), "AE")
                )
        claim.answer = partial(outcome_for, message, result)
        try:
            response = self.router.handle(
                FhirRequest(
                    method="POST",
                    path="",
                    body=result.bundle,
                    headers={"content-type": "application/fhir+json"},
                    principal=principal,
                    base_url=self.base_url,
                    client_address=address,
                    channel="hl7v2",
                    hook=claim,
                )
            )
        except Lost:  # a copy of this message was claimed (and answered) while this one ran
            return self.journal.winner(message)
        if 200 <= response.status < 300 and claim.outcome is not None:
            return claim.outcome  # committed with the referral
        outcome = outcome_for(message, result, response)
        return outcome if outcome.code == "AR" else self.journal.settle(claim, outcome)


# -- response → ACK ----------------------------------------------------------------------------------
def outcome_for(message: Message, result: MappingResult, response: FhirResponse) -> Outcome:
    """2xx → AA (the router commits before it returns); 4xx content problems → AE; else AR."""
    if 200 <= response.status < 300:
        return Outcome(build_ack(message, "AA"), "AA", _focus(result, response.body))
    issues = _issues(response.body)
    if 400 <= response.status < 500 and response.status not in _RETRYABLE:
        errors = errors_from_issues(result, issues) or [
            AckError(APPLICATION_INTERNAL_ERROR, f"The referral was refused (HTTP {response.status})")
        ]
        return Outcome(build_ack(message, "AE", errors), "AE")
    text = "; ".join(i.diagnostics for i in issues) or f"HTTP {response.status}"
    return Outcome(
        build_ack(
            message, "AR", [AckError(APPLICATION_INTERNAL_ERROR, f"Not processed, retry later: {text}")]
        ),
        "AR",
    )


def errors_from_issues(result: MappingResult, issues: list[Any]) -> list[AckError]:
    """OperationOutcome issues → ERR segments naming the v2 field each expression came from."""
    errors: list[AckError] = []
    for issue in issues:
        if issue.severity not in ("error", "fatal"):
            continue
        loc = None
        for expression in getattr(issue, "expressions", None) or _issue_expressions(issue):
            loc = result.locate(expression)
            if loc is not None:
                break
        errors.append(
            AckError(
                code_for_issue(issue.code),
                issue.diagnostics,
                loc,
                application_code=issue.code,
            )
        )
        if len(errors) >= MAX_ERR_SEGMENTS:
            break
    return errors


@dataclass(frozen=True)
class _Issue:
    severity: str
    code: str
    diagnostics: str
    expressions: tuple[str, ...]

    @property
    def is_error(self) -> bool:
        return self.severity in ("error", "fatal")


def _issues(body: dict[str, Any] | None) -> list[_Issue]:
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    out = []
    for raw in body.get("issue") or []:
        out.append(
            _Issue(
                raw.get("severity", "error"),
                raw.get("code", "processing"),
                raw.get("diagnostics") or (raw.get("details") or {}).get("text") or raw.get("code", ""),
                tuple(raw.get("expression") or ()),
            )
        )
    return out


# Issues from the validator (fhir_gateway.fhir.outcome.Issue) look the same to errors_from_issues.
def _issue_expressions(issue: Any) -> tuple[str, ...]:
    return (issue.expression,) if getattr(issue, "expression", None) else ()


def _focus(result: MappingResult, body: dict[str, Any] | None) -> str | None:
    """'ServiceRequest/<id>' from the transaction-response (the RRI^I12 needs it later)."""
    entries = (body or {}).get("entry") or []
    for mapped in result.entries:
        if mapped.resource_type == "ServiceRequest" and mapped.index < len(entries):
            location = ((entries[mapped.index] or {}).get("response") or {}).get("location") or ""
            marker = location.find("ServiceRequest/")
            if marker >= 0:
                return "/".join(location[marker:].split("/")[:2])[:128]
    return None


@dataclass
class _Admitted:
    """A message the sender may send, of a kind the gateway takes, not answered before."""

    principal: Principal
    address: str | None
    claim: Claim
    mapping: V2Mapping | None  # None: the content is refused (AE) with `content_errors`
    content_errors: list[AckError]


def _accepted(
    message: Message, mappings: dict[str, V2Mapping]
) -> tuple[V2Mapping | None, list[AckError]] | Outcome:
    """The mapping for the message (or its content errors: AE), or an AR Outcome for a kind of
    message the gateway does not take or a journal key it cannot store."""
    try:
        accepted: tuple[V2Mapping | None, list[AckError]] = (accept(message, mappings), [])
    except V2Rejected as exc:
        return Outcome(build_ack(message, "AR", [exc.error]), "AR")
    except V2ContentError as exc:
        accepted = (None, exc.errors)
    too_long = _journal_key_error(message)
    if too_long is not None:
        return Outcome(build_ack(message, "AR", [too_long]), "AR")
    return accepted


def _journal_key_error(message: Message) -> AckError | None:
    """A control id or sender longer than the journal stores is refused (AR), not cut: two
    messages whose ids share the first 64 characters were one journal key, so the second got
    the first's stored AA without being processed (an acknowledged message lost)."""
    if len(message.control_id) > MAX_CONTROL_ID:
        return AckError(
            DATA_TYPE_ERROR,
            f"MSH-10 (message control id) is longer than {MAX_CONTROL_ID} characters",
            Loc("MSH", 1, 10),
        )
    if len(message.sender) > MAX_SENDER:
        return AckError(
            DATA_TYPE_ERROR,
            f"MSH-3.1 and MSH-4.1 (sending application and facility) are longer than {MAX_SENDER - 1} "
            "characters together",
            Loc("MSH", 1, 3),
        )
    return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
