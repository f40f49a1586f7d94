"""The social map: GP practices, welfare organisations and their WoR services, in memory.

Built once from the directory resources (a transaction Bundle or stored resources) and then only
read, so every lookup the router and the workflow need is a dict access. The postcode coverage of
the WoR services is indexed per PC4 area, which keeps a lookup O(ranges in that area).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fhir_gateway.fhir.outcome import fail
from fhir_gateway.vocabulary import (
    CATEGORY,
    COVERAGE_URL,
    DIRECTORY_TYPES,
    ENDPOINT_CONNECTION_TYPE,
    ORGANIZATION_TYPE_NL,
    REGION_URL,
    Category,
)

DEFAULT_REGION = "default"

# A GP practice is recognised by the Dutch organisation type (RoleCodeNL) "Z3 Huisartspraktijk".
GP_PRACTICE_CODE = "Z3"

FHIR_REST = "hl7-fhir-rest"
HL7V2_MLLP = "hl7v2-mllp"

_PC4 = re.compile(r"^[1-9][0-9]{3}$")
_PC6 = re.compile(r"^[1-9][0-9]{3}[A-Z]{2}$")
_LEADING_DIGITS = re.compile(r"^(\d+)")
_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def normalise_postcode(value: str | None) -> str | None:
    """'1012 nx' -> '1012NX'; None when it is not a Dutch PC4 or PC6 postcode."""
    if not value:
        return None
    pc = "".join(value.split()).upper()
    return pc if _PC6.match(pc) or _PC4.match(pc) else None


def house_number(value: str | int | None) -> int | None:
    """The number part of a Dutch house number: '12A' -> 12, '12-14' -> 12, 'bis' -> None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = _LEADING_DIGITS.match(value.strip())
    return int(m.group(1)) if m else None


def has_coding(concepts: Iterable[dict[str, Any]] | None, system: str, code: str) -> bool:
    """True when any CodeableConcept in `concepts` carries system#code."""
    return any(
        c.get("system") == system and c.get("code") == code
        for concept in concepts or ()
        for c in concept.get("coding", ())
    )


def split_reference(reference: str | None) -> tuple[str, str] | None:
    """'HealthcareService/x' or 'https://host/fhir/HealthcareService/x/_history/2' -> (type, id)."""
    if not reference or reference.startswith("#"):
        return None
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


@dataclass(frozen=True, slots=True)
class CoverageRange:
    """One wor-coverage extension: an inclusive postcode range, optionally narrowed by house numbers."""

    service_id: str
    organization_id: str
    municipality: str
    postcode_from: str
    postcode_to: str
    house_from: int | None = None
    house_to: int | None = None

    @property
    def is_pc6(self) -> bool:
        return len(self.postcode_from) == 6

    @property
    def has_house_numbers(self) -> bool:
        return self.house_from is not None or self.house_to is not None

    @property
    def level(self) -> int:
        """Specificity: 4 = PC6 + house numbers, 3 = PC6, 2 = PC4 + house numbers, 1 = PC4."""
        return (2 if self.is_pc6 else 0) + (2 if self.has_house_numbers else 1)

    @property
    def width(self) -> int:
        """How many postcodes (PC4 or PC6) and house numbers the range spans; narrower wins a tie."""
        a, b = self.postcode_from, self.postcode_to
        span = int(b[:4]) - int(a[:4])
        if self.is_pc6:
            span = span * 676 + (_letters(b[4:]) - _letters(a[4:]))
        houses = (self.house_to or 99999) - (self.house_from or 1)
        return span * 100000 + houses

    def pc4_keys(self) -> range:
        return range(int(self.postcode_from[:4]), int(self.postcode_to[:4]) + 1)

    def matches(self, postcode: str, number: int | None) -> bool:
        key = postcode if self.is_pc6 else postcode[:4]
        if len(key) != len(self.postcode_from) or not self.postcode_from <= key <= self.postcode_to:
            return False
        if not self.has_house_numbers:
            return True
        if number is None:
            return False  # a house-number range cannot be decided without a number
        lo = self.house_from if self.house_from is not None else 1
        hi = self.house_to if self.house_to is not None else 10**9
        return lo <= number <= hi


def _letters(two: str) -> int:
    return (ord(two[0]) - 65) * 26 + (ord(two[1]) - 65)


