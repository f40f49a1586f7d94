"""Parse an incoming FHIR JSON body with the limits orjson does not enforce for us.

orjson is strict about syntax and UTF-8 (lone surrogates, overlong bytes: refused) but it keeps
the last of duplicate keys silently (FHIR JSON forbids duplicates), nests up to 1024 levels and
accepts `"\\u0000"` (PostgreSQL jsonb refuses NUL: that would surface as a 500 much later). So:

- one iterative pass over the parsed document measures the depth and counts the object keys;
- a duplicate key can only hide when the body holds more `"…":` key endings than the document
  has keys, so the slow exact check (stdlib json with an `object_pairs_hook`) runs only then;
- control characters can only arrive as escapes, so the strings are walked only when the body
  contains one;
- a Bundle with more entries than allowed is refused before anything walks its entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.settings import Settings

_BLANKS = b" \t\r\n"  # JSON whitespace; deleted, every key ends in '":' (strings may add a false alarm)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls except tab, LF, CR


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """What one request body may contain (settings: `GATEWAY_MAX_JSON_DEPTH`, `_MAX_BUNDLE_ENTRIES`)."""

    max_depth: int = Settings.max_json_depth
    max_bundle_entries: int = Settings.max_bundle_entries


def loads(raw: bytes, limits: JsonLimits) -> Any:
    """The parsed body, or a FhirError (400/413 with an OperationOutcome) saying which rule broke."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise _too_deep(limits.max_depth) from None
        raise FhirError(400, [error("structure", f"The body is not valid JSON: {exc}")]) from None
    _check_bundle_size(doc, limits.max_bundle_entries)
    keys = count_keys(doc, limits.max_depth)
    if keys and key_endings(raw) > keys:
        _check_duplicates(raw, doc)
    if b"\\" in raw:  # a control character can only arrive escaped; most bodies hold no backslash
        _check_control_characters(doc)
    return doc


def key_endings(raw: bytes) -> int:
    """An upper bound on the keys written in `raw`: a key ends in `"`, blanks, `:` (two C passes;
    a regex or several two-byte scans cost 4x more on indented JSON, where blanks abound)."""
    return raw.translate(None, _BLANKS).count(b'":')


def count_keys(doc: Any, max_depth: int) -> int:
    """Object keys in `doc`, in one iterative pass that refuses nesting deeper than `max_depth`."""
    if type(doc) is not dict and type(doc) is not list:
        return 0
    keys = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        if type(node) is dict:
            keys += len(node)
            node = node.values()
        for value in node:
            kind = type(value)
            if kind is dict or kind is list:
                push((value, depth + 1))
    return keys


def _too_deep(max_depth: int) -> FhirError:
    return FhirError(
        400, [error("too-costly", f"The JSON is nested deeper than {max_depth} levels (the limit)")]
    )


def _check_bundle_size(doc: Any, max_entries: int) -> None:
    if type(doc) is not dict or doc.get("resourceType") != "Bundle":
        return
    entries = doc.get("entry")
    if type(entries) is list and len(entries) > max_entries:
        raise FhirError(
            413,
            [
                error(
                    "too-costly",
                    f"The Bundle has {len(entries)} entries; at most {max_entries} are accepted "
                    "per request: split it",
                    "Bundle.entry",
                )
            ],
        )


class _Duplicated(dict[str, Any]):
    """An object that held a key twice (marked by the slow parse, found again by `_locate`)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            marked = _Duplicated(pairs)
            marked.duplicate = key
            return marked
        out[key] = value
    return out


def _check_duplicates(raw: bytes, doc: Any) -> None:
    """The exact check: stdlib json keeps every pair for the hook (only run on suspicion)."""
    marked = json.loads(raw, object_pairs_hook=_pairs)
    for path, node in _nodes(marked, _root_name(doc)):
        if isinstance(node, _Duplicated):
            expression = f"{path}.{node.duplicate}"
            raise FhirError(
                400,
                [
                    error(
                        "structure",
                        f"Duplicate JSON key '{node.duplicate}' (FHIR JSON allows each key once per object)",
                        expression,
                    )
                ],
            )


def _check_control_characters(doc: Any) -> None:
    for path, node in _nodes(doc, _root_name(doc)):
        items = node.items() if type(node) is dict else enumerate(node)
        for key, value in items:
            if type(value) is str and _CONTROL.search(value):
                where = f"{path}.{key}" if type(node) is dict else f"{path}[{key}]"
                raise FhirError(
                    400,
                    [
                        error(
                            "value",
                            "A string holds a control character (U+0000-U+001F other than tab, "
                            "LF, CR); FHIR strings may not",
                            where,
                        )
                    ],
                )


def _root_name(doc: Any) -> str:
    name = doc.get("resourceType") if type(doc) is dict else None
    return name if isinstance(name, str) and name.isidentifier() else "$this"


def _nodes(doc: Any, root: str) -> list[tuple[str, Any]]:
    """Every object and array with a FHIRPath-like path (`Bundle.entry[0].resource`), parents first."""
    out: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [(root, doc)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict | list):
            continue
        out.append((path, node))
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}", v) for k, v in node.items())
        else:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
    return out
