"""SMART system scopes: parse (v2 `system/Task.rs`, v1 `system/Task.read`), intersect, check.

Everything here is pure (strings in, strings out) so the router, the Bundle processor and the
v2 path can call `require_scope` for every single interaction, including transaction entries.
Scopes are always *stored and issued* in SMART v2 form; v1 input is translated on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.security.principal import Principal

PERMISSIONS = "cruds"  # create, read, update, delete, search — the SMART v2 order
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}  # SMART v2 §"scopes for v1 compatibility"
INTERACTIONS = {
    "c": "c",
    "r": "r",
    "u": "u",
    "d": "d",
    "s": "s",
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "history-instance": "r",
    "history-type": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
    "search-type": "s",
}
_SCOPE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perm>[a-z*]+)$")


class ScopeError(ValueError):
    """A scope string that is not a SMART system scope this gateway understands."""


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """One system-level grant: a resource type (or `*`) and a set of cruds permissions."""

    resource_type: str
    permissions: str  # a non-empty subsequence of "cruds", always in that order

    def __str__(self) -> str:
        return f"system/{self.resource_type}.{self.permissions}"

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.permissions


def _ordered(perms: Iterable[str]) -> str:
    chosen = set(perms)
    return "".join(p for p in PERMISSIONS if p in chosen)


def parse_scope(text: str) -> Scope:
    """`system/Task.rs` (v2) or `system/Task.read|write|*` (v1) → Scope; anything else raises.

    Granular v2 scopes (`?category=...`) raise too: granting them unrestricted would widen
    access, and the gateway does not yet enforce their search-parameter restriction."""
    m = _SCOPE.match(text.strip())
    if not m:
        raise ScopeError(f"'{text}' is not a SMART system scope (system/<Type|*>.<cruds|read|write|*>)")
    perm = m["perm"]
    if perm in V1_PERMISSIONS:
        return Scope(m["type"], V1_PERMISSIONS[perm])
    if any(p not in PERMISSIONS for p in perm) or len(set(perm)) != len(perm):
        raise ScopeError(f"'{text}': permissions must be letters of 'cruds', each once")
    if perm != _ordered(perm):
        raise ScopeError(f"'{text}': permissions must be in the order c, r, u, d, s")
    return Scope(m["type"], perm)


def parse_scopes(text: str | Iterable[str], *, strict: bool = True) -> list[Scope]:
    """A space-separated scope string (or a list). `strict=False` drops what cannot be parsed —
    for a token request, where unknown scopes (`openid`, `patient/...`) are simply not granted."""
    items = text.split() if isinstance(text, str) else list(text)
    out: list[Scope] = []
    for item in items:
        try:
            out.append(parse_scope(item))
        except ScopeError:
            if strict:
                raise
    return normalise(out)


def normalise(scopes: Iterable[Scope]) -> list[Scope]:
    """Merge per type, drop what a `*` scope already covers; sorted, so equal sets print equal."""
    per_type: dict[str, set[str]] = {}
    for s in scopes:
        per_type.setdefault(s.resource_type, set()).update(s.permissions)
    wildcard = per_type.get("*", set())
    out = []
    for rtype, perms in per_type.items():
        rest = perms if rtype == "*" else perms - wildcard
        if rest:
            out.append(Scope(rtype, _ordered(rest)))
    return sorted(out, key=lambda s: (s.resource_type != "*", s.resource_type))


def intersect(requested: Iterable[Scope], allowed: Iterable[Scope]) -> list[Scope]:
    """What may be granted: every requested scope narrowed to what the client is allowed.

    `system/*.cruds` requested by a client allowed `system/Task.rs` yields `system/Task.rs`;
    `system/Task.cruds` requested by a client allowed `system/*.rs` yields `system/Task.rs`."""
    allowed = list(allowed)
    granted: list[Scope] = []
    for req in requested:
        for ok in allowed:
            if req.resource_type == ok.resource_type or ok.resource_type == "*":
                rtype = req.resource_type
            elif req.resource_type == "*":
                rtype = ok.resource_type
            else:
                continue
            perms = _ordered(set(req.permissions) & set(ok.permissions))
            if perms:
                granted.append(Scope(rtype, perms))
    return normalise(granted)


def format_scopes(scopes: Iterable[Scope]) -> str:
    return " ".join(str(s) for s in normalise(scopes))


def _interaction(interaction: str) -> str:
    try:
        return INTERACTIONS[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction '{interaction}' (use one of c r u d s)") from None


def has_scope(scopes: Iterable[str], resource_type: str, interaction: str) -> bool:
    """True when any of the scope strings (v1 or v2) allows `interaction` on `resource_type`.
    Unparseable strings allow nothing."""
    letter = _interaction(interaction)
    granted = _granted(scopes) if isinstance(scopes, tuple) else _granted(tuple(scopes))
    return any(s.allows(resource_type, letter) for s in granted)


@lru_cache(maxsize=1024)
def _granted(scopes: tuple[str, ...]) -> tuple[Scope, ...]:
    """A token's scopes, parsed once: every interaction of every request asks (≈ 8 a referral)."""
    return tuple(parse_scopes(scopes, strict=False))


def require_scope(principal: Principal, resource_type: str, interaction: str) -> None:
    """Raise unless the principal's scopes allow `interaction` (c r u d s, or create/read/vread/
    update/patch/delete/search/history) on `resource_type`.

    401 (`login`) for a caller that is not authenticated at all, 403 (`forbidden`) with an
    RFC 6750 `insufficient_scope` challenge for one that is but lacks the scope."""
    letter = _interaction(interaction)
    if not principal.authenticated:
        raise FhirError(
            401,
            [error("login", "Authentication is required: send 'Authorization: Bearer <access token>'")],
            {"WWW-Authenticate": 'Bearer realm="fhir-gateway"'},
        )
    if has_scope(principal.scopes, resource_type, letter):
        return
    needed = f"system/{resource_type}.{letter}"
    raise FhirError(
        403,
        [error("forbidden", f"The access token does not grant '{needed}' (client {principal.client_id})")],
        {"WWW-Authenticate": f'Bearer realm="fhir-gateway", error="insufficient_scope", scope="{needed}"'},
    )
