"""Client registrations (table `clients`) and used client-assertion ids (table `used_jtis`).

A registration says who a system client is (its organisation and role), which public keys
its assertions are signed with, and the most it may ask for (allowed scopes). It is checked
once, here, when it is added: only public RS/EC signing keys, no private key material.

HL7 v2 senders (a GP system sending REF^I12) are registrations too: `v2_facilities` lists the
sending facilities (MSH-4, the practice's AGB code) the client may send as; over MLLP the
connection is tied to the registration by a client-certificate fingerprint (`mllp_certificates`,
SHA-256 of the DER certificate) and/or the source address (`mllp_addresses`, IPs or CIDR
networks). Who may send as which facility is decided in `fhir_gateway.v2.senders`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_gateway.fhir.searchparams import utc_now
from fhir_gateway.security.scopes import ScopeError, format_scopes, parse_scopes
from fhir_gateway.store import clients as client_store
from fhir_gateway.store.database import Database

log = logging.getLogger(__name__)

ROLES = ("gp-practice", "welfare-org", "admin")
ASSERTION_ALGORITHMS = ("RS384", "ES384")  # SMART Backend Services: the server must support both
_KEY_ALG = {"RSA": "RS384", "EC": "ES384"}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")  # RFC 7518 §6.2.2, §6.3.2, §6.4
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_ORGANIZATION = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")
MIN_RSA_BITS = 2048
REGISTRATION_SUFFIX = ".client.json"
PURGE_BATCH = 500  # expired jtis removed per token request: keeps up, never a long delete
_AGB = re.compile(r"^[0-9]{8}$")  # AGB-z code: 8 digits (MSH-4.1 of a Dutch GP system)
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MAX_V2_ENTRIES = 64  # facilities, certificates or addresses per registration


class RegistrationError(ValueError):
    """A client registration that must not be stored (bad keys, unknown role, bad scopes...)."""


@dataclass(frozen=True)
class ClientRegistration:
    client_id: str
    name: str
    organization: str | None
    role: str
    jwks: dict[str, Any]
    scopes: tuple[str, ...]
    active: bool = True
    dev_only: bool = False
    created_at: datetime | None = field(default=None, compare=False)
    v2_facilities: tuple[str, ...] = ()  # MSH-4.1 values (AGB codes) this client may send v2 as
    mllp_certificates: tuple[str, ...] = ()  # SHA-256 fingerprints (lowercase hex) of client certs
    mllp_addresses: tuple[str, ...] = ()  # source networks (CIDR, normalised) MLLP may come from

    def key_set(self) -> KeySet:
        return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The registration file format (`examples/clients/*.client.json`)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "organization": self.organization,
            "role": self.role,
            "scopes": list(self.scopes),
            "active": self.active,
            "dev_only": self.dev_only,
            "jwks": self.jwks,
            "v2_facilities": list(self.v2_facilities),
            "mllp_certificates": list(self.mllp_certificates),
            "mllp_addresses": list(self.mllp_addresses),
        }


def validate_public_jwks(jwks: Any) -> dict[str, Any]:
    """Check a client's JWKS and return it in canonical public form.

    Refused: private or symmetric key material (a leaked private key must never be stored, and
    an `oct` key would turn signatures into shared secrets), key types other than RSA/EC P-384,
    RSA shorter than 2048 bits, `alg` other than RS384/ES384, `use` other than `sig`, missing or
    duplicate `kid` (SMART assertions name their key by `kid`)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise RegistrationError("jwks must be a JSON Web Key Set: {'keys': [ ... ]} with at least one key")
    out: list[dict[str, Any]] = []
    kids: set[str] = set()
    for n, jwk in enumerate(jwks["keys"]):
        where = f"jwks.keys[{n}]"
        if not isinstance(jwk, dict):
            raise RegistrationError(f"{where} is not a JSON object")
        private = sorted(m for m in _PRIVATE_MEMBERS if m in jwk)
        if private:
            raise RegistrationError(
                f"{where} contains private or secret key material ({', '.join(private)}); "
                "register the PUBLIC key only"
            )
        kty = jwk.get("kty")
        if kty not in _KEY_ALG:
            raise RegistrationError(f"{where}: key type '{kty}' not accepted (RSA or EC P-384 only)")
        alg = jwk.get("alg", _KEY_ALG[kty])
        if alg != _KEY_ALG[kty]:
            raise RegistrationError(f"{where}: alg '{alg}' not accepted for {kty} (use {_KEY_ALG[kty]})")
        if jwk.get("use", "sig") != "sig":
            raise RegistrationError(f"{where}: use must be 'sig'")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise RegistrationError(f"{where}: kid is required")
        if kid in kids:
            raise RegistrationError(f"{where}: kid '{kid}' appears twice")
        kids.add(kid)
        try:
            key = RSAKey.import_key(jwk) if kty == "RSA" else ECKey.import_key(jwk)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise RegistrationError(f"{where}: not a valid {kty} key ({exc})") from None
        if key.is_private:
            raise RegistrationError(f"{where} contains private key material; register the PUBLIC key only")
        if kty == "EC" and key.curve_name != "P-384":
            raise RegistrationError(f"{where}: EC keys must be on curve P-384 (ES384)")
        if kty == "RSA" and key.public_key.key_size < MIN_RSA_BITS:
            raise RegistrationError(f"{where}: RSA keys must have at least {MIN_RSA_BITS} bits")
        public = key.as_dict(private=False)
        public.update({"kid": kid, "alg": alg, "use": "sig"})
        out.append(public)
    return {"keys": out}