class Directory:
    """Read-only index over the directory resources; see module docstring."""

    def __init__(self) -> None:
        self._by_ref: dict[str, dict[str, Any]] = {}
        self._coverage: dict[int, list[CoverageRange]] = defaultdict(list)
        self._ranges: list[CoverageRange] = []
        self._services_by_org: dict[str, list[str]] = defaultdict(list)
        self._roles_by_practitioner: dict[str, list[str]] = defaultdict(list)
        self.registered: frozenset[str] = frozenset()  # `Type/id` a practice registered for itself
        self._org_by_identifier: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_resources(
        cls, resources: Iterable[dict[str, Any]], *, registered: frozenset[str] = frozenset()
    ) -> Directory:
        """Index the directory resource types; other resource types are ignored. `registered`:
        the Practitioner(Role) records practices registered for themselves (not public)."""
        d = cls()
        d.registered = registered
        for res in resources:
            rtype, rid = res.get("resourceType"), res.get("id")
            if rtype not in DIRECTORY_TYPES:
                continue
            if not rid:
                raise fail(422, "required", f"A directory {rtype} needs an id", f"{rtype}.id")
            d._by_ref[f"{rtype}/{rid}"] = res
        for ref, res in d._by_ref.items():
            rid = ref.split("/", 1)[1]
            rtype = res["resourceType"]
            if rtype == "Organization":
                for ident in res.get("identifier", ()):
                    if ident.get("system") and ident.get("value"):
                        d._org_by_identifier[(ident["system"], ident["value"])] = rid
            elif rtype == "HealthcareService":
                org = split_reference((res.get("providedBy") or {}).get("reference"))
                if org and org[0] == "Organization":
                    d._services_by_org[org[1]].append(rid)
                if d.is_wor_service(res):
                    d._index_coverage(res, org[1] if org else "")
            elif rtype == "PractitionerRole":
                prac = split_reference((res.get("practitioner") or {}).get("reference"))
                if prac:
                    d._roles_by_practitioner[prac[1]].append(rid)
        for ranges in d._coverage.values():
            ranges.sort(key=lambda r: (-r.level, r.width, r.service_id))
        return d

    @classmethod
    def from_bundle(cls, bundle: dict[str, Any]) -> Directory:
        """A (transaction or collection) Bundle such as examples/directory/directory.json."""
        return cls.from_resources(e["resource"] for e in bundle.get("entry", ()) if "resource" in e)

    def _index_coverage(self, service: dict[str, Any], org_id: str) -> None:
        sid = service["id"]
        for i, ext in enumerate(e for e in service.get("extension", ()) if e.get("url") == COVERAGE_URL):
            where = f"HealthcareService.extension('{COVERAGE_URL}')[{i}]"
            parts = {s.get("url"): s for s in ext.get("extension", ())}

            def value(name: str, parts: dict[str, Any] = parts) -> Any:
                sub = parts.get(name) or {}
                return sub.get("valueString", sub.get("valueInteger"))

            pc_from = normalise_postcode(value("postcodeFrom"))
            pc_to = normalise_postcode(value("postcodeTo") or value("postcodeFrom"))
            municipality = value("municipality")
            if not pc_from or not pc_to or len(pc_from) != len(pc_to) or pc_from > pc_to:
                raise fail(422, "invalid", f"HealthcareService/{sid}: bad postcode range", where)
            if not municipality:
                raise fail(422, "required", f"HealthcareService/{sid}: range without municipality", where)
            rng = CoverageRange(
                sid, org_id, municipality, pc_from, pc_to, value("houseNumberFrom"), value("houseNumberTo")
            )
            if rng.house_from is not None and rng.house_to is not None and rng.house_from > rng.house_to:
                raise fail(422, "invalid", f"HealthcareService/{sid}: bad house-number range", where)
            self._ranges.append(rng)
            for key in rng.pc4_keys():
                self._coverage[key].append(rng)

    # ------------------------------------------------------------------ lookups
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._by_ref.values())

    def __len__(self) -> int:
        return len(self._by_ref)

    def __contains__(self, reference: str) -> bool:
        return self.resolve(reference) is not None

    def resolve(self, reference: str | None) -> dict[str, Any] | None:
        """The resource a (relative or absolute) literal reference points at, if it is in the directory."""
        parts = split_reference(reference)
        return self._by_ref.get(f"{parts[0]}/{parts[1]}") if parts else None

    def get(self, resource_type: str, rid: str) -> dict[str, Any] | None:
        return self._by_ref.get(f"{resource_type}/{rid}")

    def service(self, rid: str) -> dict[str, Any] | None:
        return self.get("HealthcareService", rid)

    def organization(self, rid: str) -> dict[str, Any] | None:
        return self.get("Organization", rid)

    def organization_by_identifier(self, system: str, value: str) -> dict[str, Any] | None:
        """Organization by AGB / URA / KvK identifier (logical references, HL7 v2 senders)."""
        rid = self._org_by_identifier.get((system, value))
        return self.organization(rid) if rid else None

    @staticmethod
    def is_wor_service(service: dict[str, Any]) -> bool:
        """A WoR service is an active HealthcareService with category wor-category#social-prescribing."""
        return (
            service.get("resourceType") == "HealthcareService"
            and service.get("active", True) is not False
            and has_coding(service.get("category"), CATEGORY, Category.SOCIAL_PRESCRIBING)
        )

    @staticmethod
    def is_gp_practice(org: dict[str, Any]) -> bool:
        return has_coding(org.get("type"), ORGANIZATION_TYPE_NL, GP_PRACTICE_CODE)

    def wor_services(self) -> list[dict[str, Any]]:
        return [r for r in self._by_ref.values() if self.is_wor_service(r)]

    def services_of(self, org_id: str, wor_only: bool = True) -> list[dict[str, Any]]:
        """HealthcareServices provided by an Organization (by default only WoR ones)."""
        out = [self._by_ref[f"HealthcareService/{sid}"] for sid in self._services_by_org.get(org_id, ())]
        return [s for s in out if self.is_wor_service(s)] if wor_only else out

    def region_of(self, service: dict[str, Any]) -> str:
        """The wor-region extension value, or 'default'."""
        for ext in service.get("extension", ()):
            if ext.get("url") == REGION_URL and _REGION_NAME.match(ext.get("valueString") or ""):
                return ext["valueString"]
        return DEFAULT_REGION

    def municipalities_of(self, service_id: str) -> list[str]:
        return sorted({r.municipality for r in self._ranges if r.service_id == service_id})

    def practices_of(self, reference: str) -> list[dict[str, Any]]:
        """The GP practices (Organizations) a Practitioner, PractitionerRole or Organization belongs to."""
        parts = split_reference(reference)
        if not parts:
            return []
        rtype, rid = parts
        if rtype == "Organization":
            org = self.organization(rid)
            return [org] if org else []
        if rtype == "PractitionerRole":
            roles = [self.get("PractitionerRole", rid)]
        elif rtype == "Practitioner":
            roles = [self.get("PractitionerRole", r) for r in self._roles_by_practitioner.get(rid, ())]
        else:
            return []
        out: list[dict[str, Any]] = []
        for role in roles:
            if role and role.get("active", True) is not False:
                org = self.resolve((role.get("organization") or {}).get("reference"))
                if org and org not in out:
                    out.append(org)
        return out

    def practice_of(self, reference: str) -> dict[str, Any] | None:
        """The one practice behind a requester; None when unknown or ambiguous (several practices)."""
        orgs = self.practices_of(reference)
        return orgs[0] if len(orgs) == 1 else None

    def endpoints_of(self, org_id: str, connection_type: str | None = None) -> list[dict[str, Any]]:
        """Active endpoints of an organisation; `connection_type` 'hl7-fhir-rest' or 'hl7v2-mllp'."""
        org = self.organization(org_id) or {}
        out = []
        for ref in org.get("endpoint", ()):
            ep = self.resolve(ref.get("reference"))
            if not ep or ep.get("status") != "active":
                continue
            ct = ep.get("connectionType") or {}
            if ct.get("system") != ENDPOINT_CONNECTION_TYPE:
                continue
            if connection_type is None or ct.get("code") == connection_type:
                out.append(ep)
        return out

    def coverage_for(self, postcode: str, number: int | None = None) -> list[CoverageRange]:
        """Matching coverage ranges for a normalised postcode, most specific first.

        Ordering: specificity level (PC6+house > PC6 > PC4+house > PC4), then the narrower range,
        then the service id (only to be deterministic; the router treats a tie as ambiguous).
        """
        pc = normalise_postcode(postcode)
        if not pc:
            return []
        return [r for r in self._coverage.get(int(pc[:4]), ()) if r.matches(pc, number)]

    def coverage_conflicts(self) -> list[tuple[CoverageRange, CoverageRange]]:
        """Pairs of ranges of different services with the same level and width that overlap.

        Such pairs make routing ambiguous for some addresses; `fhir-gateway load` can warn on them.
        """
        out = []
        seen = set()
        for ranges in self._coverage.values():
            for i, a in enumerate(ranges):
                for b in ranges[i + 1 :]:
                    if a.service_id == b.service_id or (a.level, a.width) != (b.level, b.width):
                        continue
                    if _overlap(a, b) and (a, b) not in seen:
                        seen.add((a, b))
                        out.append((a, b))
        return out


def _overlap(a: CoverageRange, b: CoverageRange) -> bool:
    if a.postcode_to < b.postcode_from or b.postcode_to < a.postcode_from:
        return False
    a_lo, a_hi = a.house_from or 1, a.house_to or 10**9
    b_lo, b_hi = b.house_from or 1, b.house_to or 10**9
    return not (a_hi < b_lo or b_hi < a_lo)
