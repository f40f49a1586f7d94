"""Declarative mappings: a FHIR resource template whose values may be FHIRPath expressions.

The template language (documented for authors in mappings/README.md):

- a string starting with `=` is a FHIRPath expression over the source resource; as a dict value it
  gives its first result, inside a list all its results; empty results are left out;
- a string containing `{=expr}` placeholders is a text template; it is left out when a placeholder
  is empty;
- a key ending in `[]` takes all results of its expression as a list;
- directives on a dict: `$when` (include the dict only if the expression is true) and `$each`
  (emit the dict once per item, evaluating the dict's own expressions with the item as context);
- inputs are FHIRPath environment variables (`%route`, `%now`, ...); `%source` is the source.

Every expression is compiled once when the mapping is loaded (fhirpathpy's `evaluate` re-parses
each call). Plain member paths such as `subject` or `%route.organization` take a dict-walking fast
path that falls back to fhirpathpy as soon as a step is missing (so choice types such as
`occurrence` still resolve through the model).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy import compile as fp_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

MARK = "="
LIST_SUFFIX = "[]"
WHEN = "$when"
EACH = "$each"
_MODEL = models["r4"]
_PLACEHOLDER = re.compile(r"\{=(.+?)\}")
_KEYWORDS = frozenset(
    {"true", "false", "and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod", "not"}
)
_MISSING = object()


class MappingError(ValueError):
    """A mapping file or a call to it is wrong (a configuration or programming error, not bad input)."""


Evaluator = Callable[[Any, dict[str, Any]], list[Any]]


class Expression:
    """One FHIRPath expression, compiled once; call it with (context, environment)."""

    __slots__ = ("_fast", "_fp", "text")

    def __init__(self, text: str, raw: bool = False) -> None:
        self.text = text
        check_syntax(text)
        try:
            self._fp: Evaluator = fp_compile(text, _MODEL, {"returnRawData": True} if raw else None)
        except Exception as exc:  # fhirpathpy raises bare Exceptions from its parser
            raise MappingError(f"bad FHIRPath expression {text!r}: {exc}") from exc
        self._fast = None if raw else _fast_form(text)

    def __call__(self, context: Any, env: dict[str, Any]) -> list[Any]:
        if self._fast is not None:
            found = self._fast(context, env)
            if found is not None:
                return found
        try:
            return self._fp(context, env)
        except Exception as exc:
            raise MappingError(f"evaluating {self.text!r} failed: {exc}") from exc


class _Raise(ErrorListener):
    def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any):
        raise MappingError(f"FHIRPath syntax error at column {column}: {msg}")


def check_syntax(text: str) -> None:
    """Reject malformed FHIRPath at load: fhirpathpy's parser recovers silently ('1 +* 2' gives 3)."""
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    stream = CommonTokenStream(lexer)
    parser = FHIRPathParser(stream)
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.expression()
    if stream.LA(1) != Token.EOF:
        raise MappingError(f"FHIRPath syntax error: unexpected {stream.LT(1).text!r} in {text!r}")


# ---------------------------------------------------------------------- fast path
# A handful of expression shapes cover most mapping values. They are evaluated by walking dicts;
# any doubt (a step that may be a choice type, a primitive extension, a non-string) returns None,
# and fhirpathpy answers instead, so results never differ from the full engine.
_FastFn = Callable[[Any, dict[str, Any]], list[Any] | None]
_TERM = re.compile(
    r"^(%?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"(\.first\(\)|\.exists\(\)|\.join\('([^'\\]*)'\))?$"
)
_CONCAT = re.compile(r"^'([^'\\]*)'\s*\+\s*(.+)$")
_UNION_FIRST = re.compile(r"^\((.+)\)\.first\(\)$")


