"""SMART Backend Services authentication: the client_credentials grant with a private_key_jwt
client assertion (RFC 7523), and the bearer-token check for API calls.

HTTP-free on purpose: `api/auth.py` turns `OAuthError` / `BearerError` into responses, and the
CLI runs the very same exchange to mint development tokens.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError

from fhir_gateway.security.clients import ASSERTION_ALGORITHMS, ClientRegistration, remember_jti
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.scopes import format_scopes, intersect, parse_scopes
from fhir_gateway.security.tokens import InvalidToken, IssuedToken, TokenService
from fhir_gateway.store.database import Database

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
CLOCK_SKEW = 30  # seconds tolerated between the client's clock and ours
MAX_ASSERTION_BYTES = 16_384
REALM = "fhir-gateway"


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, human description, HTTP status (400, or 401 for
    invalid_client; the HTTP layer also uses it for 413, 429, 503 and 500)."""

    def __init__(self, error: str, description: str, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class BearerError(Exception):
    """An API call without a usable bearer token. `error` is the RFC 6750 code, or None when no
    credentials were sent at all (RFC 6750 §3.1: then the challenge carries no error code)."""

    def __init__(self, error: str | None, description: str, status: int = 401) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def challenge(self) -> str:
        value = f'Bearer realm="{REALM}"'
        if self.error:
            safe = self.description.replace('"', "'").replace("\\", "/")
            value += f', error="{self.error}", error_description="{safe}"'
        return value


@dataclass(frozen=True)
class VerifiedAssertion:
    client: ClientRegistration
    jti: str
    exp: int


ClientLookup = Callable[[str], ClientRegistration | None]


def _b64json(part: bytes) -> dict[str, Any]:
    value = orjson.loads(part)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _audience_ok(aud: Any, accepted: Sequence[str]) -> bool:
    wanted = {a.rstrip("/") for a in accepted}
    values = aud if isinstance(aud, list) else [aud]
    return any(isinstance(v, str) and v.rstrip("/") in wanted for v in values)


def verify_client_assertion(
    assertion: str, *, audience: str | Sequence[str], lookup: ClientLookup, now: int | None = None
) -> VerifiedAssertion:
    """Check a SMART client assertion; raises `OAuthError('invalid_client', ...)`.

    Order matters: the header's `alg` is checked before anything else (only RS384/ES384 — never
    `none`, HS*, or an algorithm the key was not registered for), the unverified `iss` only selects
    which registration's keys to try, and claims are trusted only after the signature verifies.
    The `jti` is *not* recorded here (see `grant_token`)."""
    accepted = [audience] if isinstance(audience, str) else list(audience)
    now = int(time.time()) if now is None else now
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise OAuthError("invalid_client", "client_assertion is too large")
    try:
        compact = jws.extract_compact(assertion.encode("ascii"))
        header = compact.headers()
        unverified = _b64json(compact.payload)
    except (JoseError, ValueError, UnicodeError, TypeError):
        raise OAuthError("invalid_client", "client_assertion is not a compact JWS (JWT)") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise OAuthError(
            "invalid_client",
            f"client_assertion alg '{alg}' not accepted (use {' or '.join(ASSERTION_ALGORITHMS)})",
        )
    if not isinstance(header.get("kid"), str):
        raise OAuthError("invalid_client", "client_assertion header must name its key (kid)")
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or not client_id:
        raise OAuthError("invalid_client", "client_assertion has no iss (the client_id)")
    client = lookup(client_id)
    if client is None or not client.active:
        raise OAuthError("invalid_client", f"client '{client_id}' is unknown or not active")
    try:
        claims = jwt.decode(assertion, client.key_set(), algorithms=list(ASSERTION_ALGORITHMS)).claims
    except JoseError as exc:
        raise OAuthError(
            "invalid_client",
            f"client_assertion signature does not verify with the registered keys ({exc.error})",
        ) from None
    except (ValueError, TypeError):
        raise OAuthError("invalid_client", "client_assertion is not a valid JWT") from None
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise OAuthError("invalid_client", "client_assertion iss and sub must both be the client_id")
    if not _audience_ok(claims.get("aud"), accepted):
        raise OAuthError("invalid_client", f"client_assertion aud must be the token endpoint {accepted[0]}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise OAuthError("invalid_client", "client_assertion exp is required (integer seconds)")
    if exp + CLOCK_SKEW < now:
        raise OAuthError("invalid_client", "client_assertion has expired")
    if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise OAuthError("invalid_client", "client_assertion exp is more than five minutes in the future")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, int) or value > now + CLOCK_SKEW):
            raise OAuthError("invalid_client", f"client_assertion {name} lies in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 255:
        raise OAuthError("invalid_client", "client_assertion jti is required (at most 255 characters)")
    return VerifiedAssertion(client, jti, exp)


def _single_params(form: Sequence[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in form:
        if name in params:
            raise OAuthError("invalid_request", f"parameter '{name}' given more than once")  # RFC 6749 §3.2
        params[name] = value
    return params


@dataclass(frozen=True)
class CheckedRequest:
    """A token request whose client assertion verified: who, which assertion, which scopes."""

    assertion: VerifiedAssertion
    scope: str
    now: int

    @property
    def client(self) -> ClientRegistration:
        return self.assertion.client


def check_token_request(
    form: Sequence[tuple[str, str]],
    *,
    audience: str | Sequence[str],
    lookup: ClientLookup,
    now: int | None = None,
) -> CheckedRequest:
    """Parameters → assertion (signature, claims) → granted scopes. Writes nothing: the caller may
    still refuse an authenticated client (its own rate limit) before `grant_token`."""
    params = _single_params(form)
    if not params.get("grant_type"):
        raise OAuthError("invalid_request", "grant_type is required (grant_type=client_credentials)")
    if params["grant_type"] != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only grant_type=client_credentials is supported")
    if "client_secret" in params:
        raise OAuthError(
            "invalid_client", "client secrets are not accepted; authenticate with private_key_jwt"
        )
    if params.get("client_assertion_type") != JWT_BEARER or not params.get("client_assertion"):
        raise OAuthError("invalid_client", f"send client_assertion_type={JWT_BEARER} and a client_assertion")
    if "scope" not in params or not params["scope"].strip():
        raise OAuthError("invalid_request", "scope is required (e.g. 'system/Task.rs')")
    now = int(time.time()) if now is None else now
    verified = verify_client_assertion(params["client_assertion"], audience=audience, lookup=lookup, now=now)
    client = verified.client
    if params.get("client_id") not in (None, client.client_id):
        raise OAuthError("invalid_client", "client_id does not match the client_assertion")
    granted = intersect(parse_scopes(params["scope"], strict=False), parse_scopes(client.scopes))
    if not granted:
        raise OAuthError("invalid_scope", "none of the requested scopes is allowed for this client")
    return CheckedRequest(verified, format_scopes(granted), now)


def grant_token(checked: CheckedRequest, *, database: Database, tokens: TokenService) -> IssuedToken:
    """Record the assertion's `jti` (a replay is refused) and sign the access token."""
    verified = checked.assertion
    expires_at = datetime.fromtimestamp(verified.exp + CLOCK_SKEW, UTC).replace(tzinfo=None)
    if not remember_jti(database, verified.client.client_id, verified.jti, expires_at):
        # a replayed assertion is an invalid client authentication JWT (RFC 7523 §3.2, SMART)
        raise OAuthError("invalid_client", "client_assertion jti was already used (replay)")
    return tokens.issue(verified.client, checked.scope, now=checked.now)


def exchange_client_credentials(
    form: Sequence[tuple[str, str]],
    *,
    database: Database,
    tokens: TokenService,
    audience: str | Sequence[str],
    lookup: ClientLookup,
    now: int | None = None,
) -> IssuedToken:
    """The whole token request: parameters → assertion → scopes → replay check → access token."""
    checked = check_token_request(form, audience=audience, lookup=lookup, now=now)
    return grant_token(checked, database=database, tokens=tokens)


def authenticate_bearer(authorization: str | None, tokens: TokenService) -> Principal:
    """`Authorization` header value → Principal, or `BearerError` (401)."""
    if not authorization or not authorization.strip():
        raise BearerError(None, "Authentication is required: send 'Authorization: Bearer <access token>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise BearerError(
            None, "only Bearer credentials are accepted: send 'Authorization: Bearer <access token>'"
        )
    if not token or " " in token:
        raise BearerError("invalid_request", "the Authorization header must be 'Bearer <access token>'", 400)
    try:
        return tokens.verify(token)
    except InvalidToken as exc:
        raise BearerError("invalid_token", f"access token not accepted: {exc}") from None


def make_client_assertion(
    client_id: str,
    private_jwk: dict[str, Any],
    audience: str,
    *,
    lifetime: int = MAX_ASSERTION_LIFETIME,
    jti: str | None = None,
    now: int | None = None,
) -> str:
    """Sign a SMART client assertion as a client would (CLI `token`, tests, demos)."""
    from joserfc.jwk import ECKey, RSAKey

    key = RSAKey.import_key(private_jwk) if private_jwk.get("kty") == "RSA" else ECKey.import_key(private_jwk)
    alg = "RS384" if isinstance(key, RSAKey) else "ES384"
    now = int(time.time()) if now is None else now
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + lifetime,
        "iat": now,
        "jti": jti or secrets.token_urlsafe(18),
    }
    header = {"alg": alg, "typ": "JWT", "kid": private_jwk.get("kid") or key.thumbprint()}
    return jwt.encode(header, claims, key, algorithms=[alg])
