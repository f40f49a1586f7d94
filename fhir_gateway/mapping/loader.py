"""Load mappings/ once: base mapping files, region overlays and region settings.

Regional variation is data only: `mappings/regions/<region>.yaml` holds `settings:` (deep-merged
over `regions/default.yaml`) and `mappings:` (per mapping name, deep-merged over the base mapping
file). Every (mapping, region) pair is compiled at load, so a broken overlay fails at start-up.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson

from fhir_gateway.mapping.engine import Mapping, MappingError
from fhir_gateway.mapping.template import read_document

DEFAULT_REGION = "default"
_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def deep_merge(base: Any, overlay: Any) -> Any:
    """Overlay semantics: dicts merge key by key; anything else (lists too) replaces; null deletes."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_settings(region: str, s: dict[str, Any]) -> None:
    """Fail at load on settings the workflow could not use."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise MappingError(f"region {region!r}: settings.{what}")

    intake, trajectory, auto = s.get("intake", {}), s.get("trajectory", {}), s.get("auto_close", {})
    need(
        isinstance(intake.get("working_days"), int) and intake["working_days"] >= 1,
        "intake.working_days >= 1",
    )
    need(isinstance(trajectory.get("months"), int) and trajectory["months"] >= 1, "trajectory.months >= 1")
    need(isinstance(auto.get("enabled"), bool), "auto_close.enabled must be true or false")
    need(isinstance(auto.get("grace_days"), int) and auto["grace_days"] >= 0, "auto_close.grace_days >= 0")
    fb = s.get("feedback", {})
    kinds = fb.get("kinds", {})
    for table in ("on_status", "on_milestone"):
        for key, entry in (fb.get(table) or {}).items():
            kind = entry.get("kind") if isinstance(entry, dict) else entry
            need(kind is None or kind in kinds, f"feedback.{table}.{key}: unknown feedback kind {kind!r}")


def _settings_snapshot(region: str, settings: dict[str, Any]) -> bytes:
    """Settings as JSON; they must survive the round trip unchanged (YAML dates would not)."""
    snapshot = orjson.dumps(settings)
    if orjson.loads(snapshot) != settings:
        raise MappingError(f"region {region!r}: settings must be plain JSON values (quote dates)")
    return snapshot


class MappingSet:
    """All mappings and region settings; `get(name, region)` is a dict lookup after load."""

    def __init__(self, base: dict[str, dict[str, Any]], regions: dict[str, dict[str, Any]]) -> None:
        if DEFAULT_REGION not in regions:
            raise MappingError("mappings/regions/default.yaml is missing")
        default = regions[DEFAULT_REGION]
        self._settings: dict[str, dict[str, Any]] = {}
        self._settings_json: dict[str, bytes] = {}  # fresh copies for callers, ~50x cheaper than deepcopy
        self._compiled: dict[tuple[str, str], Mapping] = {}
        for region, doc in regions.items():
            settings = default.get("settings") or {}
            if region != DEFAULT_REGION:
                settings = deep_merge(settings, doc.get("settings") or {})
            settings = {**settings, "name": region}
            _check_settings(region, settings)
            self._settings[region] = settings
            self._settings_json[region] = _settings_snapshot(region, settings)
            overlays = doc.get("mappings") or {}
            unknown = set(overlays) - set(base)
            if unknown:
                raise MappingError(f"region {region!r} overlays unknown mappings: {sorted(unknown)}")
            for name, document in base.items():
                merged = deep_merge(document, (default.get("mappings") or {}).get(name) or {})
                if region != DEFAULT_REGION:
                    merged = deep_merge(merged, overlays.get(name) or {})
                self._compiled[(name, region)] = Mapping(name, merged)

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._compiled})

    def regions(self) -> list[str]:
        return sorted(self._settings)

    def has_region(self, region: str) -> bool:
        return region in self._settings

    def _region(self, region: str | None) -> str:
        # a region without an overlay file simply follows the default agreements
        return region if region in self._settings else DEFAULT_REGION

    def get(self, name: str, region: str | None = None) -> Mapping:
        try:
            return self._compiled[(name, self._region(region))]
        except KeyError:
            raise MappingError(f"no mapping named {name!r} (known: {', '.join(self.names())})") from None

    def region_settings(self, region: str | None = None) -> dict[str, Any]:
        """The effective settings of a region (a copy: callers may not change the shared ones)."""
        return orjson.loads(self._settings_json[self._region(region)])


def load_mappings(mappings_dir: Path) -> MappingSet:
    """Read `<dir>/*.yaml` (one mapping each, named by file stem) and `<dir>/regions/*.yaml`.

    `v2-*.yaml` files map HL7 v2 messages, not FHIR resources: `fhir_gateway.v2` reads those."""
    mappings_dir = Path(mappings_dir)
    base = {
        p.stem: read_document(p) for p in sorted(mappings_dir.glob("*.yaml")) if not p.stem.startswith("v2-")
    }
    regions = {}
    for path in sorted((mappings_dir / "regions").glob("*.yaml")):
        if not _REGION_NAME.match(path.stem):
            raise MappingError(f"{path}: region file names are lower-case letters, digits and hyphens")
        regions[path.stem] = read_document(path)
    return MappingSet(base, regions)
