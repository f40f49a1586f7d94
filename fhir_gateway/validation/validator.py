"""Check a FHIR resource dict against the WoR profiles and the base-spec rules the models miss.

Input is a resource (or Bundle) dict that already passed the fhir.resources model, so element
names and data types are right. This module adds what the models let through:

- JSON `null`, empty arrays/objects/strings anywhere (FHIR forbids them);
- required bindings of the base specification (status, intent, Bundle.type, request.method, ...)
  listed in `core_bindings.json`, applied to every resource with or without a profile;
- BSN 11-test and AGB format on every identifier with those systems, and unknown codes of the
  local WoR CodeSystems wherever they are used;
- the WoR profile of the resource (from meta.profile, else the CapabilityStatement default):
  cardinality, fixed/pattern values, slices, bindings, reference target types, FHIRPath invariants.

Bundle entries and contained resources are checked as resources in their own right, with
expressions such as `Bundle.entry[2].resource.status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_gateway import tracing
from fhir_gateway.fhir.outcome import Invalid, Issue, error, warning
from fhir_gateway.validation.bsn import is_valid_bsn
from fhir_gateway.validation.profiles import (
    ElementRule,
    Profile,
    ProfileSet,
    ValueSetIndex,
    canonical,
    pattern_matches,
)
from fhir_gateway.vocabulary import AGB, BSN, CORE_VALUE_SET

CORE_BINDINGS_FILE = Path(__file__).with_name("core_bindings.json")


def default_profiles_dir() -> Path:
    """`<repo>/profiles`, where the WoR conformance resources live."""
    return Path(__file__).resolve().parents[2] / "profiles"


@dataclass(frozen=True, slots=True)
class _CoreBinding:
    steps: tuple[str, ...]
    valueset: str
    codes: frozenset[str]


def load_core_bindings(path: Path = CORE_BINDINGS_FILE) -> dict[str, tuple[_CoreBinding, ...]]:
    """Resource type -> the base-spec required bindings to enforce ('*' entries merged into each)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    valuesets = {k: frozenset(v) for k, v in doc["valueSets"].items()}

    def compile_(paths: dict[str, str]) -> list[_CoreBinding]:
        return [_CoreBinding(tuple(p.split(".")), vs, valuesets[vs]) for p, vs in paths.items()]

    common = compile_(doc["bindings"].get("*", {}))
    out = {"*": tuple(common)}
    for rtype, paths in doc["bindings"].items():
        if rtype != "*":
            out[rtype] = (*common, *compile_(paths))
    return out


def _describe(fixed: Any) -> str:
    return json.dumps(fixed, ensure_ascii=False, separators=(",", ":"))


