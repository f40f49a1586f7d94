"""Access tokens: short-lived JWTs signed with the gateway's own key, and their verification.

Why signed JWTs and not opaque tokens in the database: every API call verifies its token, and a
signature check costs microseconds and no database round trip, while replicas only need to share
the key (a file or an environment variable). Revocation is by expiry: a token lives at most 300 s,
and a deactivated client gets no new one. Tokens are RFC 9068 shaped (`typ: at+jwt`, iss, aud,
sub, client_id, scope, jti) so the type header keeps them apart from any other JWT.

The key: `GATEWAY_TOKEN_KEY` (a private JWK, JWK Set or PEM, e.g. from a secret store) or
`GATEWAY_TOKEN_KEY_FILE` (a file holding one). With neither, a development key is generated once
and kept beside the SQLite database (`./var/` by default) — never do that for replicas on several
hosts: each would mint tokens the others refuse. A JWK Set may hold several keys: the first signs,
all verify (rotation without downtime).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_gateway.security.clients import ROLES, ClientRegistration
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.scopes import ScopeError, format_scopes, parse_scopes
from fhir_gateway.settings import Settings

log = logging.getLogger(__name__)

MAX_ACCESS_TOKEN_LIFETIME = 300  # seconds; SMART recommends no more than five minutes
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
DEFAULT_ISSUER = "urn:fhir-gateway"
DEV_KEY_NAME = "token-signing-key.dev-only.private.jwk"
_ALG_FOR = {("EC", "P-256"): "ES256", ("RSA", None): "RS256"}
_LEEWAY = 10  # seconds of clock difference tolerated between replicas
_VERIFIED_TOKENS = 4096  # verified access tokens remembered (each ~1 KB), oldest dropped first


class InvalidToken(Exception):
    """A bearer token that must not be accepted; the message says why (safe to return)."""


class KeyConfigError(Exception):
    """The gateway signing key is missing, public-only or of an unsupported type."""


@dataclass(frozen=True)
class GatewayKeys:
    """The private key that signs access tokens and the public keys that verify them."""

    signing: ECKey | RSAKey
    alg: str
    verification: KeySet
    source: str

    @classmethod
    def from_document(cls, text: str, source: str) -> GatewayKeys:
        """Parse a private JWK, a JWK Set (first key signs) or a PEM private key."""
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                keys = [_import_any(text)]
            else:
                doc = orjson.loads(text)
                keys = [_import_any(k) for k in doc["keys"]] if "keys" in doc else [_import_any(doc)]
        except (orjson.JSONDecodeError, JoseError, ValueError, TypeError, KeyError) as exc:
            raise KeyConfigError(f"gateway token key from {source} cannot be read: {exc}") from None
        if not keys or not keys[0].is_private:
            raise KeyConfigError(f"gateway token key from {source}: the first key must be a private key")
        publics = []
        for key in keys:
            public = key.as_dict(private=False)
            public.update({"kid": key.kid or key.thumbprint(), "alg": _alg_of(key), "use": "sig"})
            publics.append(public)
        signing = keys[0]
        if not signing.kid:
            signing = type(signing).import_key(signing.as_dict(private=True), {"kid": signing.thumbprint()})
        return cls(signing, _alg_of(signing), KeySet.import_key_set({"keys": publics}), source)  # type: ignore[arg-type]

    def public_jwks(self) -> dict[str, Any]:
        return self.verification.as_dict(private=False)


def _import_any(data: Any) -> ECKey | RSAKey:
    if isinstance(data, str):
        try:
            return ECKey.import_key(data)
        except (JoseError, ValueError, TypeError):
            return RSAKey.import_key(data)
    kty = data.get("kty")
    if kty == "EC":
        return ECKey.import_key(data)
    if kty == "RSA":
        return RSAKey.import_key(data)
    raise KeyConfigError(f"key type '{kty}' cannot sign access tokens (EC P-256 or RSA)")


def _alg_of(key: ECKey | RSAKey) -> str:
    if isinstance(key, ECKey):
        alg = _ALG_FOR.get(("EC", key.curve_name))
        if alg is None:
            raise KeyConfigError("EC gateway keys must be on curve P-256 (ES256)")
        return alg
    if key.public_key.key_size < 2048:
        raise KeyConfigError("RSA gateway keys need at least 2048 bits")
    return "RS256"


def generate_gateway_key() -> ECKey:
    """A fresh ES256 signing key, named by its RFC 7638 thumbprint."""
    return ECKey.generate_key("P-256", {"use": "sig", "alg": "ES256"}, private=True, auto_kid=True)


def dev_key_path(settings: Settings) -> Path:
    """Beside the SQLite database when there is one (tests and `serve` then keep their own key),
    else `<GATEWAY_HOME>/var/`, so every command finds the same key from any directory."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            return Path(path).resolve().parent / DEV_KEY_NAME
    return (Path(settings.home) / "var").resolve() / DEV_KEY_NAME


