"""Build search index rows for a resource from the declarative search parameter list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_gateway.fhir.searchparams import (
    dates,
    load_search_params,
    raw_values,
    references,
    strings,
    tokens,
)

_MAX = 255  # column width; longer values are cut (matching still works on the prefix)

# Reference parameters searched together with `_lastUpdated` on hot paths (the practice's inbox:
# Communication?recipient=…&_lastUpdated=gt…). Each such reference also gets a pair row
# (param `_lastUpdated|<name>`, the same value, high = meta.lastUpdated, low empty so it stays
# out of the date index), so one index range
# (ix_search_pair) holds exactly the matches instead of all the recipient's rows. Pair rows are
# rewritten with the other rows on every update, in the same transaction.
LAST_UPDATED_PAIRS: dict[str, frozenset[str]] = {
    "Communication": frozenset({"recipient"}),
    "Task": frozenset({"owner"}),
}


def pair_param(name: str) -> str:
    return f"_lastUpdated|{name}"


def index_rows(
    resource_type: str, resource: dict[str, Any], resource_pk: int, base_url: str = ""
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for name, param in load_search_params().get(resource_type, {}).items():
        for raw in raw_values(resource, param):
            for row in _rows_for(param.type, raw, base_url):
                key = (name, row.get("system"), row.get("value"), row.get("low"), row.get("high"))
                if key in seen:
                    continue
                seen.add(key)
                row.update(resource_pk=resource_pk, resource_type=resource_type, param=name)
                rows.append(row)
    pairs = LAST_UPDATED_PAIRS.get(resource_type)
    updated = _last_updated(resource) if pairs else None
    if pairs and updated is not None:
        rows += [
            {**row, "param": pair_param(row["param"]), "high": updated}
            for row in rows
            if row["param"] in pairs and row.get("value") is not None
        ]
    return rows


def _last_updated(resource: dict[str, Any]) -> datetime | None:
    """meta.lastUpdated as the store writes it (`format_instant`: naive UTC, microseconds)."""
    stamp = (resource.get("meta") or {}).get("lastUpdated")
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(stamp, str) else None
    except ValueError:
        return None


def _rows_for(kind: str, raw: Any, base_url: str) -> list[dict[str, Any]]:
    if kind == "token":
        return [{"system": _cut(t.system), "value": _cut(t.code)} for t in tokens(raw)]
    if kind == "reference":
        return [{"value": _cut(r)} for r in references(raw, base_url)]
    if kind == "string":
        return [{"value": _cut(s.normalised), "text": _cut(s.text)} for s in strings(raw)]
    if kind == "date":
        return [{"low": d.low, "high": d.high} for d in dates(raw)]
    return []


def _cut(value: str | None) -> str | None:
    return value[:_MAX] if value is not None else None