def _reference_type(ref: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, when its literal reference shows it."""
    literal = ref.get("reference")
    if isinstance(literal, str) and literal and literal[0] != "#" and not literal.startswith("urn:"):
        parts = literal.split("/_history/", 1)[0].split("/")
        if len(parts) >= 2:
            return parts[-2]
    return None


class Validator:
    """Validates resource dicts; build once at start-up, then call `validate` per request."""

    def __init__(self, profiles: ProfileSet, core_bindings_file: Path = CORE_BINDINGS_FILE) -> None:
        self.profiles = profiles
        self._core = load_core_bindings(core_bindings_file)
        self._local_codes = {url: cs.codes for url, cs in profiles.codesystems.items()}
        self._local_names = {url: cs.name for url, cs in profiles.codesystems.items()}

    @classmethod
    def from_directory(cls, directory: Path | None = None) -> Validator:
        """Load profiles from `directory` (default: `default_profiles_dir()`)."""
        return cls(ProfileSet.load(directory or default_profiles_dir()))

    # ------------------------------------------------------------------ public API

    def validate(self, resource: dict[str, Any], profile: str | None = None) -> list[Issue]:
        """All issues (errors and warnings) of `resource`; `profile` forces that profile canonical."""
        if not isinstance(resource, dict):
            return [error("structure", "A FHIR resource must be a JSON object")]
        issues: list[Issue] = []
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            issues.append(error("structure", "The resource has no resourceType", None))
            rtype = "Resource"
        with tracing.span("validation.validate", **{"fhir.resource_type": rtype[:64]}) as span:
            self._check_resource(resource, rtype, rtype, issues, profile, use_default=True)
            self._walk(resource, rtype, issues)
            if len(issues) > 1:
                issues = _dedupe(issues)
            span.set_attribute("validation.errors", sum(1 for i in issues if i.is_error))
        return issues

    def ensure_valid(self, resource: dict[str, Any], profile: str | None = None) -> list[Issue]:
        """Raise `Invalid` (HTTP 422) when there is any error; otherwise return the warnings."""
        issues = self.validate(resource, profile)
        if any(i.is_error for i in issues):
            raise Invalid(issues, status=422)
        return issues

    # ------------------------------------------------------------------ per resource

    def _check_resource(
        self,
        res: dict[str, Any],
        rtype: str,
        expr: str,
        issues: list[Issue],
        explicit: str | None = None,
        use_default: bool = True,
    ) -> None:
        for binding in self._core.get(rtype, self._core["*"]):
            self._check_core(res, binding, 0, expr, rtype, issues)
        for prof in self._select_profiles(res, rtype, expr, issues, explicit, use_default):
            self._check_rules(prof.children, res, expr, prof, issues)
            for inv in prof.invariants:
                try:
                    holds = inv.holds(res)
                except Exception as exc:  # fhirpathpy raises assorted types on odd data
                    issues.append(
                        error(
                            "processing",
                            f"{prof.name}: invariant {inv.key} could not be evaluated ({exc})",
                            expr,
                        )
                    )
                    continue
                if not holds:
                    severity = inv.severity if inv.severity in ("error", "warning") else "error"
                    issues.append(
                        Issue(
                            severity,
                            "invariant",
                            f"{prof.name} {inv.key}: {inv.human} [{inv.expression}]",
                            expr,
                        )
                    )
        if rtype == "Bundle":
            for i, entry in enumerate(res.get("entry") or ()):
                inner = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(inner, dict):
                    itype = inner.get("resourceType")
                    iexpr = f"{expr}.entry[{i}].resource"
                    if not isinstance(itype, str):
                        issues.append(error("structure", "Bundle entry resource has no resourceType", iexpr))
                        continue
                    self._check_resource(inner, itype, iexpr, issues)
        contained = res.get("contained")
        if isinstance(contained, list):
            for i, inner in enumerate(contained):
                if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str):
                    self._check_resource(
                        inner, inner["resourceType"], f"{expr}.contained[{i}]", issues, use_default=False
                    )

    def _select_profiles(
        self,
        res: dict[str, Any],
        rtype: str,
        expr: str,
        issues: list[Issue],
        explicit: str | None,
        use_default: bool,
    ) -> list[Profile]:
        """Known claimed profiles; else the type's default (so claiming an unknown one never bypasses it)."""
        selected: list[Profile] = []
        if explicit:
            prof = self.profiles.profiles.get(canonical(explicit))
            if prof is None:
                issues.append(error("not-supported", f"Profile {explicit} is not known to the gateway", expr))
            elif prof.type != rtype:
                issues.append(error("invalid", f"Profile {prof.name} is for {prof.type}, not {rtype}", expr))
            else:
                selected.append(prof)
        meta = res.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        if isinstance(claimed, list):
            for i, url in enumerate(claimed):
                if not isinstance(url, str):
                    continue
                prof = self.profiles.profiles.get(canonical(url))
                where = f"{expr}.meta.profile[{i}]"
                if prof is None:
                    issues.append(
                        warning(
                            "not-supported", f"Claimed profile {url} is not known; it was not checked", where
                        )
                    )
                elif prof.type != rtype:
                    issues.append(
                        error(
                            "invalid", f"Claimed profile {prof.name} is for {prof.type}, not {rtype}", where
                        )
                    )
                elif prof not in selected:
                    selected.append(prof)
        if not selected and use_default and not explicit:
            default = self.profiles.profile_for(rtype)
            if default is not None:
                selected.append(default)
        return selected

    # ------------------------------------------------------------------ profile rules

    def _check_rules(
        self, rules: list[ElementRule], parent: dict[str, Any], pexpr: str, prof: Profile, issues: list[Issue]
    ) -> None:
        for rule in rules:
            key: str | None = rule.key
            if rule.choice:
                key = _choice_key(parent, rule.key)
                if key is not None and rule.choice_keys and key not in rule.choice_keys:
                    issues.append(
                        error(
                            "value",
                            f"{prof.name}: {rule.eid} may only be {', '.join(rule.choice_keys)}, not {key}",
                            f"{pexpr}.{key}",
                        )
                    )
            val = parent.get(key) if key is not None else None
            is_list = isinstance(val, list)
            items: list[Any] | tuple[Any, ...] = val if is_list else (() if val is None else (val,))
            count = len(items)
            where = f"{pexpr}.{key or rule.key + '[x]'}"
            if count < rule.min:
                issues.append(
                    error(
                        "required",
                        f"{prof.name}: {rule.eid} requires at least {rule.min} value(s), found {count}",
                        where,
                    )
                )
            if rule.max is not None and count > rule.max:
                issues.append(
                    error(
                        "structure",
                        f"{prof.name}: {rule.eid} allows at most {rule.max} value(s), found {count}",
                        where,
                    )
                )
            if count:
                checks, children = rule.has_checks, rule.children
                if checks or children:
                    for i, item in enumerate(items):
                        iexpr = f"{where}[{i}]" if is_list else where
                        if checks:
                            self._check_value(rule, item, iexpr, prof, issues)
                        if children and isinstance(item, dict):
                            self._check_rules(children, item, iexpr, prof, issues)
            for sl in rule.slices:
                members = [(i, item) for i, item in enumerate(items) if sl.matches(item)]
                if len(members) < sl.min:
                    issues.append(
                        error(
                            "required",
                            f"{prof.name}: slice {sl.rule.eid} requires at least {sl.min} matching value(s), "
                            f"found {len(members)}",
                            where,
                        )
                    )
                if sl.max is not None and len(members) > sl.max:
                    issues.append(
                        error(
                            "structure",
                            f"{prof.name}: slice {sl.rule.eid} allows at most {sl.max} value(s), "
                            f"found {len(members)}",
                            where,
                        )
                    )
                for i, item in members:
                    iexpr = f"{where}[{i}]" if is_list else where
                    if sl.rule.has_checks:
                        self._check_value(sl.rule, item, iexpr, prof, issues)
                    if sl.rule.children and isinstance(item, dict):
                        self._check_rules(sl.rule.children, item, iexpr, prof, issues)

    def _check_value(
        self, rule: ElementRule, item: Any, expr: str, prof: Profile, issues: list[Issue]
    ) -> None:
        if rule.fixed is not None and item != rule.fixed:
            issues.append(
                error("value", f"{prof.name}: {rule.eid} must be exactly {_describe(rule.fixed)}", expr)
            )
        if rule.pattern is not None and not pattern_matches(item, rule.pattern):
            issues.append(
                error(
                    "value", f"{prof.name}: {rule.eid} must match the pattern {_describe(rule.pattern)}", expr
                )
            )
        if rule.binding is not None:
            self._check_binding(rule, rule.binding, item, expr, prof, issues)
        if rule.target_types and isinstance(item, dict):
            targets = rule.target_types
            for found, where in (
                (_reference_type(item), f"{expr}.reference"),
                (item.get("type"), f"{expr}.type"),
            ):
                if isinstance(found, str) and found not in targets:
                    issues.append(
                        error(
                            "value",
                            f"{prof.name}: {rule.eid} must reference {' | '.join(sorted(targets))}, not {found}",
                            where,
                        )
                    )

    def _check_binding(
        self, rule: ElementRule, vs: ValueSetIndex, item: Any, expr: str, prof: Profile, issues: list[Issue]
    ) -> None:
        required = rule.binding_strength == "required"
        severity = "error" if required else "warning"
        what = (
            f"{prof.name}: {rule.eid} has a {rule.binding_strength} binding to ValueSet {vs.name} ({vs.url})"
        )
        if isinstance(item, str):  # FHIR type code
            if not vs.contains_code(item):
                issues.append(Issue(severity, "code-invalid", f"{what}; '{item}' is not in it", expr))
            return
        if not isinstance(item, dict):
            return
        if "system" in item or "code" in item:  # Coding
            if not vs.contains(item.get("system"), item.get("code")):
                issues.append(
                    Issue(
                        severity,
                        "code-invalid",
                        f"{what}; {item.get('system')}|{item.get('code')} is not in it",
                        f"{expr}.code",
                    )
                )
            return
        codings = item.get("coding") or []  # CodeableConcept
        if any(isinstance(c, dict) and vs.contains(c.get("system"), c.get("code")) for c in codings):
            return
        near = [
            i
            for i, c in enumerate(codings)
            if isinstance(c, dict) and c.get("system") in vs.systems and required
        ]
        if near:  # the right code system with a wrong code: point at those codes
            for i in near:
                issues.append(
                    Issue(
                        severity,
                        "code-invalid",
                        f"{what}; code '{codings[i].get('code')}' is not in it",
                        f"{expr}.coding[{i}].code",
                    )
                )
        else:
            issues.append(Issue(severity, "code-invalid", f"{what}; none of the codings is from it", expr))

    # ------------------------------------------------------------------ base-spec required bindings

    def _check_core(
        self, node: Any, binding: _CoreBinding, depth: int, expr: str, rtype: str, issues: list[Issue]
    ) -> None:
        if not isinstance(node, dict):
            return
        key = binding.steps[depth]
        val = node.get(key)
        if val is None:
            return
        last = depth == len(binding.steps) - 1
        items = val if isinstance(val, list) else (val,)
        for i, item in enumerate(items):
            iexpr = f"{expr}.{key}[{i}]" if isinstance(val, list) else f"{expr}.{key}"
            if not last:
                self._check_core(item, binding, depth + 1, iexpr, rtype, issues)
            elif isinstance(item, str) and item not in binding.codes:
                issues.append(
                    error(
                        "code-invalid",
                        f"{rtype}.{'.'.join(binding.steps)} has a required binding to {CORE_VALUE_SET}"
                        f"{binding.valueset}; '{item}' is not one of: {', '.join(sorted(binding.codes))}",
                        iexpr,
                    )
                )

    # ------------------------------------------------------------------ whole-document walk

    def _walk(self, node: dict[str, Any], expr: str, issues: list[Issue]) -> None:
        """Empty/null values, BSN/AGB identifiers and local-CodeSystem codes, at any depth."""
        if not node:
            issues.append(error("structure", "Empty JSON objects are not allowed in FHIR", expr))
            return
        system = node.get("system")
        if type(system) is str:
            if system in (BSN, AGB):
                self._check_identifier(system, node.get("value"), f"{expr}.value", issues)
            elif system in self._local_codes:
                code = node.get("code")
                if isinstance(code, str) and code not in self._local_codes[system]:
                    issues.append(
                        error(
                            "code-invalid",
                            f"Code '{code}' is not defined in CodeSystem {self._local_names[system]} ({system})",
                            f"{expr}.code",
                        )
                    )
        for key, val in node.items():
            kind = type(val)
            if kind is dict:
                self._walk(val, f"{expr}.{key}", issues)
            elif kind is list:
                if not val:
                    issues.append(
                        error("structure", f"Empty array '{key}' is not allowed in FHIR", f"{expr}.{key}")
                    )
                    continue
                sibling = None
                for i, item in enumerate(val):
                    ikind = type(item)
                    if ikind is dict:
                        self._walk(item, f"{expr}.{key}[{i}]", issues)
                    elif item is None:
                        # null is allowed in an array only to line up primitive values with `_key` extensions
                        if sibling is None:
                            sibling = node.get(key[1:] if key.startswith("_") else "_" + key)
                        if not (isinstance(sibling, list) and i < len(sibling) and sibling[i] is not None):
                            issues.append(
                                error(
                                    "structure",
                                    f"null in '{key}' without a matching value",
                                    f"{expr}.{key}[{i}]",
                                )
                            )
                    elif ikind is str and not item:
                        issues.append(
                            error("structure", "Empty strings are not allowed in FHIR", f"{expr}.{key}[{i}]")
                        )
            elif val is None:
                issues.append(
                    error("structure", f"'{key}' is null; omit the element instead", f"{expr}.{key}")
                )
            elif kind is str and not val:
                issues.append(error("structure", "Empty strings are not allowed in FHIR", f"{expr}.{key}"))

    @staticmethod
    def _check_identifier(system: str, value: Any, expr: str, issues: list[Issue]) -> None:
        if not isinstance(value, str):
            return
        if system == BSN:
            if not is_valid_bsn(value):
                issues.append(
                    error("value", f"'{value}' is not a valid BSN (9 digits passing the 11-test)", expr)
                )
        elif not (len(value) == 8 and value.isascii() and value.isdigit()):
            issues.append(error("value", f"'{value}' is not a valid AGB code (8 digits)", expr))


def _choice_key(parent: dict[str, Any], prefix: str) -> str | None:
    """The JSON name used for choice element `prefix[x]` (e.g. occurrenceDateTime), if present."""
    n = len(prefix)
    for k in parent:
        if len(k) > n and k.startswith(prefix) and k[n].isupper():
            return k
    return None


def _dedupe(issues: list[Issue]) -> list[Issue]:
    """One code-invalid issue per element: a profile binding and the CodeSystem check can coincide.

    The profile's issue comes first (it names the binding), so it is the one kept.
    """
    seen: set[str | None] = set()
    out = []
    for issue in issues:
        if issue.code == "code-invalid":
            if issue.expression in seen:
                continue
            seen.add(issue.expression)
        out.append(issue)
    return out
