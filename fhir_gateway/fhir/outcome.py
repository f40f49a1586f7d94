"""OperationOutcome issues and the error hierarchy every layer raises.

One place (the HTTP layer) turns a `FhirError` into an OperationOutcome response, so every
layer below only has to say *what* went wrong, with a FHIR issue code and a FHIRPath
`expression` pointing at the element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: severity, FHIR issue-type code, human text, FHIRPath expression."""

    severity: str  # fatal | error | warning | information
    code: str  # http://hl7.org/fhir/issue-type (invalid, structure, required, value, code-invalid, ...)
    diagnostics: str
    expression: str | None = None
    details: dict[str, Any] | None = None  # optional CodeableConcept (e.g. a WoR rejection code)

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.details:
            issue["details"] = self.details
        if self.expression:
            issue["expression"] = [self.expression]
        return issue

    @property
    def is_error(self) -> bool:
        return self.severity in ("error", "fatal")


def error(code: str, diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("error", code, diagnostics, expression)


def warning(code: str, diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("warning", code, diagnostics, expression)


def information(diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("information", "informational", diagnostics, expression)


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    if not issues:
        issues = [information("All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """A request that cannot be carried out; `status` is the HTTP status to answer with."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def fail(status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirError:
    """Shorthand: `raise fail(404, "not-found", "Task/1 is not known")`."""
    return FhirError(status, [error(code, diagnostics, expression)])


class NotFound(FhirError):
    def __init__(self, diagnostics: str, expression: str | None = None) -> None:
        super().__init__(404, [error("not-found", diagnostics, expression)])


class Gone(FhirError):
    def __init__(self, diagnostics: str) -> None:
        super().__init__(410, [error("deleted", diagnostics)])


class Invalid(FhirError):
    """Input that breaks the base specification or a profile."""

    def __init__(self, issues: list[Issue], status: int = 400) -> None:
        super().__init__(status, issues)
