"""Everything a request needs that lives as long as the app: settings, database, rule sets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from fhir_gateway import tracing
from fhir_gateway.mapping import MappingSet, load_mappings
from fhir_gateway.observability import Metrics
from fhir_gateway.reports import read_model
from fhir_gateway.routing import Directory
from fhir_gateway.security.compartments import CompartmentKeeper
from fhir_gateway.security.minimise import MinimisationRules, load_rules
from fhir_gateway.settings import Settings
from fhir_gateway.store import cache_generations, resource_queries
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository, Stored, WriteListener
from fhir_gateway.validation import ProfileSet, Validator
from fhir_gateway.vocabulary import DIRECTORY_TYPES, PRACTICE_REGISTERED_TYPES

T = TypeVar("T")


@cache
def _validator(profiles_dir: Path) -> Validator:
    return Validator(ProfileSet.load(profiles_dir))


@cache
def _mappings(mappings_dir: Path) -> MappingSet:
    return load_mappings(mappings_dir)


# Resource types whose stored contents the app caches across transactions, keyed by their
# fingerprint: the directory (routing) and the Subscriptions (every write is matched against them).
CACHED_TYPES = (*DIRECTORY_TYPES, "Subscription")


def _forget_cached(repo: Repository, stored: Stored) -> None:
    """A transaction that changes a cached type must not keep using its earlier snapshot, and
    raises the type's generation when it commits (every process rebuilds then). The
    generations it read stay valid until then: only the snapshots are dropped."""
    if stored.resource_type in CACHED_TYPES:
        cache_generations.raise_on_commit(repo.session, stored.resource_type)
        repo.memo.pop("cached", None)


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class GatewayContext:
    settings: Settings
    database: Database
    validator: Validator
    mappings: MappingSet
    minimisation: MinimisationRules
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = system_clock  # tests move time by replacing this
    on_write: list[WriteListener] = field(default_factory=list)  # e.g. notifications → outbox
    _cached: dict[str, tuple[tuple[object, ...], Any]] = field(default_factory=dict)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings) -> GatewayContext:
        """Also where every process (serve, worker, mllp) turns tracing on, if OTEL_* ask for it."""
        tracing.configure_from_env()
        ctx = cls(
            settings=settings,
            database=Database(settings.database_url),
            validator=_validator(Path(settings.profiles_dir)),
            mappings=_mappings(Path(settings.mappings_dir)),
            minimisation=load_rules(Path(settings.mappings_dir) / "privacy" / "minimisation.yaml"),
        )
        tracing.instrument_engine(ctx.database.engine)
        ctx.on_write.append(_forget_cached)
        ctx.on_write.append(CompartmentKeeper(ctx.directory))
        ctx.on_write.append(read_model.keep)  # the report's rows, before delivery marks pushes
        return ctx

    def repository(self, connection: sa.Connection, base_url: str = "") -> Repository:
        return Repository(connection, base_url=base_url, on_write=self.on_write)

    def directory(self, repo: Repository) -> Directory:
        """The social map as stored now."""

        def load() -> Directory:
            rows = resource_queries.current_contents(repo.session, DIRECTORY_TYPES)
            registered = resource_queries.registered_refs(repo.session, PRACTICE_REGISTERED_TYPES)
            return Directory.from_resources(rows, registered=registered)

        return self.cached(repo, "directory", DIRECTORY_TYPES, load)

    def cached(self, repo: Repository, name: str, types: tuple[str, ...], load: Callable[[], T]) -> T:
        """What `load` builds from the stored resources of `types` (a part of `CACHED_TYPES`),
        rebuilt only when one of them changed: the key (their generations) is one primary-key
        lookup per transaction, read from the database so every replica sees another replica's
        changes. A transaction that wrote one of `types` builds its own, unshared: its
        generations rise only when it commits."""
        memo = repo.memo.setdefault("cached", {})
        if name in memo:  # one check per transaction is enough
            return memo[name]
        if cache_generations.pending(repo.session).intersection(types):
            memo[name] = load()
            return memo[name]
        key = self.fingerprint(repo, types)
        cached = self._cached.get(name)
        if cached is None or cached[0] != key:
            with self._cache_lock:
                cached = (key, load())
                self._cached[name] = cached
        memo[name] = cached[1]
        return cached[1]

    @staticmethod
    def fingerprint(repo: Repository, types: tuple[str, ...]) -> tuple[object, ...]:
        """The generation of each type of `types`. One query per transaction serves every cache
        alike (its own writes raise them only at its commit)."""
        if "fingerprint" not in repo.memo:
            repo.memo["fingerprint"] = cache_generations.generations(repo.session, CACHED_TYPES)
        return tuple(entry for entry in repo.memo["fingerprint"] if entry[0] in types)

    def close(self) -> None:
        self.database.dispose()