def validate_registration(data: dict[str, Any]) -> ClientRegistration:
    """A registration document (the `*.client.json` format) → a checked `ClientRegistration`."""
    if not isinstance(data, dict):
        raise RegistrationError("a registration is a JSON object")
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise RegistrationError("client_id: 1-128 characters of letters, digits and . _ : -")
    role = data.get("role")
    if role not in ROLES:
        raise RegistrationError(f"role must be one of {', '.join(ROLES)}, not '{role}'")
    organization = data.get("organization")
    if organization is not None and (
        not isinstance(organization, str) or not _ORGANIZATION.match(organization)
    ):
        raise RegistrationError("organization must be a reference 'Organization/<id>'")
    if role != "admin" and not organization:
        raise RegistrationError(f"a {role} client must act for an organization ('Organization/<id>')")
    raw_scopes = data.get("scopes", [])
    if isinstance(raw_scopes, str):
        raw_scopes = raw_scopes.split()
    if not isinstance(raw_scopes, list) or not all(isinstance(s, str) for s in raw_scopes):
        raise RegistrationError("scopes must be a list of SMART system scopes")
    try:
        scopes = parse_scopes(raw_scopes)
    except ScopeError as exc:
        raise RegistrationError(f"scopes: {exc}") from None
    if not scopes:
        raise RegistrationError("scopes: a client needs at least one allowed scope")
    facilities, certificates, addresses = validate_v2_sender(data, role)
    return ClientRegistration(
        client_id=client_id,
        name=str(data.get("name") or client_id),
        organization=organization,
        role=role,
        jwks=validate_public_jwks(data.get("jwks")),
        scopes=tuple(format_scopes(scopes).split()),
        active=bool(data.get("active", True)),
        dev_only=bool(data.get("dev_only", False)),
        v2_facilities=facilities,
        mllp_certificates=certificates,
        mllp_addresses=addresses,
    )


def _string_list(data: dict[str, Any], name: str) -> list[str]:
    raw = data.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise RegistrationError(f"{name} must be a list of strings")
    if len(raw) > MAX_V2_ENTRIES:
        raise RegistrationError(f"{name}: at most {MAX_V2_ENTRIES} entries")
    return [v.strip() for v in raw]


