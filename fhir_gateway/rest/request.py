"""The internal request and response: HTTP calls, Bundle entries and tests all go through these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_gateway.security.principal import Principal


class TransactionHook(Protocol):
    """Writes of the caller's own that must commit or roll back with the request's (the v2
    journal row of the message a referral came in): `begin` runs first in the request's write
    transaction, `before_commit` last, with the response the caller will get. Only a
    transaction Bundle runs them; an exception from either rolls everything back."""

    def begin(self, connection: Any) -> None: ...

    def before_commit(self, connection: Any, response: FhirResponse) -> None: ...


@dataclass
class FhirRequest:
    method: str  # GET | POST | PUT | PATCH | DELETE
    path: str  # relative to the FHIR base, without leading slash: "Task/1/_history/2"
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # parsed JSON (dict / list) or None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    principal: Principal = field(default_factory=Principal.unauthenticated)
    base_url: str = ""
    client_address: str | None = None  # for the audit log (NEN 7513: source address)
    channel: str | None = None  # "hl7v2": made by the v2 service, not by an HTTP client (audit)
    hook: TransactionHook | None = None  # not passed on to a Bundle's entries

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def parts(self) -> list[str]:
        return [p for p in self.path.strip("/").split("/") if p]

    @property
    def prefer(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for item in (self.header("prefer") or "").split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                result[key.strip().lower()] = value.strip().strip('"')
        return result


@dataclass
class FhirResponse:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
