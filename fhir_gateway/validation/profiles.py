"""Load the WoR conformance resources in `profiles/` into structures that validate fast.

Everything expensive happens once in `ProfileSet.load`: ValueSets are expanded into membership
sets, FHIRPath invariants are compiled, and each StructureDefinition's differential becomes a tree
of `ElementRule`s that `Validator` walks alongside the instance. Validation itself then does no
parsing, no file access and no ValueSet expansion.

Supported subset of the conformance resources (anything else fails loudly at load time):
- StructureDefinition differentials with min/max, fixed[x]/pattern[x], type (choice restriction
  and Reference targetProfile), binding (required / extensible; preferred and example are
  informative), constraint on the root element, and slicing with `value`/`pattern`
  discriminators on `$this` or a child path.
- Invariants run as FHIRPath (fhirpathpy), or as a Python twin from `fastpaths.py` while the
  expression is exactly the one the twin was written for.
- ValueSet compose.include with a whole local CodeSystem, a concept list, include.valueSet, or an
  `is-a` filter (on a local CodeSystem: the code and its descendants; on ICPC-1 NL, which is not
  held locally: the code and its dotted sub-codes, `Z12` covers `Z12.01`); compose.exclude with
  concept lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhir_gateway.validation.fastpaths import FAST_PATHS
from fhir_gateway.vocabulary import CORE_STRUCTURE_DEFINITION, ICPC

# External code systems whose hierarchy is written in the code itself: "Z12.01" is a child of "Z12".
DOTTED_HIERARCHY_SYSTEMS = frozenset({ICPC})

_FHIRPATH_MODEL = models["r4"]


class ProfileError(ValueError):
    """A conformance resource in profiles/ that the gateway cannot use (a deployment error)."""


def canonical(url: str) -> str:
    """Drop a `|version` suffix: the gateway holds one version of each canonical."""
    return url.split("|", 1)[0]


# ----------------------------------------------------------------------------- terminology


@dataclass(frozen=True, slots=True)
class CodeSystemIndex:
    url: str
    name: str
    codes: frozenset[str]
    descendants: dict[str, frozenset[str]]  # code -> the code and all its descendants


@dataclass(slots=True)
class ValueSetIndex:
    """An expanded ValueSet: (system, code) pairs plus dotted is-a roots for external systems."""

    url: str
    name: str
    pairs: frozenset[tuple[str, str]] = frozenset()
    dotted_roots: frozenset[tuple[str, str]] = frozenset()
    systems: frozenset[str] = frozenset()
    bare_codes: frozenset[str] = frozenset()  # for `code`-typed elements (no system in the instance)

    def contains(self, system: str | None, code: str | None) -> bool:
        """Is system|code a member? Sub-codes of a dotted is-a root are members too."""
        if not system or not code:
            return False
        if (system, code) in self.pairs:
            return True
        if self.dotted_roots and system in DOTTED_HIERARCHY_SYSTEMS:
            while "." in code:
                code = code.rpartition(".")[0]
                if (system, code) in self.dotted_roots:
                    return True
        return False

    def contains_code(self, code: str) -> bool:
        """Membership of a bare `code` (elements of FHIR type code carry no system)."""
        return code in self.bare_codes


def _index_codesystem(res: dict[str, Any]) -> CodeSystemIndex:
    codes: set[str] = set()
    descendants: dict[str, frozenset[str]] = {}

    def visit(concepts: list[dict[str, Any]]) -> set[str]:
        seen: set[str] = set()
        for concept in concepts:
            code = concept["code"]
            below = visit(concept.get("concept", []))
            descendants[code] = frozenset({code, *below})
            codes.add(code)
            seen |= {code, *below}
        return seen

    visit(res.get("concept", []))
    return CodeSystemIndex(canonical(res["url"]), res.get("name", res["id"]), frozenset(codes), descendants)


Pairs = set[tuple[str, str]]  # (system, code)


def _expand(
    url: str,
    raw: dict[str, dict[str, Any]],
    codesystems: dict[str, CodeSystemIndex],
    done: dict[str, ValueSetIndex],
    busy: tuple[str, ...] = (),
) -> ValueSetIndex:
    """Expand one ValueSet (recursively through include.valueSet) into a `ValueSetIndex`."""
    if url in done:
        return done[url]
    if url in busy:
        raise ProfileError(f"ValueSet {url} includes itself (via {' -> '.join(busy)})")
    if url not in raw:
        raise ProfileError(f"ValueSet {url} is referenced but not in profiles/")
    vs = raw[url]
    compose = vs.get("compose") or {}
    pairs: Pairs = set()
    roots: Pairs = set()
    for inc in compose.get("include", []):
        p, r = _include(url, inc, raw, codesystems, done, busy)
        pairs |= p
        roots |= r
    for exc in compose.get("exclude", []):
        if not exc.get("concept") or exc.get("filter") or exc.get("valueSet"):
            raise ProfileError(f"ValueSet {url}: only concept lists are supported in compose.exclude")
        pairs -= {(exc["system"], c["code"]) for c in exc["concept"]}
    index = ValueSetIndex(
        url=url,
        name=vs.get("name", vs["id"]),
        pairs=frozenset(pairs),
        dotted_roots=frozenset(roots),
        systems=frozenset(s for s, _ in pairs),
        bare_codes=frozenset(c for _, c in pairs),
    )
    done[url] = index
    return index


def _include(
    url: str,
    inc: dict[str, Any],
    raw: dict[str, dict[str, Any]],
    codesystems: dict[str, CodeSystemIndex],
    done: dict[str, ValueSetIndex],
    busy: tuple[str, ...],
) -> tuple[Pairs, Pairs]:
    """One compose.include of ValueSet `url`: its (system, code) pairs and its dotted is-a roots."""
    system = inc.get("system")
    if inc.get("valueSet"):
        if system:
            raise ProfileError(f"ValueSet {url}: include with both system and valueSet is not supported")
        pairs: Pairs = set()
        roots: Pairs = set()
        for sub_url in inc["valueSet"]:
            sub = _expand(canonical(sub_url), raw, codesystems, done, (*busy, url))
            pairs |= sub.pairs
            roots |= sub.dotted_roots
        return pairs, roots
    if not system:
        raise ProfileError(f"ValueSet {url}: include without system or valueSet")
    cs = codesystems.get(system)
    if inc.get("concept"):
        if inc.get("filter"):
            raise ProfileError(f"ValueSet {url}: include with both concept and filter (vsd-3)")
        return _include_concepts(url, system, inc["concept"], cs), set()
    if inc.get("filter"):
        return _include_filters(url, system, inc["filter"], cs)
    if cs is None:
        raise ProfileError(f"ValueSet {url}: includes all of {system}, which is not in profiles/")
    return {(system, c) for c in cs.codes}, set()


def _include_concepts(
    url: str, system: str, concepts: list[dict[str, Any]], cs: CodeSystemIndex | None
) -> Pairs:
    """An enumerated include; every code must be in the CodeSystem when we hold it."""
    pairs: Pairs = set()
    for concept in concepts:
        if cs is not None and concept["code"] not in cs.codes:
            raise ProfileError(f"ValueSet {url}: code {concept['code']} is not in CodeSystem {system}")
        pairs.add((system, concept["code"]))
    return pairs


def _include_filters(
    url: str, system: str, filters: list[dict[str, Any]], cs: CodeSystemIndex | None
) -> tuple[Pairs, Pairs]:
    """`concept is-a` filters: descendants from a CodeSystem we hold, else a dotted root (ICPC-style
    hierarchies checked by prefix); one filter per include, since several would be ANDed."""
    pairs: Pairs = set()
    roots: Pairs = set()
    for flt in filters:
        if flt.get("op") != "is-a" or flt.get("property") != "concept":
            raise ProfileError(f"ValueSet {url}: only 'concept is-a' filters are supported, got {flt}")
        value = flt["value"]
        if cs is not None:
            if value not in cs.codes:
                raise ProfileError(f"ValueSet {url}: is-a {value} is not in CodeSystem {system}")
            pairs |= {(system, c) for c in cs.descendants[value]}
        elif system in DOTTED_HIERARCHY_SYSTEMS:
            pairs.add((system, value))
            roots.add((system, value))
        else:
            raise ProfileError(f"ValueSet {url}: cannot evaluate is-a on {system} (not held locally)")
    if len(filters) > 1:
        raise ProfileError(f"ValueSet {url}: use one filter per include (filters would be ANDed)")
    return pairs, roots


# ----------------------------------------------------------------------------- profiles


@dataclass(slots=True)
class Invariant:
    key: str
    severity: str  # error | warning
    human: str
    expression: str
    evaluate: Callable[..., list[Any]]  # the compiled FHIRPath (the authority)
    holds: Callable[[dict[str, Any]], bool]  # what the validator calls: a fast twin, or `evaluate`

    @property
    def has_fast_path(self) -> bool:
        return (self.key, self.expression) in FAST_PATHS


@dataclass(slots=True)
class SliceRule:
    name: str
    min: int
    max: int | None
    rule: ElementRule
    matches: Callable[[Any], bool] = lambda _v: False


@dataclass(slots=True)
class ElementRule:
    """What the profile says about one element (and, through `children`, about its descendants)."""

    eid: str  # the ElementDefinition id, quoted in messages
    key: str  # JSON property name; for a choice element the part before [x]
    choice: bool = False
    choice_keys: tuple[str, ...] | None = None  # allowed JSON names of a choice element, None = any
    min: int = 0
    max: int | None = None  # None = unbounded / not constrained
    fixed: Any = None
    pattern: Any = None
    binding_strength: str | None = None
    binding: ValueSetIndex | None = None
    target_types: frozenset[str] | None = None
    children: list[ElementRule] = field(default_factory=list)
    slices: list[SliceRule] = field(default_factory=list)
    discriminators: list[tuple[str, str]] = field(default_factory=list)  # (type, path)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def has_checks(self) -> bool:
        return bool(
            self.fixed is not None
            or self.pattern is not None
            or self.binding is not None
            or self.target_types
            or (self.choice and self.choice_keys)
        )


@dataclass(slots=True)
class Profile:
    url: str
    name: str
    type: str
    invariants: list[Invariant]
    children: list[ElementRule]


def _type_key(code: str) -> str:
    return code[:1].upper() + code[1:]


def pattern_matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every property of the pattern is present (lists: each item found)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and pattern_matches(value[k], pv) for k, pv in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(pattern_matches(v, p) for v in items) for p in pattern)
    return value == pattern


def _fixed_or_pattern(el: dict[str, Any]) -> tuple[Any, Any]:
    fixed = next((v for k, v in el.items() if k.startswith("fixed")), None)
    pattern = next((v for k, v in el.items() if k.startswith("pattern")), None)
    return fixed, pattern


class _ProfileBuilder:
    """Turns one StructureDefinition differential into a `Profile` tree."""

    def __init__(
        self, sd: dict[str, Any], valuesets: dict[str, ValueSetIndex], profile_types: dict[str, str]
    ) -> None:
        self.sd = sd
        self.valuesets = valuesets
        self.profile_types = profile_types
        self.url = canonical(sd["url"])
        self.type = sd["type"]

    def build(self) -> Profile:
        elements = self.sd.get("differential", {}).get("element", [])
        root = ElementRule(eid=self.type, key=self.type)
        nodes: dict[str, ElementRule] = {self.type: root}
        invariants: list[Invariant] = []
        for el in elements:
            eid = el.get("id") or el["path"]
            if eid == self.type:
                invariants = [self._invariant(c) for c in el.get("constraint", [])]
                continue
            if el.get("constraint"):
                raise ProfileError(f"{self.url}: constraints are only supported on the root element ({eid})")
            if not eid.startswith(self.type + "."):
                raise ProfileError(f"{self.url}: element {eid} is outside {self.type}")
            parent_id, _, last = eid.rpartition(".")
            parent = self._node(parent_id, nodes)
            name, _, slice_name = last.partition(":")
            if slice_name:
                sliced = self._node(f"{parent_id}.{name}", nodes)
                rule = self._rule(eid, name, el)
                sliced.slices.append(
                    SliceRule(slice_name, rule.min, rule.max, rule)
                )  # matcher set after all children are known
                nodes[eid] = rule
                continue
            if eid in nodes:  # created implicitly as a parent; fill it in now
                self._fill(nodes[eid], el)
            else:
                rule = self._rule(eid, name, el)
                nodes[eid] = rule
                parent.children.append(rule)
        for node in nodes.values():
            for sl in node.slices:
                sl.matches = self._slice_matcher(node, sl)
        return Profile(self.url, self.sd["name"], self.type, invariants, root.children)

    def _node(self, eid: str, nodes: dict[str, ElementRule]) -> ElementRule:
        """The rule for `eid`, creating constraint-free ancestors the differential skipped."""
        if eid in nodes:
            return nodes[eid]
        parent_id, _, last = eid.rpartition(".")
        if not parent_id:
            raise ProfileError(f"{self.url}: bad element id {eid}")
        parent = self._node(parent_id, nodes)
        name, _, slice_name = last.partition(":")
        if slice_name:
            raise ProfileError(f"{self.url}: slice {eid} used before it is defined")
        rule = self._rule(eid, name, {})
        nodes[eid] = rule
        parent.children.append(rule)
        return rule

    def _rule(self, eid: str, name: str, el: dict[str, Any]) -> ElementRule:
        choice = name.endswith("[x]")
        rule = ElementRule(eid=eid, key=name[:-3] if choice else name, choice=choice)
        self._fill(rule, el)
        return rule

    def _fill(self, rule: ElementRule, el: dict[str, Any]) -> None:
        rule.raw = el
        if "min" in el:
            rule.min = int(el["min"])
        if "max" in el and el["max"] != "*":
            rule.max = int(el["max"])
        rule.fixed, rule.pattern = _fixed_or_pattern(el)
        types = el.get("type") or []
        if rule.choice and types:
            rule.choice_keys = tuple(rule.key + _type_key(t["code"]) for t in types)
        targets: set[str] = set()
        for t in types:
            for tp in t.get("targetProfile", []):
                tp = canonical(tp)
                if tp.startswith(CORE_STRUCTURE_DEFINITION):
                    targets.add(tp[len(CORE_STRUCTURE_DEFINITION) :])
                elif tp in self.profile_types:
                    targets.add(self.profile_types[tp])
                else:
                    raise ProfileError(f"{self.url}: {rule.eid} targets unknown profile {tp}")
        if targets and "Resource" not in targets:
            rule.target_types = frozenset(targets)
        binding = el.get("binding")
        if binding and binding.get("strength") in ("required", "extensible"):
            vs_url = canonical(binding.get("valueSet", ""))
            if vs_url not in self.valuesets:
                raise ProfileError(f"{self.url}: {rule.eid} is bound to unknown ValueSet {vs_url!r}")
            rule.binding_strength = binding["strength"]
            rule.binding = self.valuesets[vs_url]
        slicing = el.get("slicing")
        if slicing:
            for d in slicing.get("discriminator", []):
                if d["type"] not in ("value", "pattern"):
                    raise ProfileError(f"{self.url}: {rule.eid}: discriminator type {d['type']} unsupported")
                rule.discriminators.append((d["type"], d["path"]))

    def _slice_matcher(self, sliced: ElementRule, sl: SliceRule) -> Callable[[Any], bool]:
        if not sliced.discriminators:
            raise ProfileError(f"{self.url}: slice {sl.rule.eid} has no discriminator on {sliced.eid}")
        checks: list[tuple[tuple[str, ...], Any, bool]] = []  # (path, expected, is_fixed)
        for _dtype, path in sliced.discriminators:
            if path == "$this":
                target: ElementRule | None = sl.rule
                steps: tuple[str, ...] = ()
            else:
                steps = tuple(path.split("."))
                target = sl.rule
                for step in steps:
                    target = next((c for c in target.children if c.key == step), None) if target else None
            if target is None or (target.fixed is None and target.pattern is None):
                raise ProfileError(f"{self.url}: slice {sl.rule.eid} gives no value for discriminator {path}")
            is_fixed = target.fixed is not None
            checks.append((steps, target.fixed if is_fixed else target.pattern, is_fixed))

        def matches(value: Any) -> bool:
            for steps, expected, is_fixed in checks:
                v = value
                for step in steps:
                    v = v.get(step) if isinstance(v, dict) else None
                if v is None or not (v == expected if is_fixed else pattern_matches(v, expected)):
                    return False
            return True

        return matches

    def _invariant(self, c: dict[str, Any]) -> Invariant:
        expr = c.get("expression")
        if not expr:
            raise ProfileError(f"{self.url}: constraint {c.get('key')} has no FHIRPath expression")
        try:
            fn = fhirpathpy.compile(expr, _FHIRPATH_MODEL)
            # The parser is lenient; unknown functions and wrong arity only show when evaluated.
            fn({"resourceType": self.type}, {"resource": {"resourceType": self.type}})
        except Exception as exc:  # fhirpathpy raises assorted types
            raise ProfileError(f"{self.url}: constraint {c['key']} does not compile: {exc}") from exc
        holds = FAST_PATHS.get((c["key"], expr)) or _fhirpath_holds(fn)
        return Invariant(c["key"], c.get("severity", "error"), c.get("human", ""), expr, fn, holds)


def _fhirpath_holds(fn: Callable[..., list[Any]]) -> Callable[[dict[str, Any]], bool]:
    """An invariant holds when its expression evaluates to exactly `[true]`."""
    return lambda res: fn(res, {"resource": res}) == [True]


# ----------------------------------------------------------------------------- the set


@dataclass(slots=True)
class ProfileSet:
    """All conformance resources of one profiles/ directory, indexed by canonical url."""

    profiles: dict[str, Profile]
    valuesets: dict[str, ValueSetIndex]
    codesystems: dict[str, CodeSystemIndex]
    default_profiles: dict[str, str]  # resource type -> profile url (from the CapabilityStatement)
    structure_definitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> ProfileSet:
        """Read every *.json in `directory`; raise `ProfileError` on anything unusable."""
        resources = cls._read(directory)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for res in resources:
            by_type.setdefault(res.get("resourceType", ""), []).append(res)

        codesystems = {}
        for cs in by_type.get("CodeSystem", []):
            idx = _index_codesystem(cs)
            codesystems[idx.url] = idx
        raw_vs = {canonical(vs["url"]): vs for vs in by_type.get("ValueSet", [])}
        valuesets: dict[str, ValueSetIndex] = {}
        for url in raw_vs:
            _expand(url, raw_vs, codesystems, valuesets)

        sds = {canonical(sd["url"]): sd for sd in by_type.get("StructureDefinition", [])}
        profile_types = {url: sd["type"] for url, sd in sds.items()}
        profiles: dict[str, Profile] = {}
        for url, sd in sds.items():
            if sd.get("kind") != "resource":
                continue  # extension and data-type definitions: kept for reference, not enforced here
            if sd.get("derivation") != "constraint":
                raise ProfileError(f"{url}: only constraint profiles of resources are supported")
            profiles[url] = _ProfileBuilder(sd, valuesets, profile_types).build()

        defaults: dict[str, str] = {}
        for cap in by_type.get("CapabilityStatement", []):
            for rest in cap.get("rest", [])[:1]:
                for entry in rest.get("resource", []):
                    if "profile" not in entry:
                        continue
                    url = canonical(entry["profile"])
                    if url not in profiles:
                        raise ProfileError(f"CapabilityStatement {cap.get('id')}: unknown profile {url}")
                    if profiles[url].type != entry["type"]:
                        raise ProfileError(
                            f"CapabilityStatement {cap.get('id')}: {url} is not a {entry['type']}"
                        )
                    defaults[entry["type"]] = url
        return cls(profiles, valuesets, codesystems, defaults, sds)

    @staticmethod
    def _read(directory: Path) -> list[dict[str, Any]]:
        files = sorted(Path(directory).glob("*.json"))
        if not files:
            raise ProfileError(f"no conformance resources (*.json) in {directory}")
        out = []
        for path in files:
            try:
                res = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ProfileError(f"{path.name}: {exc}") from exc
            if not isinstance(res, dict) or "resourceType" not in res:
                raise ProfileError(f"{path.name}: not a FHIR resource")
            out.append(res)
        return out

    def profile_for(self, resource_type: str) -> Profile | None:
        """The profile the gateway enforces for a type when the instance claims none it knows."""
        url = self.default_profiles.get(resource_type)
        return self.profiles[url] if url else None

    def iter_bindings(self) -> Iterable[tuple[str, str, str]]:
        """(profile url, element id, ValueSet url) of every enforced binding; for tests and docs."""
        for profile in self.profiles.values():
            stack = list(profile.children)
            while stack:
                rule = stack.pop()
                if rule.binding is not None:
                    yield profile.url, rule.eid, rule.binding.url
                stack.extend(rule.children)
                stack.extend(s.rule for s in rule.slices)
