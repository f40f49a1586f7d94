"""`_elements`: a client asks for only some top-level elements of each resource.

Applied to the view the caller may have (after consent minimisation), so a subset never widens
what minimisation withheld. The result is marked SUBSETTED so no client writes it back as if it
were the whole resource.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.vocabulary import OBSERVATION_VALUE

SUBSETTED = {"system": OBSERVATION_VALUE, "code": "SUBSETTED", "display": "subsetted"}
ALWAYS = ("resourceType", "id", "meta")  # what every subset keeps (FHIR search, `_elements`)
_NAME = re.compile(r"[a-z][A-Za-z0-9]*")
MAX_ELEMENTS = 100


def parse_elements(resource_type: str, value: str) -> tuple[str, ...]:
    """The top-level element names of an `_elements` value; `Type.name` is taken for `name` when
    `Type` is the resource searched or read. Anything else (a nested path, a typo'd syntax) is a
    400: silently returning the whole resource would hide the client's mistake."""
    names: list[str] = []
    for raw in (v.strip() for v in value.split(",")):
        if not raw:
            continue
        name = raw.removeprefix(f"{resource_type}.")
        if not _NAME.fullmatch(name) or len(names) >= MAX_ELEMENTS:
            raise FhirError(
                400,
                [
                    error(
                        "invalid",
                        f"_elements takes top-level element names of {resource_type} "
                        f"(at most {MAX_ELEMENTS}); got '{raw[:100]}'",
                        "_elements",
                    )
                ],
            )
        names.append(name)
    return tuple(names)


def subset(content: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `content` with only `elements` (and id, meta, resourceType), tagged SUBSETTED."""
    keep = {*ALWAYS, *elements}
    out = {k: v for k, v in content.items() if k in keep}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out
