"""Parse FHIR search parameters into a `SearchQuery` the store can run.

Repeated parameters are AND, comma-separated values OR. Unknown parameters become warnings
(FHIR's lenient default) or a 400 with `Prefer: handling=strict`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from urllib.parse import unquote

import orjson

from fhir_gateway.fhir.elements import parse_elements
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
MAX_SORT_KEYS = 3  # each key on a search parameter is a correlated lookup per match
SORTABLE_TYPES = ("date", "token", "string")
# What no search value may hold: C0 controls but tab, LF, CR (PostgreSQL refuses U+0000 in text and
# jsonb; the rest never occurs in FHIR strings) and lone surrogates (not encodable as UTF-8)
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
MAX_DB_INTEGER = 2**63 - 1  # a bigint; larger numbers sent by a client are out of range
MAX_VERSION_ID = 2**31 - 1  # versions are an integer column


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
    kind: str  # token | reference | date | string | id | missing | chain | has (values: a SearchQuery)
    modifier: str | None
    values: tuple[object, ...]
    param: SearchParam | None = None


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: SearchParam
    target_type: str | None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class SortKey:
    """One `_sort` key: `_lastUpdated`, `_id` or a declared date, token or string parameter."""

    name: str
    desc: bool
    param: SearchParam | None = None  # None for _lastUpdated and _id (columns of the resource)


@dataclass
class SearchQuery:
    resource_type: str
    conditions: list[Condition] = field(default_factory=list)
    count: int = 50
    sort_desc: bool = False
    sort_by: str = "_pk"  # _pk (insertion order, stable) | _lastUpdated | _id | _keys (sort_keys)
    sort_keys: list[SortKey] = field(default_factory=list)
    cursor_keys: tuple[str | None, ...] | None = None  # the _keys sort values of the last row seen
    elements: tuple[str, ...] = ()  # _elements: the top-level elements the matches are cut to
    includes: list[Include] = field(default_factory=list)
    summary_count: bool = False
    total: bool = False
    cursor: tuple[str, int] | None = None  # keyset position: (sort value, pk) of the last row seen
    backward: bool = False  # the cursor is a `previous` link's: the page of rows before it
    warnings: list[Issue] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # parameters as understood (for links)
    compartment: str | None = None  # confine matches to what this organisation may see
    with_public: bool = False  # ... plus the records in no compartment (the public directory)


def _bad(diagnostics: str, name: str) -> FhirError:
    return FhirError(400, [error("invalid", diagnostics, name)])


def _too_costly(diagnostics: str, name: str | None) -> FhirError:
    return FhirError(400, [error("too-costly", diagnostics, name)])


def ascii_int(raw: str) -> int | None:
    """A non-negative integer written in ASCII digits, else None. `str.isdigit` and `int()` also
    take other scripts' digits (`²`, `٣`: one passes the check and fails int(), a 500), and int()
    refuses more than 4300 digits: a number too large for the database comes back as
    MAX_DB_INTEGER + 1, so callers need only one range check."""
    if not raw or not raw.isascii() or not raw.isdigit():
        return None
    digits = raw.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else MAX_DB_INTEGER + 1


def check_text(text: str, name: str, origin: str = "") -> str:
    """400 `value` (naming the parameter) for a character no store can hold or compare;
    `origin` says where the parameter came from (" in If-None-Exist")."""
    found = FORBIDDEN_CHARACTERS.search(text)
    if found is not None:
        raise FhirError(
            400,
            [
                error(
                    "value",
                    f"Parameter '{_printable(name)}'{origin} holds the character "
                    f"U+{ord(found.group()):04X}; "
                    "no id or search value may contain it",
                    _printable(name),
                )
            ],
        )
    return text


def _printable(name: str) -> str:
    return FORBIDDEN_CHARACTERS.sub("?", name)[:100]


def parse_query(
    query: str,
    *,
    max_parameters: int,
    where: str | None = None,
    keep_blank_values: bool = True,
) -> list[tuple[str, str]]:
    """A query string (`a=1&b=x%2Cy`) as (name, value) pairs, strictly: more than
    `max_parameters` parameters is 400 `too-costly` before anything is decoded; a percent-escape
    that is not UTF-8 (`%FF`, an encoded surrogate `%ED%A0%80`) or decodes to a control character
    (`%00`) is 400 `value` naming the parameter. `urllib.parse.parse_qsl` would put U+FFFD in
    place of the bad bytes and let U+0000 through (PostgreSQL refuses it: a 500).
    `where`: the header or element the query came from (If-None-Exist, Bundle.entry.request.url),
    for the messages."""
    parts = [p for p in query.split("&") if p]
    origin = f" in {where}" if where else ""
    if max_parameters > 0 and len(parts) > max_parameters:
        over = _printable(unquote(parts[max_parameters].partition("=")[0], errors="replace"))
        raise _too_costly(
            f"{len(parts)} query parameters{origin}, from '{over}' on over the limit: at most "
            f"{max_parameters} are accepted (GATEWAY_MAX_QUERY_PARAMETERS)",
            over,
        )
    pairs: list[tuple[str, str]] = []
    for part in parts:
        raw_name, eq, raw_value = part.partition("=")
        if not eq and not keep_blank_values:
            continue
        name = _unquote(raw_name, raw_name, origin)
        value = _unquote(raw_value, name, origin)
        if not value and not keep_blank_values:
            continue
        pairs.append((check_text(name, name, origin), check_text(value, name, origin)))
    return pairs


def _unquote(text: str, name: str, origin: str) -> str:
    try:
        return unquote(text.replace("+", " "), errors="strict")
    except UnicodeDecodeError:
        shown = _printable(unquote(name.replace("+", " "), errors="replace"))
        raise FhirError(
            400,
            [error("value", f"Parameter '{shown}'{origin} is not valid percent-encoded UTF-8", shown)],
        ) from None


def parse_search(
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
    base_url: str = "",
    max_or_values: int = 100,
    max_parameters: int = 50,
    max_values: int = 500,
) -> SearchQuery:
    """Checked before any database work (400 `too-costly`, each 0: no cap): at most
    `max_parameters` parameters, `max_or_values` comma-separated values in one, `max_values`
    values over all search parameters together; and no value with a character the store cannot
    compare (400 `value`). Each condition is a subquery, each value a comparison in it: on
    PostgreSQL 1,100 conditions took minutes and gigabytes to plan."""
    if max_parameters > 0 and len(params) > max_parameters:
        over = _printable(params[max_parameters][0])
        raise _too_costly(
            f"{len(params)} search parameters, from '{over}' on over the limit: at most "
            f"{max_parameters} are accepted (GATEWAY_MAX_QUERY_PARAMETERS)",
            over,
        )
    definitions = load_search_params().get(resource_type, {})
    query = SearchQuery(resource_type=resource_type, count=default_count)
    total_values = 0
    for raw_name, raw_value in params:
        check_text(raw_name, raw_name)
        check_text(raw_value, raw_name)
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL_PARAMS:
            _control(query, name, modifier, raw_value, definitions, max_count)
            continue
        values = _count_or_values(raw_value, max_or_values)
        if max_or_values > 0 and values > max_or_values:
            raise _too_costly(
                f"Parameter '{raw_name}' has {values} comma-separated values; at most "
                f"{max_or_values} are accepted (GATEWAY_MAX_SEARCH_OR_VALUES): split the search",
                raw_name,
            )
        total_values += values
        if max_values > 0 and total_values > max_values:
            raise _too_costly(
                f"The search holds {total_values} values by parameter '{raw_name}'; at most "
                f"{max_values} are accepted over all parameters (GATEWAY_MAX_SEARCH_VALUES)",
                raw_name,
            )
        if name == "_id":
            values = tuple(v for v in raw_value.split(",") if v)
            query.conditions.append(Condition("_id", "id", None, values))
        elif name == "_lastUpdated":
            query.conditions.append(Condition("_lastUpdated", "date", None, (_date_value(name, raw_value),)))
        elif name in definitions and "." not in modifier:  # `owner:Organization.name=` is a chain
            param = definitions[name]
            query.conditions.append(_condition(param, modifier or None, raw_value, base_url))
        elif (linked := _linked(resource_type, raw_name, raw_value, base_url)) is not None:
            query.conditions.append(linked)
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
    if query.cursor is not None and query.sort_by == "_lastUpdated":
        _cursor_moment(query.cursor[0])
    if query.cursor is not None and query.sort_by == "_keys":
        query.cursor_keys = _cursor_keys(query.cursor[0], query.sort_keys)
    return query


def _count_or_values(value: str, limit: int) -> int:
    """How many comma-separated values `value` holds; the escapes are read only when the
    commas alone (an upper bound) pass `limit`."""
    commas = value.count(",")
    if commas < limit:
        return commas + 1
    return sum(1 for _ in _separators(value, ",")) + 1


def _control(
    query: SearchQuery,
    name: str,
    modifier: str,
    value: str,
    definitions: dict[str, SearchParam],
    max_count: int,
) -> None:
    if name == "_count":
        count = ascii_int(value)
        if count is None:
            raise _bad(f"_count must be a non-negative integer, got '{value[:100]}'", "_count")
        query.count = min(count, max_count)
        query.summary_count = query.summary_count or count == 0  # R4: _count=0 is _summary=count
        if count > max_count:
            query.warnings.append(
                warning("too-costly", f"_count reduced to the maximum {max_count}", "_count")
            )
    elif name == "_sort":
        _sort(query, value, definitions)
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
        *position, query.backward = decode_cursor(value)
        query.cursor = (position[0], position[1])
    elif name == "_elements":
        query.elements = (*query.elements, *parse_elements(query.resource_type, value))
    elif name in ("_pretty", "_format"):
        return
    if name not in ("_cursor", "_format"):
        query.echo.append((name if not modifier else f"{name}:{modifier}", value))


def _sort(query: SearchQuery, value: str, definitions: dict[str, SearchParam]) -> None:
    """A single `_lastUpdated` / `_id` key keeps its column sort (and its cursors); anything else
    (a declared date, token or string parameter, or several keys) is a `_keys` sort."""
    if value in SORTS:
        query.sort_by, query.sort_desc, query.sort_keys = value.lstrip("-"), SORTS[value], []
        return
    names = value.split(",")
    if len(names) > MAX_SORT_KEYS:
        raise _too_costly(f"_sort takes at most {MAX_SORT_KEYS} keys; got {len(names)}", "_sort")
    keys: list[SortKey] = []
    for raw in names:
        desc, name = raw.startswith("-"), raw.lstrip("-")
        param = definitions.get(name)
        if name in ("_lastUpdated", "_id"):
            keys.append(SortKey(name, desc))
        elif param is not None and param.type in SORTABLE_TYPES:
            keys.append(SortKey(name, desc, param))
        else:
            sortable = sorted(n for n, p in definitions.items() if p.type in SORTABLE_TYPES)
            raise _bad(
                f"Cannot sort {query.resource_type} on '{raw[:100]}': _sort takes _lastUpdated, _id"
                f"{''.join(', ' + n for n in sortable)} (each optionally with '-')",
                "_sort",
            )
        if any(k.name == name for k in keys[:-1]):
            raise _bad(f"_sort names '{name}' twice", "_sort")
    query.sort_by, query.sort_desc, query.sort_keys = "_keys", False, keys


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


def _linked(resource_type: str, raw_name: str, raw_value: str, base_url: str) -> Condition | None:
    """One level of chaining (`focus:ServiceRequest.status=active`, `patient.identifier=…`) or of
    `_has` (`_has:Task:focus:status=requested`) as a condition holding the search on the other
    type; None for anything else (deeper chains, unknown names), which the caller reports."""
    if raw_name.startswith("_has:"):
        parts = raw_name.split(":")
        if len(parts) != 4 or parts[3].startswith("_has"):
            return None
        other, ref_name, inner = parts[1], parts[2], parts[3]
        ref = load_search_params().get(other, {}).get(ref_name)
        if ref is None or ref.type != "reference" or (ref.targets and resource_type not in ref.targets):
            return None
        sub = _sub_query(other, inner, raw_value, base_url)
        return None if sub is None else Condition("_has", "has", None, (sub,), ref)
    head, dot, inner = raw_name.partition(".")
    if not dot or "." in inner:
        return None
    name, _, target = head.partition(":")
    ref = load_search_params().get(resource_type, {}).get(name)
    if ref is None or ref.type != "reference":
        return None
    target = target or (ref.targets[0] if len(ref.targets) == 1 else "")
    if not target or (ref.targets and target not in ref.targets):
        return None
    sub = _sub_query(target, inner, raw_value, base_url)
    return None if sub is None else Condition(name, "chain", None, (sub,), ref)


def _sub_query(resource_type: str, raw_name: str, raw_value: str, base_url: str) -> SearchQuery | None:
    """The search on the other type of a chain or `_has`: one declared parameter, or `_id`."""
    name, _, modifier = raw_name.partition(":")
    sub = SearchQuery(resource_type=resource_type, count=0)
    if name == "_id" and not modifier:
        sub.conditions.append(Condition("_id", "id", None, tuple(v for v in raw_value.split(",") if v)))
        return sub
    param = load_search_params().get(resource_type, {}).get(name)
    if param is None:
        return None
    sub.conditions.append(_condition(param, modifier or None, raw_value, base_url))
    return sub


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


def encode_cursor(sort_value: str, pk: int, backward: bool = False) -> str:
    """The opaque `_cursor` of a paging link; `backward` for a `previous` link."""
    position: list[object] = [sort_value, pk, 1] if backward else [sort_value, pk]
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[str, int, bool]:
    """(sort value, pk, backward) of a `_cursor` this server issued; 400 for anything else."""
    try:
        padded = token + "=" * (-len(token) % 4)
        sort_value, pk, *direction = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(pk, int) or not 0 <= pk <= MAX_DB_INTEGER or not isinstance(sort_value, str):
            raise ValueError
        if FORBIDDEN_CHARACTERS.search(sort_value) or direction not in ([], [1]):
            raise ValueError
        return sort_value, pk, direction == [1]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise _bad("_cursor is not a paging token issued by this server", "_cursor") from None


def _cursor_moment(value: str) -> None:
    """A `_lastUpdated` cursor holds an instant the store compares as a timestamp."""
    try:
        naive = datetime.fromisoformat(value).tzinfo is None
    except ValueError:
        naive = False
    if not naive:
        raise _bad("_cursor is not a paging token issued by this server", "_cursor")


def _cursor_keys(value: str, keys: list[SortKey]) -> tuple[str | None, ...]:
    """The sort values a `_keys` cursor carries: one string (or null: no value, sorted last) per
    key, dates as instants the store compares as timestamps."""
    try:
        values = orjson.loads(value)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != len(keys):
        raise _bad("_cursor is not a paging token issued by this server", "_cursor")
    for key, item in zip(keys, values, strict=True):
        if item is None:
            continue
        if not isinstance(item, str) or FORBIDDEN_CHARACTERS.search(item):
            raise _bad("_cursor is not a paging token issued by this server", "_cursor")
        if key.name == "_lastUpdated" or (key.param is not None and key.param.type == "date"):
            _cursor_moment(item)
    return tuple(values)


def cursor_value(moment: datetime) -> str:
    return moment.isoformat()
