"""The template half of every mapping: a FHIR-shaped YAML template in, JSON out.

Both mapping languages write their target this way — FHIR → FHIR (`mapping.engine`, FHIRPath over
a resource) and HL7 v2 → FHIR (`v2.mapping`, v2 field paths over a message) — so the rules live
here once and a template reads the same in `mappings/*.yaml` and `mappings/v2-*.yaml`:

- a string starting with `=` is an expression: as a dict value its first result, inside a list
  (or under a key ending in `[]`) all its results; empty results are left out;
- a string containing `{=expr}` placeholders is a text template, dropped when a placeholder is empty;
- directives on a dict: `$when: "=expr"` (emit the dict only if the condition holds) and
  `$each: "=expr"` (emit it once per item, the item being the context of its own expressions);
- the output never holds null, "", [] or {} (FHIR forbids them): empty dicts and lists are dropped.

What an expression means, what its results become in the output, what `$each` iterates and how a
text template is put together is the business of a `Dialect`. Compiling names the template path
of a bad expression (`mapping.template.identifier[0].value: ...`), so a broken file fails at load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

MARK = "="
LIST_SUFFIX = "[]"
WHEN = "$when"
EACH = "$each"
_PLACEHOLDER = re.compile(r"\{=(.+?)\}")

Evaluate = Callable[[Any, Any], list[Any]]  # (context, environment) -> results
Test = Callable[[Any, Any], bool]
_F = TypeVar("_F")


class MappingError(ValueError):
    """A mapping file or a call to it is wrong (a configuration or programming error, not bad input)."""


class Dialect(Protocol):
    """One expression language; each method compiles expression text or raises MappingError."""

    error: type[MappingError]  # raised, with the template path, for mistakes in a file
    kind: str  # "a FHIRPath expression": names the language in error messages

    def value(self, text: str) -> Evaluate:
        """`=expr`: the output values, none of them empty."""
        ...

    def placeholder(self, text: str) -> Evaluate:
        """`{=expr}`: the candidates for a placeholder; the first one is used, none means drop."""
        ...

    def concat(self, pieces: list[Any]) -> Any:
        """A text template's literal strings and placeholder values, in order → one output value."""
        ...

    def when(self, text: str) -> Test: ...

    def each(self, text: str) -> Evaluate:
        """`$each`: the items, each the context of one copy of the dict."""
        ...


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


class Node:
    """A compiled template node; `values` returns 0..n output values."""

    __slots__ = ()
    many = False  # a list-valued node: its key gets all values as a list

    def values(self, ctx: Any, env: Any) -> list[Any]:
        raise NotImplementedError


class _Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def values(self, ctx: Any, env: Any) -> list[Any]:
        return [] if is_empty(self.value) else [self.value]


class _Value(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Evaluate) -> None:
        self.fn = fn

    def values(self, ctx: Any, env: Any) -> list[Any]:
        return self.fn(ctx, env)


class _Text(Node):
    __slots__ = ("concat", "parts")

    def __init__(self, text: str, dialect: Dialect) -> None:
        self.concat = dialect.concat
        self.parts: list[str | Evaluate] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            self.parts.append(text[pos : m.start()])
            self.parts.append(dialect.placeholder(m.group(1).strip()))
            pos = m.end()
        self.parts.append(text[pos:])

    def values(self, ctx: Any, env: Any) -> list[Any]:
        pieces: list[Any] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            found = part(ctx, env)
            if not found:
                return []
            pieces.append(found[0])
        return [self.concat(pieces)]


class _List(Node):
    __slots__ = ("items",)
    many = True

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def values(self, ctx: Any, env: Any) -> list[Any]:
        out: list[Any] = []
        for item in self.items:
            out.extend(item.values(ctx, env))
        return out


class _Dict(Node):
    __slots__ = ("each", "fields", "many", "when")

    def __init__(self, fields: list[tuple[str, Node, bool]], when: Test | None, each: Evaluate | None):
        self.fields = fields
        self.when = when
        self.each = each
        self.many = each is not None

    def values(self, ctx: Any, env: Any) -> list[Any]:
        if self.each is None:
            one = self._build(ctx, env)
            return [] if one is None else [one]
        out = []
        for item in self.each(ctx, env):
            one = self._build(item, env)
            if one is not None:
                out.append(one)
        return out

    def _build(self, ctx: Any, env: Any) -> dict[str, Any] | None:
        if self.when is not None and not self.when(ctx, env):
            return None
        result: dict[str, Any] = {}
        for key, node, as_list in self.fields:
            found = node.values(ctx, env)
            if found:
                result[key] = found if as_list else found[0]
        return result or None


def compile_template(node: Any, dialect: Dialect, where: str = "template") -> Node:
    """Turn the YAML template into nodes, compiling every expression now (errors name the path)."""
    if isinstance(node, str):
        try:
            if node.startswith(MARK):
                return _Value(dialect.value(node[len(MARK) :].strip()))
            if "{=" in node:
                return _Text(node, dialect)
        except MappingError as exc:
            raise dialect.error(f"{where}: {exc}") from exc
        return _Const(node)
    if isinstance(node, list):
        return _List([compile_template(v, dialect, f"{where}[{i}]") for i, v in enumerate(node)])
    if isinstance(node, MappingABC):
        fields = []
        for key, value in node.items():
            if key in (WHEN, EACH) or value is None:
                continue
            if key.startswith("$"):
                raise dialect.error(f"{where}: unknown directive {key!r}")
            as_list = key.endswith(LIST_SUFFIX)
            name = key[: -len(LIST_SUFFIX)] if as_list else key
            child = compile_template(value, dialect, f"{where}.{name}")
            fields.append((name, child, as_list or child.many))
        when = directive(node.get(WHEN), dialect.when, dialect, f"{where}.{WHEN}")
        return _Dict(fields, when, directive(node.get(EACH), dialect.each, dialect, f"{where}.{EACH}"))
    return _Const(node)


def directive(value: Any, compile_: Callable[[str], _F], dialect: Dialect, where: str) -> _F | None:
    """A `$when` / `$each` value (`=expr`), compiled; None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(MARK):
        raise dialect.error(f"{where} must be {dialect.kind} starting with {MARK!r}")
    try:
        return compile_(value[len(MARK) :].strip())
    except MappingError as exc:
        raise dialect.error(f"{where}: {exc}") from exc


def read_document(path: Path, error: type[MappingError] = MappingError) -> dict[str, Any]:
    """A mapping file's YAML document; anything but a YAML mapping is an error naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return data
