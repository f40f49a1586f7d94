"""Parse FHIR search parameters into a `SearchQuery` the store can run.

Repeated parameters are AND, comma-separated values OR. Unknown parameters become warnings
(FHIR's lenient default) or a 400 with `Prefer: handling=strict`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

import orjson

from fhir_gateway.fhir.outcome import FhirError, Issue, error, warning
from fhir_gateway.fhir.searchparams import (
    DateRange,
    SearchParam,
    load_search_params,
    normalise_reference,
    normalise_string,
    parse_date_range,
)

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
CONTROL_PARAMS = {
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_format",
    "_cursor",
    "_pretty",
    "_elements",
}
SORTS = {"_lastUpdated": False, "-_lastUpdated": True, "_id": False, "-_id": True}


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None  # None = any system; "" = no system
    code: str | None  # None = any code ("system|")


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    range: DateRange


@dataclass(frozen=True, slots=True)
class Condition:
    """One parameter occurrence: any of `values` must match (OR)."""

    name: str
    kind: str  # token | reference | date | string | id | missing
    modifier: str | None
    values: tuple[object, ...]
    param: SearchParam | None = None


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: SearchParam
    target_type: str | None
    reverse: bool = False


@dataclass
class SearchQuery:
    resource_type: str
    conditions: list[Condition] = field(default_factory=list)
    count: int = 50
    sort_desc: bool = False
    sort_by: str = "_pk"  # _pk (insertion order, stable) | _lastUpdated | _id
    includes: list[Include] = field(default_factory=list)
    summary_count: bool = False
    total: bool = False
    cursor: tuple[str, int] | None = None  # keyset position: (sort value, pk) of the last row seen
    warnings: list[Issue] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # parameters as understood (for links)
    compartment: str | None = None  # confine matches to what this organisation may see


def _bad(diagnostics: str, name: str) -> FhirError:
    return FhirError(400, [error("invalid", diagnostics, name)])


def parse_search(
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
    base_url: str = "",
) -> SearchQuery:
    definitions = load_search_params().get(resource_type, {})
    query = SearchQuery(resource_type=resource_type, count=default_count)
    for raw_name, raw_value in params:
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL_PARAMS:
            _control(query, name, modifier, raw_value, definitions, max_count)
            continue
        if name == "_id":
            values = tuple(v for v in raw_value.split(",") if v)
            query.conditions.append(Condition("_id", "id", None, values))
        elif name == "_lastUpdated":
            query.conditions.append(Condition("_lastUpdated", "date", None, (_date_value(name, raw_value),)))
        elif name in definitions:
            param = definitions[name]
            query.conditions.append(_condition(param, modifier or None, raw_value, base_url))
        else:
            issue = warning(
                "not-supported",
                f"Unknown search parameter '{raw_name}' for {resource_type} was ignored",
                raw_name,
            )
            if strict:
                raise FhirError(400, [Issue("error", issue.code, issue.diagnostics, issue.expression)])
            query.warnings.append(issue)
            continue
        query.echo.append((raw_name, raw_value))
    return query


def _control(
    query: SearchQuery,
    name: str,
    modifier: str,
    value: str,
    definitions: dict[str, SearchParam],
    max_count: int,
) -> None:
    if name == "_count":
        if not value.isdigit():
            raise _bad(f"_count must be a non-negative integer, got '{value}'", "_count")
        query.count = min(int(value), max_count)
        if int(value) > max_count:
            query.warnings.append(
                warning("too-costly", f"_count reduced to the maximum {max_count}", "_count")
            )
    elif name == "_sort":
        if value not in SORTS:
            raise _bad(f"_sort supports {', '.join(SORTS)}; got '{value}'", "_sort")
        query.sort_by = value.lstrip("-")
        query.sort_desc = SORTS[value]
    elif name in ("_include", "_revinclude"):
        query.includes.append(_include(query.resource_type, name, value, definitions))
    elif name == "_summary":
        if value == "count":
            query.summary_count = True
        elif value != "false":
            query.warnings.append(
                warning("not-supported", f"_summary={value} is not supported; ignored", "_summary")
            )
    elif name == "_total":
        query.total = value == "accurate"
    elif name == "_cursor":
        query.cursor = decode_cursor(value)
    elif name in ("_elements", "_pretty", "_format"):
        return
    if name not in ("_cursor", "_format"):
        query.echo.append((name if not modifier else f"{name}:{modifier}", value))


def _include(resource_type: str, name: str, value: str, definitions: dict[str, SearchParam]) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise _bad(f"{name} must be 'Type:param[:target]', got '{value}'", name)
    source, param_name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if name == "_include" and source != resource_type:
        raise _bad(f"_include source must be {resource_type}, got '{source}'", name)
    source_defs = definitions if name == "_include" else load_search_params().get(source, {})
    param = source_defs.get(param_name)
    if param is None or param.type != "reference":
        raise _bad(f"'{source}:{param_name}' is not a reference search parameter", name)
    return Include(source, param, target, reverse=name == "_revinclude")


def _condition(param: SearchParam, modifier: str | None, raw: str, base_url: str) -> Condition:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(f"{param.name}:missing takes true or false", param.name)
        return Condition(param.name, "missing", None, (raw == "true",), param)
    escaped = _split_escaped(raw, ",")
    values = [_unescape(v) for v in escaped]
    if not values:
        raise _bad(f"Search parameter '{param.name}' has no value", param.name)
    if param.type == "token":
        if modifier not in (None, "not"):
            raise _bad(
                f"Modifier ':{modifier}' is not supported on token parameter '{param.name}'", param.name
            )
        return Condition(param.name, "token", modifier, tuple(_token(v) for v in escaped), param)
    if param.type == "reference":
        if modifier and modifier not in param.targets and not modifier[:1].isupper():
            raise _bad(f"Modifier ':{modifier}' is not supported on reference '{param.name}'", param.name)
        refs = []
        for v in values:
            if "/" not in v and "://" not in v and not v.startswith("urn:"):
                target = modifier or (param.targets[0] if len(param.targets) == 1 else None)
                if target is None:
                    raise _bad(f"Reference '{v}' for '{param.name}' needs a type: use Type/id", param.name)
                v = f"{target}/{v}"
            refs.append(normalise_reference(v, base_url) or v)
        return Condition(param.name, "reference", None, tuple(refs), param)
    if param.type == "date":
        if modifier:
            raise _bad(
                f"Modifier ':{modifier}' is not supported on date parameter '{param.name}'", param.name
            )
        return Condition(param.name, "date", None, tuple(_date_value(param.name, v) for v in values), param)
    if modifier not in (None, "exact", "contains"):
        raise _bad(f"Modifier ':{modifier}' is not supported on string parameter '{param.name}'", param.name)
    folded = tuple(v if modifier == "exact" else normalise_string(v) for v in values)
    return Condition(param.name, "string", modifier, folded, param)


def _separators(text: str, separator: str) -> Iterator[int]:
    """Where `separator` stands in `text` without a backslash escaping it."""
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            yield i


def _split_escaped(raw: str, separator: str) -> list[str]:
    """Split on `separator` where no backslash escapes it; the parts keep their escapes."""
    bounds = [-1, *_separators(raw, separator), len(raw)]
    return [part for a, b in pairwise(bounds) if (part := raw[a + 1 : b])]


def _unescape(text: str) -> str:
    r"""FHIR search escaping undone: `\,` `\|` `\$` `\\` (any escaped character) → the character."""
    if "\\" not in text:
        return text
    out, escaped = [], False
    for ch in text:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def search_escape(text: str) -> str:
    r"""A value as a search parameter must carry it: `\` `|` `,` `$` escaped with a backslash."""
    return "".join("\\" + ch if ch in "\\|,$" else ch for ch in text)


def _token(value: str) -> TokenValue:
    """`system|code` split at the first unescaped `|` (an escaped one belongs to the value)."""
    bar = next(_separators(value, "|"), None)
    if bar is None:
        return TokenValue(None, _unescape(value))
    return TokenValue(_unescape(value[:bar]), _unescape(value[bar + 1 :]) or None)


def _date_value(name: str, raw: str) -> DateValue:
    prefix = raw[:2] if raw[:2] in DATE_PREFIXES else "eq"
    text = raw[2:] if raw[:2] in DATE_PREFIXES else raw
    try:
        return DateValue(prefix, parse_date_range(text))
    except ValueError:
        raise _bad(
            f"'{raw}' is not a valid date for '{name}' (use e.g. ge2026-01-01 or gt2026-01-01T10:00:00Z)",
            name,
        ) from None


def encode_cursor(sort_value: str, pk: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([sort_value, pk])).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[str, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        sort_value, pk = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(pk, int):
            raise ValueError
        return str(sort_value), pk
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise _bad("_cursor is not a paging token issued by this server", "_cursor") from None


def cursor_value(moment: datetime) -> str:
    return moment.isoformat()
