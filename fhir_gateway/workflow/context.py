"""Everything a request needs that lives as long as the app: settings, database, rule sets."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database


@dataclass
class GatewayContext:
    settings: Settings
    database: Database

    @classmethod
    def create(cls, settings: Settings) -> GatewayContext:
        return cls(settings=settings, database=Database(settings.database_url))

    def close(self) -> None:
        self.database.dispose()
