"""schemathesis against `/openapi.json`: whatever the spec lets a client send, the gateway
answers without a 5xx, and every error is an OperationOutcome.

Runs in the default suite on both backends (SQLite and PostgreSQL), bounded: a fixed number
of examples per operation (`GATEWAY_SCHEMATHESIS_EXAMPLES`, default 40; derandomized, so a CI
failure reproduces), no coverage phase; each backend's pass prints its time (no timing assert:
a loaded machine made it fail for nothing; measured on the quiet 2-core machine: ≈ 7,300 cases
in 64 s on SQLite, 71 s on PostgreSQL). A longer pass by
hand: `GATEWAY_SCHEMATHESIS_EXAMPLES=100 .venv/bin/pytest tests/api/test_schemathesis.py -s`.
Runs as the admin client (the widest compartment: most handlers get past the access check).

Not OperationOutcome by design: `/auth/token` answers RFC 6749 JSON errors, `/v2` answers an
ACK (or plain text for a wrong content type / size: the v2 sender is not a FHIR client).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode

from fhir_gateway.loading import load_files
from fhir_gateway.store.database import StorageReadOnly
from tests.conftest import ROOT, _fresh_postgres, authorize, make_client

MAX_EXAMPLES = int(os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "40"))
NOT_FHIR = ("/auth/token", "/v2")
# the spec documents /v2 with the ER7 media type: send generated bodies as text
schemathesis.serializer.alias("x-application/hl7-v2+er7", "text/plain")


class Gateway:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.app: FastAPI = client.app  # type: ignore[assignment]

    def headers(self) -> dict[str, str]:
        """A fresh admin token: tokens live at most 5 minutes, a long pass takes longer."""
        authorize(self.client, "gateway-admin")
        return {"Authorization": self.client.headers["Authorization"]}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def gateway(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One app per backend for every operation (an app per operation would cost more than the
    cases)."""
    if request.param == "sqlite":
        target = tmp_path_factory.mktemp("schemathesis") / "gateway.db"
        shutil.copyfile(sqlite_template, target)
        url = f"sqlite:///{target}"
    else:
        url = _fresh_postgres(request.getfixturevalue("postgres_url"))
    with make_client(url) as client:
        assert all(r.ok for r in load_files(client.app.state.router, [ROOT / "examples" / "directory"]))  # type: ignore[attr-defined]
        yield Gateway(client)


def error_is_operation_outcome(case: schemathesis.Case, response: schemathesis.Response) -> None:
    """No 5xx; every FHIR error answer is an OperationOutcome with coded issues."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code < 400 or case.path.startswith(NOT_FHIR):
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r}") from None
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", body
    issues = body.get("issue") or []
    assert issues and all(i.get("severity") and i.get("code") for i in issues), body


def describe(case: schemathesis.Case) -> str:
    body = "" if type(case.body).__name__ == "NotSet" else f" body={str(case.body)[:300]!r}"
    return f"{case.method} {case.formatted_path} query={case.query!r}{body}"


def fuzz(operation: schemathesis.APIOperation, headers: dict[str, str], statuses: Counter[int]) -> None:
    """Valid and invalid requests for one operation (schemathesis' positive and negative modes)."""
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases every run: a CI failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        try:
            error_is_operation_outcome(case, response)
        except AssertionError as exc:
            raise AssertionError(f"{describe(case)} -> {exc}") from None

    run()


def test_openapi_surface_never_5xx_and_errors_are_operation_outcomes(gateway: Gateway) -> None:
    """Every operation runs even when one fails, so a failure lists all broken operations."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", gateway.app)
    statuses: Counter[int] = Counter()
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    started = time.monotonic()
    for operation in operations:
        try:
            fuzz(operation, gateway.headers(), statuses)
        except Exception as exc:  # hypothesis wraps some failures (flaky, groups): keep going
            failures[operation.label] = str(exc)[:1500]
    elapsed = time.monotonic() - started
    backend = gateway.app.state.ctx.settings.database_url.split(":", 1)[0]  # type: ignore[attr-defined]
    print(
        f"schemathesis ({backend}): {sum(statuses.values())} cases, {len(operations)} operations, "
        f"{MAX_EXAMPLES} examples each at most, {elapsed:.1f} s, {dict(sorted(statuses.items()))}"
    )
    assert sum(statuses.values()) >= len(operations)
    assert not any(status >= 500 for status in statuses), dict(statuses)
    assert not failures, "\n\n".join(f"{label}: {why}" for label, why in failures.items())


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/admin/outbox?limit=false", 400, "invalid"),  # FastAPI's 422 {"detail": …} before
        ("/fhir/Patient/%0A0", 404, "not-found"),  # the catch-all route does not match a newline
        ("/admin/outbox/a/b/retry", 404, "not-found"),
        ("/no/such/path", 404, "not-found"),
    ],
)
def test_what_the_long_pass_found_answers_operation_outcome(
    gateway: Gateway, path: str, status: int, code: str
) -> None:
    """Found by the long schemathesis pass, kept here because the bounded one does not reach them."""
    r = gateway.client.get(path, headers=gateway.headers())
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"][0]["severity"] == "error" and body["issue"][0]["code"] == code, body


def test_a_refusing_store_outside_the_router_is_a_503_operation_outcome(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token endpoint, console and outbox admin call the store directly: 503, not a bare 500.
    (The real refusals, through a served gateway, are in tests/faults/test_storage_refuses.py.)"""
    headers = gateway.headers()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise StorageReadOnly("test")

    monkeypatch.setattr(gateway.app.state.ctx.database, "connection", refuse)  # type: ignore[attr-defined]
    r = gateway.client.get("/admin/outbox", headers=headers)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    issue = r.json()["issue"][0]
    assert issue["code"] == "transient" and "read-only" in issue["diagnostics"], issue
