"""FHIR → FHIR mappings: the shared template (`mapping.template`) with FHIRPath expressions.

The template rules (`=expr`, `{=expr}`, `key[]`, `$when`, `$each`, empties left out) are
`mapping.template`'s and documented for authors in mappings/README.md. Here: expressions are
FHIRPath over the source resource; inputs are FHIRPath environment variables (`%route`, `%now`,
...); `%source` is the source; results become plain JSON values (Decimal → int/float, dates → str).

Every expression is compiled once when the mapping is loaded (fhirpathpy's `evaluate` re-parses
each call). Plain member paths such as `subject` or `%route.organization` take a dict-walking fast
path that falls back to fhirpathpy as soon as a step is missing (so choice types such as
`occurrence` still resolve through the model).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy import compile as fp_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_gateway import tracing
from fhir_gateway.mapping.template import Evaluate, MappingError, compile_template, is_empty

_MODEL = models["r4"]
_KEYWORDS = frozenset(
    {"true", "false", "and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod", "not"}
)
_MISSING = object()


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
_UNION = re.compile(r"^\((.+)\)\.(first|exists)\(\)$")


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
    m = _UNION.match(text)
    if m:
        terms = [_fast_term(t.strip()) for t in m.group(1).split("|")]
        if any(t is None for t in terms):
            return None
        exists = m.group(2) == "exists"

        def union(ctx: Any, env: dict[str, Any]) -> list[Any] | None:
            for term in terms:
                found = term(ctx, env)  # type: ignore[misc]
                if found is None:
                    return None
                if found:
                    return [True] if exists else found[:1]
            return [False] if exists else []

        return union
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
        return {k: v for k, v in plain.items() if not is_empty(v)}  # inputs may carry None
    if isinstance(value, list):
        return [p for p in map(_plain, value) if not is_empty(p)]
    if isinstance(value, ResourceNode):
        return _plain(value.data)
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_plain(value))


# ---------------------------------------------------------------------- the dialect
class FhirPathDialect:
    """FHIRPath for `mapping.template`: results become plain JSON values (`_plain`)."""

    error = MappingError
    kind = "a FHIRPath expression"

    def value(self, text: str) -> Evaluate:
        expr = Expression(text)

        def values(ctx: Any, env: dict[str, Any]) -> list[Any]:
            out = []
            for v in expr(ctx, env):
                v = _plain(v)
                if not is_empty(v):
                    out.append(v)
            return out

        return values

    def placeholder(self, text: str) -> Evaluate:
        expr = Expression(text)
        return lambda ctx, env: [v for v in expr(ctx, env) if not is_empty(v)]

    def concat(self, pieces: list[Any]) -> str:
        return "".join(p if isinstance(p, str) else _text(p) for p in pieces)

    def when(self, text: str) -> Callable[[Any, dict[str, Any]], bool]:
        expr = Expression(text)
        return lambda ctx, env: expr(ctx, env) == [True]

    def each(self, text: str) -> Evaluate:
        return Expression(text, raw=True)


FHIRPATH = FhirPathDialect()


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
        self._root = compile_template(document["template"], FHIRPATH, name)

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
        with tracing.span("mapping.apply", **{"mapping.name": self.name}):
            found = self._root.values(source, env)
        if not found:
            raise MappingError(f"{self.name} produced nothing")
        return found[0]