def _fast_form(text: str) -> _FastFn | None:
    text = text.strip()
    m = _CONCAT.match(text)
    if m:
        prefix, term = m.group(1), _fast_term(m.group(2).strip())
        if term is None:
            return None

        def concat(ctx: Any, env: dict[str, Any]) -> list[Any] | None:
            found = term(ctx, env)
            if found is None or len(found) > 1 or (found and not isinstance(found[0], str)):
                return None
            return [prefix + found[0]] if found else []

        return concat
    m = _UNION_FIRST.match(text)
    if m:
        terms = [_fast_term(t.strip()) for t in m.group(1).split("|")]
        if any(t is None for t in terms):
            return None

        def union_first(ctx: Any, env: dict[str, Any]) -> list[Any] | None:
            for term in terms:
                found = term(ctx, env)  # type: ignore[misc]
                if found is None:
                    return None
                if found:
                    return found[:1]
            return []

        return union_first
    return _fast_term(text)


def _fast_term(text: str) -> _FastFn | None:
    m = _TERM.match(text)
    if not m:
        return None
    parts = m.group(1).split(".")
    head, steps = parts[0], tuple(parts[1:])
    if head.startswith("%"):
        var: str | None = head[1:]
    elif head[0].isupper() or head in _KEYWORDS:
        return None  # a type name or a literal: leave to fhirpathpy
    else:
        var, steps = None, (head, *steps)
    if any(s in _KEYWORDS for s in steps):
        return None
    suffix, sep = m.group(2), m.group(3)

    def term(ctx: Any, env: dict[str, Any]) -> list[Any] | None:
        items = _walk(var, steps, ctx, env)
        if items is None or not suffix:
            return items
        if suffix == ".first()":
            return items[:1]
        if suffix == ".exists()":
            return [bool(items)]
        if not all(isinstance(i, str) for i in items):
            return None
        return [sep.join(items)] if items else []

    return term


def _walk(var: str | None, steps: tuple[str, ...], ctx: Any, env: dict[str, Any]) -> list[Any] | None:
    if var is not None:
        if var not in env:
            return None
        current = env[var]
    else:
        current = ctx.data if isinstance(ctx, ResourceNode) else ctx
    items = current if isinstance(current, list) else ([] if current is None else [current])
    for step in steps:
        following: list[Any] = []
        for item in items:
            if not isinstance(item, dict):
                return None
            value = item.get(step, _MISSING)
            if value is _MISSING:
                if _maybe_present(item, step):
                    return None
                continue
            if isinstance(value, list):
                following.extend(v for v in value if v is not None)
            elif value is not None:
                following.append(value)
        items = following
    return [_clone(v) for v in items]


def _maybe_present(item: dict[str, Any], step: str) -> bool:
    """A missing key may still have a value for FHIRPath: a choice type or an extension-only primitive."""
    n = len(step)
    return any(k == "_" + step or (len(k) > n and k.startswith(step) and k[n].isupper()) for k in item)


