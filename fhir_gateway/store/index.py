"""Build search index rows for a resource from the declarative search parameter list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_gateway.fhir.searchparams import dates, load_search_params, points_to, references, strings, tokens

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


IndexRow = tuple[str, str | None, str | None, str | None, datetime | None, datetime | None]
"""One search index row of a resource: (param, system, value, text, low, high), in column order."""


def index_rows(resource_type: str, resource: dict[str, Any], base_url: str = "") -> list[IndexRow]:
    """Every index row of a resource, duplicates dropped. Runs for each resource written (~60
    rows a referral), so it builds tuples directly, without generators or dicts."""
    rows: list[IndexRow] = []
    seen: set[tuple[Any, ...]] = set()
    for name, param in load_search_params().get(resource_type, {}).items():
        targets = param.targets if param.type == "reference" else ()
        for raw in _values(resource, param.paths):
            for system, value, text, low, high in _entries(param.type, raw, base_url):
                key = (name, system, value, low, high)
                if key in seen or (targets and not points_to(value, targets)):
                    continue
                seen.add(key)
                rows.append((name, system, value, text, low, high))
    pairs = LAST_UPDATED_PAIRS.get(resource_type)
    updated = _last_updated(resource) if pairs else None
    if pairs and updated is not None:
        rows += [
            (pair_param(name), system, value, text, low, updated)
            for name, system, value, text, low, _high in rows
            if name in pairs and value is not None
        ]
    return rows


def param_entries(resource_type: str, resource: dict[str, Any], name: str, base_url: str = "") -> list[Entry]:
    """The (system, value, text, low, high) entries `index_rows` makes for one search parameter:
    the report's read model takes the values its cohort is selected on exactly as indexed."""
    param = load_search_params().get(resource_type, {}).get(name)
    if param is None:
        return []
    targets = param.targets if param.type == "reference" else ()
    found: list[Entry] = []
    seen: set[tuple[Any, ...]] = set()
    for raw in _values(resource, param.paths):
        for system, value, text, low, high in _entries(param.type, raw, base_url):
            key = (system, value, low, high)
            if key in seen or (targets and not points_to(value, targets)):
                continue
            seen.add(key)
            found.append((system, value, text, low, high))
    return found


def _values(resource: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> list[Any]:
    """What `raw_values` yields, as a list: arrays walked at every step."""
    found: list[Any] = []
    for path in paths:
        nodes: list[Any] = [resource]
        for step in path:
            next_nodes: list[Any] = []
            for node in nodes:
                if isinstance(node, list):
                    for item in _flat(node):
                        if isinstance(item, dict) and step in item:
                            next_nodes.append(item[step])
                elif isinstance(node, dict) and step in node:
                    next_nodes.append(node[step])
            nodes = next_nodes
            if not nodes:
                break
        for node in nodes:
            if isinstance(node, list):
                found.extend(node)
            else:
                found.append(node)
    return found


def _last_updated(resource: dict[str, Any]) -> datetime | None:
    """meta.lastUpdated as the store writes it (`format_instant`: naive UTC, microseconds)."""
    stamp = (resource.get("meta") or {}).get("lastUpdated")
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(stamp, str) else None
    except ValueError:
        return None


def _flat(items: list[Any]) -> list[Any]:
    if not any(isinstance(i, list) for i in items):
        return items
    return [x for i in items for x in (_flat(i) if isinstance(i, list) else [i])]


Entry = tuple[str | None, str | None, str | None, datetime | None, datetime | None]


def _entries(kind: str, raw: Any, base_url: str) -> list[Entry]:
    """(system, value, text, low, high) per indexed value of one raw element."""
    if kind == "token":
        return [(_cut(t.system), _cut(t.code), None, None, None) for t in tokens(raw)]
    if kind == "reference":
        return [(None, _cut(r), None, None, None) for r in references(raw, base_url)]
    if kind == "string":
        return [(None, _cut(v.normalised), _cut(v.text), None, None) for v in strings(raw)]
    if kind == "date":
        return [(None, None, None, d.low, d.high) for d in dates(raw)]
    return []


def _cut(value: str | None) -> str | None:
    return value[:_MAX] if value is not None else None
