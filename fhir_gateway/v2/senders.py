"""Who sent an HL7 v2 message: decided by authentication, never by MSH-4 alone.

The transport says who the sender is — `POST /v2` by the bearer token's client, the MLLP
listener by the client certificate of the TLS connection or by the source address — and the
client's registration (`security.clients`) says which sending facilities (MSH-4.1, AGB codes) it
may use. `authorise` then checks the message against both:

- MSH-4.1 is one of the client's `v2_facilities`;
- that AGB code is, in the directory, a GP practice and the client's own organisation;
- the client holds every scope in `V2_SCOPES` (what the referral transaction needs).

The referral then runs as the client itself (its client id, its organisation, the scopes of
`V2_SCOPES` only). Anything else is an AR with an ERR at MSH-4 (table 0357 code 204, ERR-5 the
FHIR issue type `login` or `forbidden`) and an AuditEvent.

`GATEWAY_INSECURE_DEV` / `mllp --insecure-dev` keep the old development shortcut: a message
whose transport names nobody acts as the practice MSH-4 names (`facility_principal`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fhir_gateway.security.clients import ClientRegistration, client_on, clients_on
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.scopes import has_scope
from fhir_gateway.v2.ack import REQUIRED_FIELD_MISSING, UNKNOWN_KEY_IDENTIFIER, AckError
from fhir_gateway.v2.mapping import Loc
from fhir_gateway.v2.message import Message
from fhir_gateway.v2.mllp import Peer
from fhir_gateway.vocabulary import AGB

log = logging.getLogger(__name__)

V2_SCOPES = (
    "system/ServiceRequest.cr",
    "system/Patient.cr",
    "system/Consent.cr",
    "system/Practitioner.r",
    "system/PractitionerRole.r",
    "system/Organization.r",
)
# Granted to a v2 referral when the registration has them: the PID of a referral updates the
# practice's stored Patient, and a PRD naming someone the directory does not know registers that
# locum in the practice's compartment. Without them those referrals get a precise AE instead.
V2_OPTIONAL_SCOPES = ("system/Patient.u", "system/Practitioner.c", "system/PractitionerRole.c")
MSH4 = Loc("MSH", 1, 4)


@dataclass(frozen=True)
class V2Sender:
    """A client the transport authenticated, with what its registration allows for v2."""

    client_id: str
    organization: str | None
    role: str
    scopes: tuple[str, ...]
    facilities: tuple[str, ...]
    via: str  # "bearer token" | "client certificate" | "source address"
    address: str | None = None
    registered: bool = True  # False: the token's client has no active registration any more

    @property
    def principal(self) -> Principal:
        return Principal(self.client_id, self.organization, self.role, self.scopes, authenticated=True)


@dataclass(frozen=True)
class Unidentified:
    """A transport that could not tie the message to any registration (no or unknown credentials)."""

    reason: str
    address: str | None = None
    via: str = "MLLP"

    @property
    def principal(self) -> Principal:
        return Principal.unauthenticated()


Sender = V2Sender | Unidentified
# a callable is resolved inside the service's read transaction (the connection), with the rest it reads
SenderSource = Sender | Callable[[sa.Connection], Sender] | None


class Refused(Exception):
    """The sender may not send this message: the ERR for the ACK and the HTTP-like status (401
    unauthenticated, 403 forbidden) for the AuditEvent."""

    def __init__(self, error: AckError, status: int) -> None:
        super().__init__(error.text)
        self.error = error
        self.status = status


def sending_facility(message: Message) -> str:
    return message.msh.value(4)


def authorise(sender: Sender, message: Message, directory: Any) -> Principal:
    """The principal the referral runs as, or `Refused`."""
    facility = sending_facility(message)
    if isinstance(sender, Unidentified):
        raise Refused(
            AckError(
                UNKNOWN_KEY_IDENTIFIER,
                f"Not authenticated ({sender.reason}): the gateway cannot accept a message as sending "
                f"facility '{facility}' (MSH-4) from an unidentified sender",
                MSH4,
                application_code="login",
            ),
            401,
        )
    who = f"client {sender.client_id} ({sender.via})"
    if not sender.registered:
        raise _forbidden(f"{who} is not registered or not active; it cannot send HL7 v2")
    if not facility:
        raise Refused(
            AckError(
                REQUIRED_FIELD_MISSING,
                "MSH-4 (sending facility, the practice's AGB code) is missing",
                MSH4,
                application_code="required",
            ),
            403,
        )
    if facility not in sender.facilities:
        registered = ", ".join(sender.facilities) or "none"
        raise _forbidden(
            f"Sending facility '{facility}' (MSH-4) is not registered for {who}; its registered "
            f"v2 facilities: {registered}"
        )
    org = directory.organization_by_identifier(AGB, facility)
    if org is None or not directory.is_gp_practice(org):
        raise _forbidden(
            f"Sending facility '{facility}' (MSH-4) is not a GP practice's AGB code in the directory"
        )
    if sender.role != "gp-practice" or f"Organization/{org['id']}" != sender.organization:
        raise _forbidden(
            f"Sending facility '{facility}' (MSH-4) is the AGB code of Organization/{org['id']}, "
            f"not of {sender.organization or 'the organisation'} that {who} acts for"
        )
    missing = [s for s in V2_SCOPES if not _granted(sender.scopes, s)]
    if missing:
        raise _forbidden(
            f"The credentials of {who} do not grant {' '.join(missing)}, needed to send a referral",
            loc=None,
        )
    scopes = V2_SCOPES + tuple(s for s in V2_OPTIONAL_SCOPES if _granted(sender.scopes, s))
    return Principal(sender.client_id, sender.organization, "gp-practice", scopes, authenticated=True)


def facility_principal(message: Message, directory: Any) -> Principal:
    """INSECURE DEVELOPMENT ONLY: MSH-4 alone names the practice (no credentials involved)."""
    facility = sending_facility(message)
    org = directory.organization_by_identifier(AGB, facility) if facility else None
    if org is None or not directory.is_gp_practice(org):
        raise _forbidden(
            f"Sending facility '{facility}' (MSH-4) is not a GP practice's AGB code in the directory"
        )
    return Principal(
        client_id=f"v2-insecure-dev:{message.sender}",
        organization=f"Organization/{org['id']}",
        role="gp-practice",
        scopes=V2_SCOPES + V2_OPTIONAL_SCOPES,
        authenticated=True,
    )


def _forbidden(text: str, loc: Loc | None = MSH4) -> Refused:
    return Refused(AckError(UNKNOWN_KEY_IDENTIFIER, text, loc, application_code="forbidden"), 403)


def _granted(scopes: tuple[str, ...], wanted: str) -> bool:
    resource_type, _, letters = wanted.removeprefix("system/").partition(".")
    return all(has_scope(scopes, resource_type, letter) for letter in letters)


# -- the transports ---------------------------------------------------------------------------------
def bearer_sender(principal: Principal, address: str | None, connection: sa.Connection) -> Sender:
    """POST /v2: the token's client, with the facilities its registration has now (a registration
    disabled after the token was issued sends nothing more)."""
    if not principal.authenticated:
        return Unidentified("no access token", address, "HTTP")
    registration = client_on(connection, principal.client_id)
    active = registration is not None and registration.active
    return V2Sender(
        client_id=principal.client_id,
        organization=principal.organization,
        role=principal.role,
        scopes=principal.scopes,
        facilities=registration.v2_facilities if registration is not None and active else (),
        via="bearer token",
        address=address,
        registered=active,
    )


def certificate_fingerprint(der: bytes) -> str:
    """What `mllp_certificates` holds: SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def identify_peer(peer: Peer, connection: sa.Connection) -> Sender:
    """The registration an MLLP connection belongs to.

    With a client certificate: the one active registration listing its fingerprint (and, when
    that registration lists `mllp_addresses`, the connection must come from one of them too).
    Without: the one active registration whose `mllp_addresses` hold the source address and that
    lists no certificates (a registration with certificates always needs one). None or more than
    one match: unidentified."""
    senders = [r for r in clients_on(connection) if r.active and r.v2_facilities]
    if peer.certificate is not None:
        fingerprint = certificate_fingerprint(peer.certificate)
        matches = [r for r in senders if fingerprint in r.mllp_certificates]
        if len(matches) != 1:
            problem = "is not registered" if not matches else "is registered for more than one client"
            return Unidentified(f"client certificate SHA-256 {fingerprint} {problem}", peer.address)
        reg = matches[0]
        if reg.mllp_addresses and not _address_in(peer.address, reg.mllp_addresses):
            return Unidentified(
                f"client certificate of {reg.client_id} used from an address not registered for it",
                peer.address,
            )
        return registered_sender(reg, "client certificate", peer.address)
    matches = [r for r in senders if not r.mllp_certificates and _address_in(peer.address, r.mllp_addresses)]
    if len(matches) != 1:
        problem = (
            "no client certificate, and the source address is registered for no client"
            if not matches
            else "the source address is registered for more than one client"
        )
        return Unidentified(problem, peer.address)
    return registered_sender(matches[0], "source address", peer.address)


def registered_sender(reg: ClientRegistration, via: str, address: str | None = None) -> V2Sender:
    """The sender a registration makes (MLLP identification; tests that play a transport)."""
    return V2Sender(reg.client_id, reg.organization, reg.role, reg.scopes, reg.v2_facilities, via, address)


def _address_in(address: str | None, networks: tuple[str, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:192.0.2.1 on a dual-stack socket is 192.0.2.1
    return any(ip in ipaddress.ip_network(n) for n in networks)
