"""Everything a request needs that lives as long as the app: settings, database, rule sets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import sqlalchemy as sa

from fhir_gateway import tracing
from fhir_gateway.mapping import MappingSet, load_mappings
from fhir_gateway.observability import Metrics
from fhir_gateway.routing import Directory
from fhir_gateway.security.compartments import CompartmentKeeper
from fhir_gateway.security.minimise import MinimisationRules, load_rules
from fhir_gateway.settings import Settings
from fhir_gateway.store import resource_queries
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository, Stored, WriteListener
from fhir_gateway.validation import ProfileSet, Validator
from fhir_gateway.vocabulary import DIRECTORY_TYPES, PRACTICE_REGISTERED_TYPES


@cache
def _validator(profiles_dir: Path) -> Validator:
    return Validator(ProfileSet.load(profiles_dir))


@cache
def _mappings(mappings_dir: Path) -> MappingSet:
    return load_mappings(mappings_dir)


def _forget_directory(repo: Repository, stored: Stored) -> None:
    """A transaction that changes the directory must not keep using its earlier snapshot."""
    if stored.resource_type in DIRECTORY_TYPES:
        repo.memo.pop("directory", None)


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
    _directory: tuple[tuple[object, ...], Directory] | None = None
    _directory_lock: threading.Lock = field(default_factory=threading.Lock)

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
        ctx.on_write.append(_forget_directory)
        ctx.on_write.append(CompartmentKeeper(ctx.directory))
        return ctx

    def repository(self, connection: sa.Connection, base_url: str = "") -> Repository:
        return Repository(connection, base_url=base_url, on_write=self.on_write)

    def directory(self, repo: Repository) -> Directory:
        """The social map as stored now. Rebuilt only when a directory resource changed: the
        cache key (count and newest change per type) is one cheap indexed query, and it is read
        from the database so every replica sees another replica's changes."""
        if "directory" in repo.memo:  # one check per transaction is enough
            return repo.memo["directory"]
        key = self._directory_key(repo)
        cached = self._directory
        if cached is not None and cached[0] == key:
            repo.memo["directory"] = cached[1]
            return cached[1]
        with self._directory_lock:
            rows = resource_queries.current_contents(repo.session, DIRECTORY_TYPES)
            registered = resource_queries.registered_refs(repo.session, PRACTICE_REGISTERED_TYPES)
            directory = Directory.from_resources(rows, registered=registered)
            self._directory = (key, directory)
            repo.memo["directory"] = directory
            return directory

    @staticmethod
    def _directory_key(repo: Repository) -> tuple[object, ...]:
        """Count and newest change per directory type, asked once per transaction."""
        return resource_queries.fingerprint(repo.session, DIRECTORY_TYPES)

    def close(self) -> None:
        self.database.dispose()
