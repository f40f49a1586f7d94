"""Console sign-in: who may use the operator console, and the session cookie that remembers it.

Two ways in, both ending in the same session cookie:
  * an administrator's access token (from the SMART flow, or `fhir-gateway token gateway-admin`),
    verified by the gateway's own `TokenService` — role `admin` only;
  * the console password `GATEWAY_CONSOLE_PASSWORD`, compared in constant time (at least 12
    characters, else password sign-in stays off).
Failed sign-ins are throttled per account and address (`security/login_throttle.py`).

Why a JWT signed with the gateway token key for the session: no session table, replicas
already share that key, and the type header (`console+jwt`) keeps it apart from access tokens
— the bearer middleware refuses a session as a bearer token and this module refuses an
access token as a session. The cookie is HttpOnly, SameSite=Strict, Path=/console (Secure
over https); every POST also carries the session's CSRF value and must come from our origin.
Sign-out deletes the cookie; a copied cookie stays valid until it expires (8 h by default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from fhir_gateway.security.principal import Principal
from fhir_gateway.security.tokens import InvalidToken, TokenService

SESSION_COOKIE = "gw_console"
SESSION_TYPE = "console+jwt"
SESSION_AUDIENCE = "fhir-gateway-console"
DEFAULT_SESSION_SECONDS = 8 * 3600
MIN_PASSWORD_LENGTH = 12
PASSWORD_SUBJECT = "console-password"  # the account of a password sign-in


class LoginRefused(Exception):
    """The credentials do not open the console; the message is safe to show."""


@dataclass(frozen=True)
class Session:
    subject: str  # the admin client id, or "console-password"
    csrf: str
    expires: int

    @property
    def principal(self) -> Principal:
        """Who the console acts as when it reads through the FHIR router (and in AuditEvents)."""
        return Principal(
            client_id=f"console:{self.subject}",
            organization=None,
            role="admin",
            scopes=("system/*.rs",),
            authenticated=True,
        )


def check_password(given: str, configured: str) -> bool:
    """Constant time: both sides are hashed to 32 bytes first, so neither the content nor the
    length of the configured password shows in the time taken (`compare_digest` on the raw
    strings returns early when the lengths differ). An unset or too-short configured password
    never matches."""
    if len(configured) < MIN_PASSWORD_LENGTH or not given:
        return False
    given_digest = hashlib.sha256(given.encode("utf-8")).digest()
    configured_digest = hashlib.sha256(configured.encode("utf-8")).digest()
    return hmac.compare_digest(given_digest, configured_digest)


_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def claimed_client(access_token: str) -> str:
    """The client an access token *says* it is for, read without verifying it (the throttle
    must pick the account before any signature check); "unknown" when it says nothing usable."""
    try:
        payload = access_token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        value = claims.get("client_id") or claims.get("sub")
    except (IndexError, ValueError, UnicodeDecodeError, AttributeError):
        return "unknown"
    return value if isinstance(value, str) and _ACCOUNT.match(value) else "unknown"


def subject_for_token(tokens: TokenService, access_token: str) -> str:
    """An administrator's access token → the subject of the new session."""
    try:
        principal = tokens.verify(access_token.strip())
    except InvalidToken as exc:
        raise LoginRefused(f"access token not accepted: {exc}") from None
    if principal.role != "admin":
        raise LoginRefused("the console is for administrators: this token belongs to a non-admin client")
    return principal.client_id


def issue(tokens: TokenService, subject: str, lifetime: int = DEFAULT_SESSION_SECONDS) -> tuple[str, Session]:
    now = int(time.time())
    session = Session(subject=subject, csrf=secrets.token_urlsafe(24), expires=now + lifetime)
    claims = {
        "iss": tokens.issuer,
        "aud": SESSION_AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": session.expires,
        "jti": secrets.token_urlsafe(18),
        "csrf": session.csrf,
    }
    header = {"alg": tokens.keys.alg, "typ": SESSION_TYPE, "kid": tokens.keys.signing.kid}
    return jwt.encode(header, claims, tokens.keys.signing, algorithms=[tokens.keys.alg]), session


def verify(tokens: TokenService, cookie: str | None) -> Session | None:
    """The session in a cookie, or None (absent, forged, expired, or not a console session)."""
    if not cookie or len(cookie) > 4096:
        return None
    try:
        decoded = jwt.decode(cookie, tokens.keys.verification, algorithms=[tokens.keys.alg])
    except (JoseError, ValueError, TypeError):
        return None
    claims: dict[str, Any] = decoded.claims
    if decoded.header.get("typ") != SESSION_TYPE:
        return None
    if claims.get("iss") != tokens.issuer or claims.get("aud") != SESSION_AUDIENCE:
        return None
    exp, sub, csrf = claims.get("exp"), claims.get("sub"), claims.get("csrf")
    if not isinstance(exp, int) or exp < int(time.time()):
        return None
    if not isinstance(sub, str) or not isinstance(csrf, str) or not csrf:
        return None
    return Session(subject=sub, csrf=csrf, expires=exp)


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())