def _clone(value: Any) -> Any:
    """Copy JSON-like data so the output never aliases the source or the inputs."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """FHIRPath results -> JSON values (Decimal -> int/float, FHIRPath date types -> str)."""
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        plain = {k: _plain(v) for k, v in value.items()}
        return {k: v for k, v in plain.items() if not _is_empty(v)}  # inputs may carry None
    if isinstance(value, list):
        return [p for p in map(_plain, value) if not _is_empty(p)]
    if isinstance(value, ResourceNode):
        return _plain(value.data)
    return str(value)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_plain(value))


# ---------------------------------------------------------------------- template nodes
class _Node:
    """A compiled template node; `values` returns 0..n output values."""

    many = False  # a list-valued node: its key gets all values as a list

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        raise NotImplementedError


class _Const(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        return [] if _is_empty(self.value) else [self.value]


class _Expr(_Node):
    __slots__ = ("expr",)

    def __init__(self, text: str) -> None:
        self.expr = Expression(text)

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        out = []
        for v in self.expr(ctx, env):
            v = _plain(v)
            if not _is_empty(v):
                out.append(v)
        return out


class _Text(_Node):
    __slots__ = ("parts",)

    def __init__(self, text: str) -> None:
        self.parts: list[str | Expression] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            self.parts.append(text[pos : m.start()])
            self.parts.append(Expression(m.group(1)))
            pos = m.end()
        self.parts.append(text[pos:])

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            found = [v for v in part(ctx, env) if not _is_empty(v)]
            if not found:
                return []
            out.append(_text(found[0]))
        return ["".join(out)]


class _List(_Node):
    __slots__ = ("items",)
    many = True

    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for item in self.items:
            out.extend(item.values(ctx, env))
        return out


class _Dict(_Node):
    __slots__ = ("each", "fields", "many", "when")

    def __init__(
        self, fields: list[tuple[str, _Node, bool]], when: Expression | None, each: Expression | None
    ):
        self.fields = fields
        self.when = when
        self.each = each
        self.many = each is not None

    def values(self, ctx: Any, env: dict[str, Any]) -> list[Any]:
        if self.each is None:
            one = self._build(ctx, env)
            return [] if one is None else [one]
        out = []
        for item in self.each(ctx, env):
            one = self._build(item, env)
            if one is not None:
                out.append(one)
        return out

    def _build(self, ctx: Any, env: dict[str, Any]) -> dict[str, Any] | None:
        if self.when is not None and self.when(ctx, env) != [True]:
            return None
        result: dict[str, Any] = {}
        for key, node, as_list in self.fields:
            found = node.values(ctx, env)
            if found:
                result[key] = found if as_list else found[0]
        return result or None


def compile_template(node: Any, where: str = "template") -> _Node:
    """Turn the YAML template into nodes, compiling every expression now (errors name the path)."""
    if isinstance(node, str):
        try:
            if node.startswith(MARK):
                return _Expr(node[len(MARK) :].strip())
            if "{=" in node:
                return _Text(node)
        except MappingError as exc:
            raise MappingError(f"{where}: {exc}") from exc
        return _Const(node)
    if isinstance(node, list):
        return _List([compile_template(v, f"{where}[{i}]") for i, v in enumerate(node)])
    if isinstance(node, MappingABC):
        fields = []
        for key, value in node.items():
            if key in (WHEN, EACH) or value is None:
                continue
            if key.startswith("$"):
                raise MappingError(f"{where}: unknown directive {key!r}")
            as_list = key.endswith(LIST_SUFFIX)
            name = key[: -len(LIST_SUFFIX)] if as_list else key
            child = compile_template(value, f"{where}.{name}")
            fields.append((name, child, as_list or child.many))
        when = _directive(node.get(WHEN), where, WHEN)
        return _Dict(fields, when, _directive(node.get(EACH), where, EACH, raw=True))
    return _Const(node)


def _directive(value: Any, where: str, name: str, raw: bool = False) -> Expression | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(MARK):
        raise MappingError(f"{where}.{name} must be a FHIRPath expression starting with {MARK!r}")
    try:
        return Expression(value[len(MARK) :].strip(), raw=raw)
    except MappingError as exc:
        raise MappingError(f"{where}.{name}: {exc}") from exc


class Mapping:
    """A compiled mapping: `apply(source, inputs)` returns the target resource as a dict."""

    def __init__(self, name: str, document: dict[str, Any]) -> None:
        self.name = name
        self.source_type: str | None = document.get("source")
        self.target_type: str | None = (document.get("template") or {}).get("resourceType")
        declared = document.get("inputs") or {}
        if not isinstance(declared, dict):
            raise MappingError(f"{name}: 'inputs' must map input names to required|optional")
        self.required = tuple(k for k, v in declared.items() if v == "required")
        self.optional = tuple(k for k, v in declared.items() if v != "required")
        if not isinstance(document.get("template"), dict) or not self.target_type:
            raise MappingError(f"{name}: 'template' must be a resource with a resourceType")
        self._root = compile_template(document["template"], name)

    def apply(self, source: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """Map `source` with the named `inputs` (FHIRPath `%name` variables) to the target resource."""
        if self.source_type and source.get("resourceType") != self.source_type:
            raise MappingError(f"{self.name} maps a {self.source_type}, not a {source.get('resourceType')}")
        missing = [k for k in self.required if inputs.get(k) is None]
        if missing:
            raise MappingError(f"{self.name} needs the input(s) {', '.join(missing)}")
        env = {k: None for k in self.optional}
        env.update(inputs)
        env["source"] = source
        env["resource"] = source
        found = self._root.values(source, env)
        if not found:
            raise MappingError(f"{self.name} produced nothing")
        return found[0]
