"""SMART system scopes: parsing (v2 and v1), intersection, and the require_scope check."""

from __future__ import annotations

import pytest

from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.security.principal import Principal
from fhir_gateway.security.scopes import (
    Scope,
    ScopeError,
    format_scopes,
    has_scope,
    intersect,
    parse_scope,
    parse_scopes,
    require_scope,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system/Task.rs", Scope("Task", "rs")),
        ("system/ServiceRequest.c", Scope("ServiceRequest", "c")),
        ("system/*.cruds", Scope("*", "cruds")),
        ("system/Task.read", Scope("Task", "rs")),  # v1 → v2
        ("system/Task.write", Scope("Task", "cud")),
        ("system/Task.*", Scope("Task", "cruds")),
        ("system/*.*", Scope("*", "cruds")),
    ],
)
def test_parse_v2_and_v1(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "patient/Task.rs",  # not a backend-services scope
        "user/*.read",
        "openid",
        "system/Task.sr",  # v2 demands the order c r u d s
        "system/Task.rr",
        "system/Task.x",
        "system/Task.rs?status=requested",  # granular scopes are not supported (would widen access)
        "system/task.rs",
        "system/Task",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_parse_scopes_lenient_drops_unknown() -> None:
    assert parse_scopes("openid system/Task.rs launch patient/*.read", strict=False) == [Scope("Task", "rs")]


def test_normalise_merges_and_wildcard_covers() -> None:
    assert format_scopes(parse_scopes("system/Task.r system/Task.s system/*.r system/CarePlan.rs")) == (
        "system/*.r system/CarePlan.s system/Task.s"
    )


def test_intersect_narrows() -> None:
    allowed = parse_scopes("system/Task.rus system/CarePlan.rs")
    assert (
        format_scopes(intersect(parse_scopes("system/*.cruds"), allowed))
        == "system/CarePlan.rs system/Task.rus"
    )
    assert format_scopes(intersect(parse_scopes("system/Task.cruds"), allowed)) == "system/Task.rus"
    assert intersect(parse_scopes("system/Patient.r"), allowed) == []
    assert format_scopes(intersect(parse_scopes("system/Task.c system/Task.r"), allowed)) == "system/Task.r"


def test_intersect_with_wildcard_allowed() -> None:
    assert format_scopes(intersect(parse_scopes("system/Task.write"), parse_scopes("system/*.cruds"))) == (
        "system/Task.cud"
    )


def test_has_scope_accepts_v1_strings() -> None:
    assert has_scope(("system/*.*",), "Patient", "delete")
    assert has_scope(("system/Task.read",), "Task", "search")
    assert not has_scope(("system/Task.read",), "Task", "update")
    assert has_scope(("system/Task.rus",), "Task", "patch")


def _principal(*scopes: str) -> Principal:
    return Principal("c1", "Organization/x", "welfare-org", scopes, authenticated=True)


def test_require_scope_allows() -> None:
    require_scope(_principal("system/Task.rus"), "Task", "u")
    require_scope(Principal.system(), "AuditEvent", "c")


def test_require_scope_403_shape() -> None:
    with pytest.raises(FhirError) as info:
        require_scope(_principal("system/Task.rs"), "Task", "u")
    exc = info.value
    assert exc.status == 403
    assert exc.outcome()["issue"][0]["code"] == "forbidden"
    assert 'error="insufficient_scope"' in exc.headers["WWW-Authenticate"]
    assert "system/Task.u" in exc.message


def test_require_scope_unauthenticated_is_401() -> None:
    with pytest.raises(FhirError) as info:
        require_scope(Principal.unauthenticated(), "Task", "r")
    assert info.value.status == 401
    assert info.value.outcome()["issue"][0]["code"] == "login"


def test_require_scope_unknown_interaction() -> None:
    with pytest.raises(ValueError):
        require_scope(_principal("system/*.cruds"), "Task", "x")
