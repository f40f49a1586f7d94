"""Robustness findings of the penetration test: never a 500 for what a client sends, and never a
plain-text answer — a 4xx OperationOutcome naming the parameter, and for a real bug a 500
OperationOutcome from the outermost guard (`api/guard.py`) that says nothing of the internals.

Each test here failed on the code before the fix. Where the database is involved they run on
SQLite and PostgreSQL (`database_url`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fhir_gateway.api.guard import INTERNAL_ERROR
from tests.conftest import make_client
from tests.e2e.conftest import free_port

BSN = "999911120"  # a patient's BSN: must never reach the log


def outcome_issue(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with an OperationOutcome whose first issue has `code`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/fhir+json"), resp.headers
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    assert first["severity"] == "error" and first["code"] == code, body
    return first


# -- the outermost guard ---------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _raise(*_args: object, **_kwargs: object) -> Any:
    raise Boom(f"patient {BSN} broke it")  # a message with patient data, as a driver error has


def _break_fhir_router(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.state.router, "handle", _raise)


def _break_bearer_middleware(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fhir_gateway.api.auth.authenticate_bearer", _raise)


async def _boom_route() -> None:
    _raise()


def _break_a_plain_route(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    app.add_api_route("/fhir-test-boom", _boom_route, methods=["GET"])


BREAKS: dict[str, tuple[Callable[[FastAPI, pytest.MonkeyPatch], None], str]] = {
    "fhir-handler": (_break_fhir_router, f"/fhir/Patient?identifier={BSN}"),
    "middleware": (_break_bearer_middleware, f"/fhir/Patient?identifier={BSN}"),
    "fastapi-route": (_break_a_plain_route, "/fhir-test-boom"),
}


def assert_guarded_500(resp: httpx.Response) -> None:
    issue = outcome_issue(resp, 500, "exception")
    assert issue["diagnostics"] == INTERNAL_ERROR
    assert "Boom" not in resp.text and BSN not in resp.text and "Traceback" not in resp.text
    assert resp.headers.get("x-request-id")


def assert_logged_without_patient_data(records: list[logging.LogRecord]) -> None:
    guarded = [r for r in records if getattr(r, "event", None) == "unhandled-exception"]
    assert guarded, [r.getMessage() for r in records]
    for record in records:
        if not record.name.startswith(("fhir_gateway", "uvicorn")):
            continue  # the test's own HTTP client logs the URL it calls
        text = record.getMessage() + repr(getattr(record, "frames", "")) + repr(record.exc_info or "")
        assert BSN not in text, text
    assert "Boom" in guarded[0].getMessage() and getattr(guarded[0], "frames", None)


@pytest.mark.parametrize("where", list(BREAKS))
def test_an_unhandled_exception_is_a_500_operation_outcome_in_process(
    sqlite_url: str, where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sqlite_url) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        crash = TestClient(app, base_url="http://gateway.test", raise_server_exceptions=False)
        crash.headers.update(client.headers)
        breaker, path = BREAKS[where]
        breaker(app, monkeypatch)
        with caplog.at_level(logging.INFO):
            resp = crash.get(path)
        assert_guarded_500(resp)
        assert_logged_without_patient_data(caplog.records)


class ServerThread:
    """The app on a real uvicorn server in this process (so a test can break parts of it)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.e2e
def test_an_unhandled_exception_is_a_500_operation_outcome_over_real_http(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sqlite_url) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        headers = {"Authorization": client.headers["Authorization"]}
        for breaker, _path in BREAKS.values():
            breaker(app, monkeypatch)
        with ServerThread(app) as base, httpx.Client(base_url=base, headers=headers) as http:
            with caplog.at_level(logging.INFO):
                for _breaker, path in BREAKS.values():
                    assert_guarded_500(http.get(path))
                # the connection is kept: the next request on it is answered normally
                assert http.get("/healthz").status_code == 200
            assert_logged_without_patient_data(caplog.records)


def test_an_unhandled_exception_on_the_token_endpoint_stays_an_oauth_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token endpoint's clients expect RFC 6749 JSON, also from the guard."""
    with make_client(sqlite_url, client_id=None) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        monkeypatch.setattr("fhir_gateway.api.limits.BodyLimitMiddleware.limit_for", _raise)
        crash = TestClient(app, base_url="http://gateway.test", raise_server_exceptions=False)
        resp = crash.post("/auth/token", data={"grant_type": "client_credentials"})
        assert resp.status_code == 500, resp.text
        assert resp.json()["error"] == "server_error" and resp.headers["cache-control"] == "no-store"
        assert BSN not in resp.text


@pytest.fixture
def crash_client(database_url: str) -> Iterator[TestClient]:
    """A client on each backend whose server errors come back as responses, not exceptions."""
    with make_client(database_url) as client:
        crash = TestClient(client.app, base_url="http://gateway.test", raise_server_exceptions=False)
        crash.headers.update(client.headers)
        yield crash
