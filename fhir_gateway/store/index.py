"""Build search index rows for a resource from the declarative search parameter list."""

from __future__ import annotations

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
    return rows


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
