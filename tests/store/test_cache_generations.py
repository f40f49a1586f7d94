"""The key of the cross-transaction caches: a generation per cached type, raised at commit."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from fhir_gateway.settings import Settings
from fhir_gateway.store import cache_generations
from fhir_gateway.store.database import Database
from fhir_gateway.workflow.context import GatewayContext


def test_a_write_raises_its_generation_at_commit_only(database: Database) -> None:
    with database.connection(write=True) as c:
        assert cache_generations.generations(c, ["Organization", "Subscription"]) == ()
        cache_generations.raise_on_commit(c, "Organization")
        cache_generations.raise_on_commit(c, "Organization")  # once per transaction
        assert cache_generations.pending(c) == {"Organization"}
        assert cache_generations.generations(c, ["Organization"]) == ()  # not before the commit
    with database.connection(write=True) as c:
        assert cache_generations.pending(c) == frozenset()
        assert cache_generations.generations(c, ["Organization", "Subscription"]) == (("Organization", 1),)
        cache_generations.raise_on_commit(c, "Subscription")
        cache_generations.raise_on_commit(c, "Organization")
    with database.connection(write=False) as c:
        assert cache_generations.generations(c, ["Organization", "Subscription"]) == (
            ("Organization", 2),
            ("Subscription", 1),
        )


def test_a_rolled_back_write_raises_nothing(database: Database) -> None:
    with pytest.raises(RuntimeError), database.connection(write=True) as c:
        cache_generations.raise_on_commit(c, "Location")
        raise RuntimeError("refused")
    with database.connection(write=False) as c:
        assert cache_generations.generations(c, ["Location"]) == ()


def _organization(oid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": oid, "active": True, "name": f"Welzijn {oid}"}


def test_replicas_see_each_others_directory_writes(database_url: str) -> None:
    """Two processes' contexts on one database: a directory write through one is in the other's
    next transaction, and in the writer's own transaction before it commits."""
    replicas = [GatewayContext.create(Settings(database_url=database_url)) for _ in range(2)]
    reader, writer = replicas
    reader.database.upgrade()
    try:
        with reader.database.connection(write=False) as c:
            before = len(reader.directory(reader.repository(c)))
        with writer.database.connection(write=True) as c:
            repo = writer.repository(c)
            writer.directory(repo)  # cached before the write ...
            repo.create(_organization("nieuw"), resource_id="nieuw")
            assert writer.directory(repo).organization("nieuw") is not None  # ... and after it
        with reader.database.connection(write=False) as c:
            directory = reader.directory(reader.repository(c))
            assert directory.organization("nieuw") is not None
            assert len(directory) == before + 1
            assert c.execute(sa.text("SELECT generation FROM cache_generations")).scalar() == 1
    finally:
        for ctx in replicas:
            ctx.close()