def load_gateway_keys(settings: Settings) -> GatewayKeys:
    """`token_key` (inline) wins over `token_key_file`; with neither, the development key."""
    inline = str(settings.token_key or "")
    if inline.strip():
        return GatewayKeys.from_document(inline, "GATEWAY_TOKEN_KEY")
    file = str(settings.token_key_file or "")
    if file:
        path = Path(file)
        if not path.is_file():
            raise KeyConfigError(f"GATEWAY_TOKEN_KEY_FILE {path} does not exist")
        return GatewayKeys.from_document(path.read_text(), str(path))
    path = dev_key_path(settings)
    if not settings.is_sqlite:
        log.warning(
            "no GATEWAY_TOKEN_KEY / GATEWAY_TOKEN_KEY_FILE: using the development key %s; replicas on "
            "other hosts will refuse this replica's tokens — configure a shared key",
            path,
        )
    return GatewayKeys.from_document(_read_or_create_dev_key(path), str(path))


def _read_or_create_dev_key(path: Path) -> str:
    """Create the key file atomically (several workers may start at once): write a private temp
    file, then hard-link it into place; whoever links first wins and everyone reads that one."""
    if path.is_file():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(generate_gateway_key().as_dict(private=True), option=orjson.OPT_INDENT_2))
    try:
        os.link(tmp, path)
        log.warning("generated a DEVELOPMENT token signing key at %s (not for production)", path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path.read_text()


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str

    def response(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 token response body."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


class TokenService:
    """Issues and verifies access tokens with one `GatewayKeys`; safe to share between threads."""

    def __init__(
        self, keys: GatewayKeys, issuer: str = DEFAULT_ISSUER, lifetime: int = MAX_ACCESS_TOKEN_LIFETIME
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.lifetime = min(max(1, lifetime), MAX_ACCESS_TOKEN_LIFETIME)
        # A client sends the same token for minutes: the signature check (~0.5 ms for ES256) and
        # the claim checks are done once per token; the time checks run on every use.
        self._verified: dict[str, tuple[Principal, int, int]] = {}
        self._verified_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        issuer = settings.base_url.rstrip("/") or DEFAULT_ISSUER
        lifetime = settings.access_token_lifetime
        return cls(load_gateway_keys(settings), issuer, lifetime)

    def issue(
        self,
        client: ClientRegistration,
        scopes: Sequence[str] | str,
        *,
        lifetime: int | None = None,
        now: int | None = None,
    ) -> IssuedToken:
        """Sign a token for an already-authenticated client and already-granted scopes."""
        scope = format_scopes(parse_scopes(scopes))
        if not scope:
            raise ValueError("an access token needs at least one scope")
        now = int(time.time()) if now is None else now
        life = min(max(1, lifetime or self.lifetime), self.lifetime)
        claims = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "organization": client.organization,
            "role": client.role,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "jti": secrets.token_urlsafe(18),
        }
        header = {"alg": self.keys.alg, "typ": ACCESS_TOKEN_TYPE, "kid": self.keys.signing.kid}
        token = jwt.encode(header, claims, self.keys.signing, algorithms=[self.keys.alg])
        return IssuedToken(token, life, scope)

    def is_known(self, token: str) -> bool:
        """Verified before, so checking it again costs no signature check (the rate limiter lets
        such tokens through before it charges unknown ones)."""
        return token in self._verified

    def verify(self, token: str, *, now: int | None = None) -> Principal:
        """A bearer token → the authenticated Principal; raises `InvalidToken` otherwise."""
        if len(token) > 8192:
            raise InvalidToken("token too long")
        now = int(time.time()) if now is None else now
        known = self._verified.get(token)
        if known is not None:
            principal, exp, iat = known
            _check_lifetime(exp, iat, now)
            return principal
        try:
            decoded = jwt.decode(token, self.keys.verification, algorithms=[self.keys.alg])
        except JoseError as exc:
            raise InvalidToken(f"signature or format not accepted ({exc.error})") from None
        except (ValueError, TypeError):
            raise InvalidToken("not a JWT") from None
        if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token of this gateway")
        c = decoded.claims
        if c.get("iss") != self.issuer or c.get("aud") != self.issuer:
            raise InvalidToken("issued for another audience")
        exp, iat = c.get("exp"), c.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise InvalidToken("exp and iat are required")
        _check_lifetime(exp, iat, now)
        client_id, role, org = c.get("client_id"), c.get("role"), c.get("organization")
        if not isinstance(client_id, str) or c.get("sub") != client_id or role not in ROLES:
            raise InvalidToken("token claims incomplete")
        if org is not None and not isinstance(org, str):
            raise InvalidToken("token claims incomplete")
        try:
            scopes = tuple(format_scopes(parse_scopes(str(c.get("scope", "")))).split())
        except ScopeError:
            raise InvalidToken("token scope not understood") from None
        principal = Principal(
            client_id=client_id, organization=org, role=role, scopes=scopes, authenticated=True
        )
        with self._verified_lock:
            if len(self._verified) >= _VERIFIED_TOKENS:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = (principal, exp, iat)
        return principal


def _check_lifetime(exp: int, iat: int, now: int) -> None:
    if exp + _LEEWAY < now:
        raise InvalidToken("token expired")
    if iat - _LEEWAY > now or exp - iat > MAX_ACCESS_TOKEN_LIFETIME:
        raise InvalidToken("token lifetime not accepted")
