"""A gateway with delivery installed, receivers, and a clock tests can move."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.delivery import events
from fhir_gateway.delivery.worker import RetryPolicy, Worker
from fhir_gateway.rest.operations import register_operations
from tests.conftest import make_client
from tests.wor import FHIR_JSON, load_directory


class Clock:
    """Replaces ctx.clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


FAST = RetryPolicy(max_attempts=5, base=0.01, cap=0.05)


def gateway(url: str) -> TestClient:
    client = make_client(url)
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    events.install(ctx)  # the lead wires this in create_app; idempotent
    register_operations(client.app.state.router)  # type: ignore[attr-defined]
    ctx.clock = Clock()
    return client


def worker(client: TestClient, **kwargs: Any) -> Worker:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeout", 2.0)
    return Worker(client.app.state.ctx, **kwargs)  # type: ignore[attr-defined]


def drain(w: Worker, rounds: int = 50) -> int:
    """Run passes until a pass delivers nothing and nothing is due (retries are ms apart)."""
    import time

    total = 0
    for _ in range(rounds):
        n = w.run_once()
        total += n
        if n == 0:
            with w.ctx.database.connection(write=False) as conn:
                from fhir_gateway.delivery import outbox

                counts = outbox.counts(conn)
            if not counts.get("pending") and not counts.get("delivering"):
                return total
            time.sleep(0.06)
    return total


def subscribe(
    client: TestClient, endpoint: str, criteria: str, content: str | None = "id-only", **extra: Any
) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if content is not None:
        channel["payload"] = "application/fhir+json"
        channel["_payload"] = {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                    "valueCode": content,
                }
            ]
        }
    channel.update(extra.pop("channel", {}))
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "WoR worklist",
        "criteria": criteria,
        "channel": channel,
        **extra,
    }
    resp = client.post("/fhir/Subscription", json=body, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return resp.json()


@pytest.fixture
def gw(sqlite_url: str) -> Iterator[TestClient]:
    with gateway(sqlite_url) as client:
        load_directory(client)
        yield client


DELIVERY_TABLES = ("timers", "subscription_events", "subscription_state")  # lead: add to conftest TABLES


@pytest.fixture
def any_gw(database_url: str) -> Iterator[TestClient]:
    if database_url.startswith("postgresql"):  # until tests/conftest.py TABLES lists them
        import sqlalchemy as sa

        engine = sa.create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(DELIVERY_TABLES)}"))
        engine.dispose()
    with gateway(database_url) as client:
        load_directory(client)
        yield client