def normalise_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' (SHA-256, 32 bytes) → 64 lowercase hex digits; ValueError otherwise."""
    value = text.strip().replace(":", "").lower()
    if not _FINGERPRINT.match(value):
        raise ValueError(f"'{text}' is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value


def validate_v2_sender(
    data: dict[str, Any], role: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """`v2_facilities`, `mllp_certificates`, `mllp_addresses` of a registration, checked and in
    canonical form. Only a GP practice sends referrals (REF^I12); the MLLP identities only mean
    something for a client with facilities, so either without them is refused."""
    facilities = _string_list(data, "v2_facilities")
    for value in facilities:
        if not _AGB.match(value):
            raise RegistrationError(f"v2_facilities: '{value}' is not an AGB code (8 digits, MSH-4.1)")
    if facilities and role != "gp-practice":
        raise RegistrationError(f"v2_facilities: a {role} client does not send referrals; only a gp-practice")
    certificates = []
    for value in _string_list(data, "mllp_certificates"):
        try:
            certificates.append(normalise_fingerprint(value))
        except ValueError as exc:
            raise RegistrationError(f"mllp_certificates: {exc}") from None
    addresses = []
    for value in _string_list(data, "mllp_addresses"):
        try:
            addresses.append(str(ipaddress.ip_network(value, strict=True)))
        except ValueError as exc:
            raise RegistrationError(
                f"mllp_addresses: '{value}' is not an IP address or network ({exc})"
            ) from None
    if (certificates or addresses) and not facilities:
        raise RegistrationError("mllp_certificates / mllp_addresses need v2_facilities (what MSH-4 may say)")
    return _unique(facilities), _unique(certificates), _unique(addresses)


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- storage (the SQL is in `store/clients.py`) ---------------------------------------------------
def _from_row(row: Any) -> ClientRegistration:
    return ClientRegistration(
        client_id=row["client_id"],
        name=row["name"],
        organization=row["organization"],
        role=row["role"],
        jwks=row["jwks"],
        scopes=tuple(row["scopes"]),
        active=bool(row["active"]),
        dev_only=bool(row["dev_only"]),
        created_at=row["created_at"],
        v2_facilities=tuple(row["v2_facilities"] or ()),
        mllp_certificates=tuple(row["mllp_certificates"] or ()),
        mllp_addresses=tuple(row["mllp_addresses"] or ()),
    )


def get_client(database: Database, client_id: str) -> ClientRegistration | None:
    with database.connection(write=False) as conn:
        return client_on(conn, client_id)


def list_clients(database: Database) -> list[ClientRegistration]:
    with database.connection(write=False) as conn:
        return clients_on(conn)


def client_on(connection: sa.Connection, client_id: str) -> ClientRegistration | None:
    """`get_client` inside the caller's transaction (the v2 service reads all it needs in one)."""
    row = client_store.client_row(connection, client_id)
    return _from_row(row) if row is not None else None


def clients_on(connection: sa.Connection) -> list[ClientRegistration]:
    return [_from_row(r) for r in client_store.client_rows(connection)]


def save_client(database: Database, registration: ClientRegistration) -> ClientRegistration:
    """Insert or replace a registration. It is validated again, so no path stores an unchecked one."""
    checked = validate_registration(registration.to_json())
    values = {
        "name": checked.name,
        "organization": checked.organization,
        "role": checked.role,
        "jwks": checked.jwks,
        "scopes": list(checked.scopes),
        "active": checked.active,
        "dev_only": checked.dev_only,
        "v2_facilities": list(checked.v2_facilities),
        "mllp_certificates": list(checked.mllp_certificates),
        "mllp_addresses": list(checked.mllp_addresses),
    }
    with database.connection(write=True) as conn:
        client_store.upsert_client(conn, checked.client_id, values, utc_now())
    return checked


def set_client_active(database: Database, client_id: str, active: bool) -> bool:
    with database.connection(write=True) as conn:
        return client_store.set_active(conn, client_id, active)


def registration_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob(f"*{REGISTRATION_SUFFIX}"))
    return [path]


def read_registrations(paths: Iterable[Path]) -> list[ClientRegistration]:
    out = []
    for p in paths:
        try:
            out.append(validate_registration(orjson.loads(p.read_bytes())))
        except (RegistrationError, orjson.JSONDecodeError) as exc:
            raise RegistrationError(f"{p.name}: {exc}") from None
    return out


def load_client_registrations(database: Database, path: Path | str, *, allow_dev_only: bool = True) -> int:
    """Store every `*.client.json` under `path` (a folder or one file); returns how many.
    Loading twice changes nothing. `allow_dev_only=False` refuses registrations whose private
    keys are public knowledge (the committed examples) — use that for any real deployment."""
    regs = read_registrations(registration_files(Path(path)))
    if not allow_dev_only:
        dev = [r.client_id for r in regs if r.dev_only]
        if dev:
            raise RegistrationError(f"dev-only registrations refused: {', '.join(dev)}")
    for reg in regs:
        save_client(database, reg)
        if reg.dev_only:
            log.warning("loaded DEV-ONLY client %s: its private key is in the repository", reg.client_id)
    return len(regs)


# -- replay protection -------------------------------------------------------------------------
def remember_jti(database: Database, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record a client-assertion id; False when that client already used it (a replay).

    The primary key (client_id, jti) makes this atomic across replicas sharing one database;
    expired ids are purged in the same transaction (an expired assertion fails its `exp` check
    anyway, so forgetting its id cannot open a replay)."""
    try:
        with database.connection(write=True) as conn:
            client_store.remember_jti(conn, client_id, jti, expires_at, utc_now(), purge_batch=PURGE_BATCH)
    except sa.exc.IntegrityError:
        return False
    return True
