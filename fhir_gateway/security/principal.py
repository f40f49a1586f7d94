"""Who is asking: every request carries a `Principal`, from the HTTP layer down to the audit log."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    organization: str | None  # "Organization/<id>" the client acts for
    role: str  # gp-practice | welfare-org | admin | system
    scopes: tuple[str, ...] = ()
    authenticated: bool = False

    @classmethod
    def system(cls, name: str = "fhir-gateway") -> Principal:
        """The gateway itself (CLI loading, workers, timers)."""
        return cls(
            client_id=name, organization=None, role="system", scopes=("system/*.*",), authenticated=True
        )

    @classmethod
    def unauthenticated(cls) -> Principal:
        """A caller that presented no credentials."""
        return cls(client_id="anonymous", organization=None, role="anonymous", scopes=())
