"""HL7 v2 → FHIR mappings (`mappings/v2-*.yaml`): the shared template with v2 path expressions.

The template rules (`=expr`, `{=expr}`, `key[]`, `$when`, `$each`, empties left out) are
`mapping.template`'s, the same as for the FHIR mappings; this module adds the expression dialect:
v2 paths with selectors and filters (`PID-3[.4 = 'NLMINBIZA'].1 | query`), because FHIRPath
cannot address a v2 field and cannot say where a value came from.

Every value written remembers the v2 field it came from, so an OperationOutcome expression such
as `Bundle.entry[2].resource.identifier[0].value` maps back to `PID^1^3^1^1` for the ACK's ERR
segment: the mapping file is the one place that knows both sides. Syntax: examples/v2/README.md.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fhir_gateway.fhir.search import search_escape
from fhir_gateway.mapping.template import (
    WHEN,
    MappingError,
    Node,
    compile_template,
    directive,
    read_document,
)
from fhir_gateway.v2.message import Message, Repetition, Segment
from fhir_gateway.vocabulary import AMSTERDAM

_URN_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4f8e-9a57-0f1f2b7c9e11")


class V2MappingError(MappingError):
    """The mapping file is wrong (configuration error, found at load time)."""


# ------------------------------------------------------------------------------ locations
@dataclass(frozen=True, slots=True)
class Loc:
    """Where a value sits in the message: ERR-2 (ERL) segment^sequence^field^repetition^component^sub."""

    segment: str
    sequence: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    def erl(self) -> list[str]:
        parts = [self.segment, str(self.sequence)]
        for v in (self.field, self.repetition, self.component, self.subcomponent):
            parts.append("" if v is None else str(v))
        while parts and parts[-1] == "":
            parts.pop()
        return parts

    @property
    def label(self) -> str:
        """Human form: PID-3.1 (no repetition/sequence), as used in messages."""
        text = self.segment
        if self.field is not None:
            text += f"-{self.field}"
            if self.component is not None:
                text += f".{self.component}"
                if self.subcomponent is not None:
                    text += f".{self.subcomponent}"
        return text


_NOWHERE = Loc("MSH")  # literals, %variables and @entries: no field to point an ERR at


@dataclass(frozen=True, slots=True)
class Hit:
    text: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class SegCtx:
    seg: Segment


@dataclass(frozen=True, slots=True)
class RepCtx:
    seg: Segment
    field: int
    repetition: int
    comps: Repetition

    def hit(self) -> Hit:
        text = self.comps[0][0] if self.comps and self.comps[0] else ""
        return Hit(text, Loc(self.seg.name, self.seg.sequence, self.field, self.repetition))


Item = SegCtx | RepCtx | Hit


# ------------------------------------------------------------------------------ expression parser
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<word>(?:[A-Z][A-Z0-9]{2}|[-.][0-9]+)(?:\([0-9]+\)|[-.][0-9]+)*(?![A-Za-z0-9_])"
    r"|[A-Za-z_%@][A-Za-z0-9_:\-]*)"
    r"|(?P<op>\?\?|!=|=|\(|\)|\[|\]|,|\|))"
)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise V2MappingError(f"cannot read {text!r} at column {pos}")
            kind = m.lastgroup or ""
            self.items.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise V2MappingError(f"unexpected end of {self.text!r}")
        self.i += 1
        return tok

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[1] == value and tok[0] in ("op", "word"):
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise V2MappingError(f"expected {value!r} in {self.text!r}")

    def done(self) -> bool:
        return self.i >= len(self.items)


@dataclass
class _Env:
    message: Message
    urls: dict[str, str]  # entry name -> fullUrl (only entries emitted so far or planned)
    variables: dict[str, str]
    tables: dict[str, dict[str, str]]


Evaluate = Callable[[Item | None, _Env], list[Item]]
Test = Callable[[Item | None, _Env], bool]

# path: SEG[sel][-F[sel][.C[.S]]]  |  -F[sel][.C[.S]]  |  .C[.S]
_PATH_HEAD = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})?(?P<rest>.*)$")


def _path_word(word: str) -> bool:
    return bool(re.match(r"^([A-Z][A-Z0-9]{2}|-\d|\.\d)", word))


class _Parser:
    """Recursive descent over expression / condition text (syntax: examples/v2/README.md)."""

    def __init__(self, text: str) -> None:
        self.t = _Tokens(text)

    # expr := alt ('??' alt)*
    def expression(self) -> Evaluate:
        alts = [self.alternative()]
        while self.t.accept("??"):
            alts.append(self.alternative())
        if len(alts) == 1:
            return alts[0]

        def first_non_empty(ctx: Item | None, env: _Env) -> list[Item]:
            for alt in alts:
                found = _values(alt(ctx, env))
                if found:
                    return found  # type: ignore[return-value]
            return []

        return first_non_empty

    # alt := atom ('|' filter)*
    def alternative(self) -> Evaluate:
        atom = self.atom()
        filters: list[Any] = []
        while self.t.accept("|"):
            _, word = self.t.take()
            filters.append(_filter(word))
        if not filters:
            return atom

        def filtered(ctx: Item | None, env: _Env) -> list[Item]:
            hits = _values(atom(ctx, env))
            for f in filters:
                if isinstance(f, _Join):
                    hits = [Hit(f.sep.join(h.text for h in hits), hits[0].loc)] if hits else []
                    continue
                hits = [h for h in (f(h, env) for h in hits) if h is not None and h.text]
            return hits  # type: ignore[return-value]

        return filtered

    def atom(self) -> Evaluate:
        kind, word = self.t.take()
        if kind == "str":
            text = bytes(word[1:-1], "utf-8").decode("unicode_escape")
            return lambda ctx, env: [Hit(text, _NOWHERE)]
        if word.startswith("@"):
            name = word[1:]
            return lambda ctx, env: [Hit(env.urls[name], _NOWHERE)] if name in env.urls else []
        if word.startswith("%"):
            var = word[1:]
            return lambda ctx, env: [Hit(env.variables[var], _NOWHERE)] if env.variables.get(var) else []
        if _path_word(word):
            return self.path(word)
        raise V2MappingError(f"{word!r} is not a v2 path, 'literal', @entry or %variable in {self.t.text!r}")

    def path(self, first: str) -> Evaluate:
        """A path may continue over several tokens when it has [condition] selectors."""
        steps: list[Callable[[list[Item], _Env], list[Item]]] = []
        word = first
        while True:
            word = self._steps(word, steps)
            tok = self.t.peek()
            if tok is not None and tok == ("op", "["):
                self.t.take()
                cond = self.condition()
                self.t.expect("]")
                steps.append(_select_where(cond))
                nxt = self.t.peek()
                if nxt is not None and nxt[0] == "word" and nxt[1][:1] in "-.":
                    self.t.take()
                    word = nxt[1]
                    continue
            break

        def run(ctx: Item | None, env: _Env) -> list[Item]:
            items: list[Item] = [ctx] if ctx is not None else []
            for step in steps:
                items = step(items, env)
            return items

        return run

    def _steps(self, word: str, steps: list[Callable[[list[Item], _Env], list[Item]]]) -> str:
        m = _PATH_HEAD.match(word)
        assert m
        if m.group("seg"):
            name = m.group("seg")
            steps.append(lambda items, env, name=name: [SegCtx(s) for s in env.message.all(name)])
        rest = m.group("rest")
        for part in re.findall(r"[-.]\d+|\(\d+\)", rest):
            if part.startswith("("):
                steps.append(_select_index(int(part[1:-1])))
            elif part.startswith("-"):
                steps.append(_field_step(int(part[1:])))
            else:
                steps.append(_component_step(int(part[1:])))
        if re.sub(r"[-.]\d+|\(\d+\)", "", rest):
            raise V2MappingError(f"bad v2 path {word!r} in {self.t.text!r}")
        return rest

    # cond := conj ('or' conj)*
    def condition(self) -> Test:
        parts = [self.conjunction()]
        while self.t.accept("or"):
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda ctx, env: any(p(ctx, env) for p in parts)

    def conjunction(self) -> Test:
        parts = [self.unary()]
        while self.t.accept("and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda ctx, env: all(p(ctx, env) for p in parts)

    def unary(self) -> Test:
        if self.t.accept("not"):
            inner = self.unary()
            return lambda ctx, env: not inner(ctx, env)
        if self.t.accept("("):
            inner = self.condition()
            self.t.expect(")")
            return inner
        left = self.alternative()
        if self.t.accept("="):
            right = self.alternative()
            return lambda ctx, env: _equal(left, right, ctx, env)
        if self.t.accept("!="):
            right = self.alternative()
            return lambda ctx, env: not _equal(left, right, ctx, env)
        if self.t.accept("in"):
            self.t.expect("(")
            options = set()
            while True:
                kind, word = self.t.take()
                if kind != "str":
                    raise V2MappingError(f"'in' takes quoted literals in {self.t.text!r}")
                options.add(word[1:-1])
                if not self.t.accept(","):
                    break
            self.t.expect(")")
            return lambda ctx, env: any(h.text in options for h in _values(left(ctx, env)))
        return lambda ctx, env: _present(left(ctx, env))


def _equal(left: Evaluate, right: Evaluate, ctx: Item | None, env: _Env) -> bool:
    rights = {h.text for h in _values(right(ctx, env))}
    return any(h.text in rights for h in _values(left(ctx, env)))


def _present(items: list[Item]) -> bool:
    """A bare path as a condition: a segment that occurs, or any non-empty value."""
    return any(isinstance(i, SegCtx) for i in items) or bool(_values(items))


def _select_index(n: int) -> Callable[[list[Item], _Env], list[Item]]:
    return lambda items, env: items[n - 1 : n]


def _select_where(cond: Test) -> Callable[[list[Item], _Env], list[Item]]:
    return lambda items, env: [i for i in items if cond(i, env)]


def _field_step(n: int) -> Callable[[list[Item], _Env], list[Item]]:
    def step(items: list[Item], env: _Env) -> list[Item]:
        out: list[Item] = []
        for item in items:
            seg = item.seg if isinstance(item, SegCtx | RepCtx) else None
            if seg is None:
                continue
            for r, comps in enumerate(seg.field(n), start=1):
                out.append(RepCtx(seg, n, r, comps))
        return out

    return step


def _component_step(n: int) -> Callable[[list[Item], _Env], list[Item]]:
    def step(items: list[Item], env: _Env) -> list[Item]:
        out: list[Item] = []
        for item in items:
            if isinstance(item, RepCtx):
                subs = item.comps[n - 1] if len(item.comps) >= n else []
                loc = Loc(item.seg.name, item.seg.sequence, item.field, item.repetition, n)
                # a component step on a repetition gives a 'component' context: reuse Hit with its
                # subcomponents reachable by a second step
                out.append(_CompHit(subs[0] if subs else "", loc, tuple(subs)))
            elif isinstance(item, _CompHit):
                subs = item.subs
                text = subs[n - 1] if len(subs) >= n else ""
                loc = Loc(
                    item.loc.segment,
                    item.loc.sequence,
                    item.loc.field,
                    item.loc.repetition,
                    item.loc.component,
                    n,
                )
                out.append(Hit(text, loc))
        return out

    return step


@dataclass(frozen=True, slots=True)
class _CompHit(Hit):
    subs: tuple[str, ...] = ()


def _values(items: list[Item]) -> list[Hit]:
    """Items as values: repetitions give their first component; segments give nothing; '' dropped."""
    out: list[Hit] = []
    for item in items:
        if isinstance(item, RepCtx):
            item = item.hit()
        if isinstance(item, Hit) and item.text:
            out.append(Hit(item.text, item.loc) if isinstance(item, _CompHit) else item)
    return out


# ------------------------------------------------------------------------------ filters
def _v2_datetime(text: str) -> tuple[datetime | None, int]:
    """v2 TS/DTM → (datetime, precision in digits). Zone-less times are Europe/Amsterdam."""
    m = re.match(
        r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$", text.strip()
    )
    if not m:
        return None, 0
    y, mo, d, h, mi, s, frac, tz = m.groups()
    digits = sum(len(x) for x in (y, mo, d, h, mi, s) if x)
    try:
        if tz:
            sign = 1 if tz[0] == "+" else -1
            zone: Any = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
        else:
            zone = AMSTERDAM
        value = datetime(
            int(y),
            int(mo or 1),
            int(d or 1),
            int(h or 0),
            int(mi or 0),
            int(s or 0),
            int((frac or "0").ljust(6, "0")[:6]),
            tzinfo=zone,
        )
    except ValueError:
        return None, 0
    return value, digits


def to_fhir_date(text: str) -> str | None:
    value, digits = _v2_datetime(text)
    if value is None:
        return None
    return value.strftime({4: "%Y", 6: "%Y-%m"}.get(digits, "%Y-%m-%d"))


def to_fhir_datetime(text: str) -> str | None:
    value, digits = _v2_datetime(text)
    if value is None:
        return None
    if digits <= 8:
        return to_fhir_date(text)
    return value.isoformat(timespec="seconds")


class _Join:
    """`| join` (newline) or `| join:space`: all values as one text (repeated NTE-3 lines)."""

    def __init__(self, arg: str) -> None:
        self.sep = {"": "\n", "space": " ", "comma": ", "}.get(arg, arg)


_QUERY_SAFE = "/:@!$'()*,;=|\\^~[]{}<>\"`"


def _filter(word: str) -> Any:
    name, _, arg = word.partition(":")
    if name == "join":
        return _Join(arg)

    def keep_raw(fn: Callable[[str], str | None]) -> Callable[[Hit, _Env], Hit | None]:
        # an unreadable date stays as it was, so validation reports it at this field (ERR 102)
        return lambda h, env: Hit(fn(h.text) or h.text, h.loc)

    if name == "date":
        return keep_raw(to_fhir_date)
    if name == "datetime":
        return keep_raw(to_fhir_datetime)
    if name == "postcode":
        return keep_raw(_postcode)
    if name == "upper":
        return lambda h, env: Hit(h.text.upper(), h.loc)
    if name == "lower":
        return lambda h, env: Hit(h.text.lower(), h.loc)
    if name == "trim":
        return lambda h, env: Hit(h.text.strip(), h.loc)
    if name == "urlsafe":
        return lambda h, env: Hit(quote(h.text, safe=""), h.loc)
    if name == "query":  # one search value in a query string (ifNoneExist): `A,B` is not A or B,
        # `A&B` not two parameters; only what parse_qsl would read differently is %-encoded
        return lambda h, env: Hit(quote(search_escape(h.text), safe=_QUERY_SAFE), h.loc)
    if name == "map":
        if not arg:
            raise V2MappingError("map needs a table name: map:<table>")

        def lookup(h: Hit, env: _Env) -> Hit | None:
            table = env.tables.get(arg)
            if table is None:
                raise V2MappingError(f"unknown table {arg!r}")
            found = table.get(h.text, table.get(h.text.upper()))
            return Hit(found, h.loc) if found else None

        return lookup
    raise V2MappingError(f"unknown filter {word!r}")


def _postcode(text: str) -> str | None:
    m = re.match(r"^\s*([1-9][0-9]{3})\s*([A-Za-z]{2})\s*$", text)
    return f"{m.group(1)} {m.group(2).upper()}" if m else None


# ------------------------------------------------------------------------------ the dialect
def _parse(text: str, rule: Callable[[_Parser], Any]) -> Any:
    parser = _Parser(text)
    fn = rule(parser)
    if not parser.t.done():
        raise V2MappingError(f"unexpected {parser.t.peek()!r} in {text!r}")
    return fn


class V2PathDialect:
    """v2 paths and filters for `mapping.template`.

    Values are `Hit`s (text + the v2 field it came from) while the template is built; `_settle`
    turns them into text afterwards and keeps each one's FHIR path → v2 location.
    """

    error = V2MappingError
    kind = "a v2 expression"

    def value(self, text: str) -> Evaluate:
        fn: Evaluate = _parse(text, _Parser.expression)
        return lambda ctx, env: _values(fn(ctx, env))  # type: ignore[return-value]

    placeholder = value

    def concat(self, pieces: list[Any]) -> Hit:
        """A text template points where its first placeholder from the message points."""
        text = "".join(p.text if isinstance(p, Hit) else p for p in pieces)
        loc = next((p.loc for p in pieces if isinstance(p, Hit) and p.loc.field is not None), _NOWHERE)
        return Hit(text, loc)

    def when(self, text: str) -> Test:
        return _parse(text, _Parser.condition)

    def each(self, text: str) -> Evaluate:
        return _parse(text, _Parser.expression)


V2_PATHS = V2PathDialect()


def _settle(node: Any, path: str, sources: dict[str, Loc]) -> Any:
    """Replace the Hits in a built template by their text, noting the v2 field of each path."""
    if isinstance(node, Hit):
        if node.loc.field is not None:
            sources.setdefault(path, node.loc)
        return node.text
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _settle(value, f"{path}.{key}" if path else key, sources)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = _settle(value, f"{path}[{i}]", sources)
    return node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


_OLD_PLACEHOLDER = re.compile(r"\{(?!=)[^{}]+\}")


def _check_strings(name: str, document: dict[str, Any], tables: dict[str, Any]) -> None:
    """Problems no single expression shows: unknown tables, placeholders of the old `{expr}` form."""
    for section, content in document.items():
        for text in _strings(content):
            for table_use in re.findall(r"map:([A-Za-z0-9_]+)", text):
                if table_use not in tables:
                    raise V2MappingError(f"{name}: filter map:{table_use} names no table under 'tables'")
            old = _OLD_PLACEHOLDER.search(text) if section in ("variables", "entries") else None
            if old:
                raise V2MappingError(f"{name}: placeholders are written {{=expr}}, not {old.group(0)!r}")


def _static_loc(path: str) -> Loc:
    m = re.match(r"^([A-Z][A-Z0-9]{2})(?:-(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?$", path.strip())
    if not m:
        raise V2MappingError(f"errors: {path!r} must look like SEG, SEG-n or SEG-n.c")
    seg, f, c, s = m.groups()
    return Loc(seg, 1, int(f) if f else None, None, int(c) if c else None, int(s) if s else None)


# ------------------------------------------------------------------------------ the mapping
@dataclass
class _Entry:
    name: str
    segment: str
    when: Test | None
    request: Node
    resource: Node
    errors: dict[str, Loc]


@dataclass
class MappedEntry:
    """One entry of the produced Bundle with the v2 origin of each value written."""

    name: str
    index: int
    resource_type: str
    segment: Loc  # the segment the entry was built from (fallback location)
    sources: dict[str, Loc]  # FHIR path inside the resource -> v2 location
    errors: dict[str, Loc]  # declared locations for elements that may be absent


@dataclass
class MappingResult:
    bundle: dict[str, Any]
    entries: list[MappedEntry]

    def locate(self, expression: str | None) -> Loc | None:
        """Map an OperationOutcome expression back to the v2 field it came from."""
        return locate(self, expression)


class V2Mapping:
    """A compiled `mappings/v2-*.yaml`: `apply(message)` → transaction Bundle + source map."""

    def __init__(self, name: str, document: dict[str, Any]) -> None:
        self.name = name
        self.description = document.get("description", "")
        self.message_type: str = document.get("message", "")
        if not re.match(r"^[A-Z0-9]{3}\^[A-Z0-9]{3}$", self.message_type):
            raise V2MappingError(f"{name}: 'message' must be like REF^I12")
        self.versions: tuple[str, ...] = tuple(str(v) for v in document.get("versions", ()))
        if not self.versions:
            raise V2MappingError(f"{name}: 'versions' lists the accepted MSH-12 values")
        self.required_segments: tuple[str, ...] = tuple(document.get("required_segments", ()))
        self.tables: dict[str, dict[str, str]] = {
            t: {str(k): str(v) for k, v in (rows or {}).items()}
            for t, rows in (document.get("tables") or {}).items()
        }
        self.variables = {
            k: compile_template(v, V2_PATHS, f"{name}.variables.{k}")
            for k, v in (document.get("variables") or {}).items()
        }
        self.entries: list[_Entry] = []
        for i, raw in enumerate(document.get("entries") or []):
            if any(e.name == raw.get("name") for e in self.entries):
                raise V2MappingError(f"{name}.entries[{i}]: every entry needs a unique name")
            self.entries.append(_entry(raw, f"{name}.entries[{i}]"))
        if not self.entries:
            raise V2MappingError(f"{name}: no entries")
        _check_strings(name, document, self.tables)

    @classmethod
    def load(cls, path: Path) -> V2Mapping:
        return cls(path.stem, read_document(path, V2MappingError))

    def apply(self, message: Message, variables: dict[str, str] | None = None) -> MappingResult:
        """Build the transaction Bundle; fullUrls are stable per (sender, control id, entry)."""
        seed = f"{message.sender}|{message.control_id}"
        env = _Env(message, {}, dict(variables or {}), self.tables)
        env.variables.setdefault("controlId", message.control_id)
        for key, node in self.variables.items():
            found = node.values(None, env)
            if found:
                env.variables[key] = str(_settle(found[0], "", {}))
        active = [e for e in self.entries if e.when is None or e.when(None, env)]
        for e in active:
            env.urls[e.name] = f"urn:uuid:{uuid.uuid5(_URN_NAMESPACE, f'{seed}|{e.name}')}"
        out_entries: list[dict[str, Any]] = []
        mapped: list[MappedEntry] = []
        for e in active:
            built = e.resource.values(None, env)
            if not built:
                continue
            sources: dict[str, Loc] = {}
            resource = _settle(built[0], "", sources)
            request = _settle((e.request.values(None, env) or [{}])[0], "", {})
            request.setdefault("method", "POST")
            request.setdefault("url", resource["resourceType"])
            out_entries.append({"fullUrl": env.urls[e.name], "resource": resource, "request": request})
            first = message.segment(e.segment)
            seg_loc = Loc(e.segment, first.sequence if first else 1)
            mapped.append(
                MappedEntry(e.name, len(mapped), resource["resourceType"], seg_loc, sources, e.errors)
            )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": out_entries}
        return MappingResult(bundle, mapped)


def _entry(raw: dict[str, Any], where: str) -> _Entry:
    """One item of `entries:`, compiled."""
    name = raw.get("name")
    if not name:
        raise V2MappingError(f"{where}: every entry needs a unique name")
    resource = raw.get("resource")
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise V2MappingError(f"{where}: 'resource' must be a template with a resourceType")
    return _Entry(
        name=name,
        segment=str(raw.get("segment", "MSH")),
        when=directive(raw.get(WHEN), V2_PATHS.when, V2_PATHS, f"{where}.{WHEN}"),
        request=compile_template(raw.get("request") or {}, V2_PATHS, f"{where}.request"),
        resource=compile_template(resource, V2_PATHS, f"{where}.resource"),
        errors={k: _static_loc(v) for k, v in (raw.get("errors") or {}).items()},
    )


# ------------------------------------------------------------------------------ expression → v2
_ENTRY_EXPR = re.compile(r"^Bundle\.entry\[(\d+)\]\.resource(?:\.(.*))?$")
_INDEX = re.compile(r"\[\d+\]")


def locate(result: MappingResult, expression: str | None) -> Loc | None:
    """`Bundle.entry[2].resource.identifier[0].value` or `Patient.address[0].postalCode` → Loc."""
    if not expression:
        return None
    expression = expression.strip()
    entry: MappedEntry | None = None
    inner = ""
    m = _ENTRY_EXPR.match(expression)
    if m:
        idx = int(m.group(1))
        entry = result.entries[idx] if idx < len(result.entries) else None
        inner = m.group(2) or ""
    else:
        head, _, inner = expression.partition(".")
        head = _INDEX.sub("", head)
        entry = next((e for e in result.entries if e.resource_type == head), None)
    if entry is None:
        return None
    if not inner:
        return entry.segment
    found = _find(entry, inner)
    if found is None:
        # the expression names an element this entry does not have (e.g. a routing error on the
        # referral's entry that speaks of the patient's address): the entry that has it wins
        found = next(
            (loc for e in result.entries if e is not entry and (loc := _find(e, inner, False))), None
        )
    return found or entry.segment


def _find(entry: MappedEntry, inner: str, declared: bool = True) -> Loc | None:
    keys = list(entry.sources)
    for candidate in _prefixes(inner):  # the element itself, else its nearest mapped ancestor
        if candidate in entry.sources:
            return entry.sources[candidate]
        for key in keys:  # an element whose children were mapped (identifier[0] -> .value)
            if key.startswith((candidate + ".", candidate + "[")):
                return entry.sources[key]
    plain = _INDEX.sub("", inner)
    for key in keys:  # the same element written without indexes
        p = _INDEX.sub("", key)
        if p == plain or p.startswith(plain + ".") or plain.startswith(p + "."):
            return entry.sources[key]
    if declared:
        for key, loc in entry.errors.items():  # declared places for elements that stayed empty
            if plain == key or plain.startswith(key + "."):
                return loc
    return None


def _prefixes(path: str) -> Iterator[str]:
    """identifier[0].value → identifier[0].value, identifier[0], identifier."""
    current = path
    while current:
        yield current
        if current.endswith("]"):
            current = current[: current.rfind("[")]
        elif "." in current:
            current = current[: current.rfind(".")]
        else:
            break
