"""Search parameter definitions (`searchparams.yaml`) and the values they pick from a resource.

Paths are a FHIRPath subset (dotted names, `|` unions) walked by hand: a compiled FHIRPath
evaluation costs ~100 µs, this costs a few µs, and indexing runs on every write.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

SEARCHPARAMS_FILE = Path(__file__).with_name("searchparams.yaml")
COMMON_PARAMS = ("_id", "_lastUpdated")


@dataclass(frozen=True, slots=True)
class SearchParam:
    resource_type: str
    name: str
    type: str  # token | reference | date | string
    paths: tuple[tuple[str, ...], ...]
    targets: tuple[str, ...] = ()

    @property
    def expression(self) -> str:
        return " | ".join(f"{self.resource_type}." + ".".join(p) for p in self.paths)


@dataclass(frozen=True, slots=True)
class Token:
    system: str | None
    code: str


@dataclass(frozen=True, slots=True)
class StringValue:
    normalised: str
    text: str


@dataclass(frozen=True, slots=True)
class DateRange:
    low: datetime  # naive UTC
    high: datetime


@cache
def load_search_params(path: Path = SEARCHPARAMS_FILE) -> dict[str, dict[str, SearchParam]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    result: dict[str, dict[str, SearchParam]] = {}
    for resource_type, params in raw.items():
        result[resource_type] = {
            name: SearchParam(
                resource_type=resource_type,
                name=name,
                type=spec["type"],
                paths=tuple(tuple(p.strip().split(".")) for p in spec["path"].split("|")),
                targets=tuple(spec.get("target", ())),
            )
            for name, spec in params.items()
        }
    return result


def supported_types() -> tuple[str, ...]:
    return tuple(load_search_params())


# -- value extraction per parameter type ---------------------------------------------------------


def tokens(value: Any) -> Iterator[Token]:
    if isinstance(value, bool):
        yield Token(None, "true" if value else "false")
    elif isinstance(value, str):
        yield Token(None, value)
    elif isinstance(value, dict):
        if "coding" in value:  # CodeableConcept
            for coding in value["coding"]:
                yield from tokens(coding)
        elif "code" in value:  # Coding
            yield Token(value.get("system"), value["code"])
        elif "value" in value:  # Identifier
            yield Token(value.get("system"), str(value["value"]))


def references(value: Any, base_url: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            normalised = normalise_reference(ref, base_url)
            if normalised:
                yield normalised


_RELATIVE_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def points_to(reference: str | None, targets: tuple[str, ...]) -> bool:
    """Whether a (normalised) reference names a resource of one of `targets`: a parameter such as
    Provenance `patient` is `target.where(resolve() is Patient)`, not every target."""
    match = _RELATIVE_REF.search(reference) if reference else None
    return match is not None and match.group(1) in targets


@lru_cache(maxsize=4096)  # pure; the same references recur in every resource of a referral (~1.5 MB)
def normalise_reference(ref: str, base_url: str = "") -> str | None:
    """`Task/1`, `https://us/fhir/Task/1`, `Task/1/_history/2` → `Task/1`; contained (`#x`) → None.

    Absolute references to other servers are kept whole, so they never match a local resource.
    """
    if not ref or ref.startswith("#"):
        return None
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        return ref
    if "://" in ref and not (base_url and ref.startswith(base_url.rstrip("/") + "/")):
        return ref
    match = _RELATIVE_REF.search(ref)
    return f"{match.group(1)}/{match.group(2)}" if match else ref


def normalise_string(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def strings(value: Any) -> Iterator[StringValue]:
    if isinstance(value, str):
        yield StringValue(normalise_string(value), value)
    elif isinstance(value, dict):
        for key in (
            "text",
            "family",
            "given",
            "prefix",
            "suffix",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
        ):
            item = value.get(key)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    yield StringValue(normalise_string(text), text)


_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,  # \d is [0-9]: int() would read other scripts' digits (fullwidth, Arabic-Indic)
)


_TICK = timedelta(microseconds=1)


def _last_before(start: Callable[[], datetime]) -> datetime:
    """The instant before `start()`; datetime.max when that lies past year 9999."""
    try:
        return start() - _TICK
    except (OverflowError, ValueError):  # datetime(10000, ...) or 9999-12-31 + 1 day
        return datetime.max


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, clamped to datetime.min / max at the ends of the calendar."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def parse_date_range(text: str) -> DateRange:
    """The instant range a FHIR date/dateTime/instant covers at its precision (naive UTC).

    Clamped at the calendar's ends: `9999-12-31` ends at datetime.max and
    `0001-01-01T00:00:00+01:00` starts at datetime.min; the next day / the UTC shift used to be
    an OverflowError, a 500 when such a date was stored (birthDate) or searched."""
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    y = int(year)
    if month is None:
        low = datetime(y, 1, 1)
        return DateRange(low, _last_before(lambda: datetime(y + 1, 1, 1)))
    mo = int(month)
    if day is None:
        low = datetime(y, mo, 1)
        return DateRange(low, _last_before(lambda: datetime(y + (mo == 12), mo % 12 + 1, 1)))
    d = int(day)
    if hour is None:
        low = datetime(y, mo, d)
        return DateRange(low, _last_before(lambda: low + timedelta(days=1)))
    micro = int((fraction or ".0")[1:].ljust(6, "0")[:6])
    base = datetime(y, mo, d, int(hour), int(minute), int(second or 0), micro)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        base = _shifted(base, -sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    if second is None:
        return DateRange(base, _last_before(lambda: base + timedelta(minutes=1)))
    if fraction is None:
        return DateRange(base, _last_before(lambda: base + timedelta(seconds=1)))
    return DateRange(base, base)


def dates(value: Any) -> Iterator[DateRange]:
    try:
        if isinstance(value, str):
            yield parse_date_range(value)
        elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
            low = parse_date_range(value["start"]).low if "start" in value else datetime.min
            high = parse_date_range(value["end"]).high if "end" in value else datetime.max
            yield DateRange(low, high)
    except ValueError:
        return


def utc_now() -> datetime:
    """Naive UTC 'now' as the store keeps it (microsecond precision)."""
    return datetime.now(UTC).replace(tzinfo=None)


def format_instant(moment: datetime) -> str:
    """Naive UTC datetime → FHIR instant with milliseconds precision kept to microseconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
