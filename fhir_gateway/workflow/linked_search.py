"""Chained parameters and `_has`, one level deep, inside the caller's compartment.

`Task?focus:ServiceRequest.status=active` and `ServiceRequest?_has:Task:focus:status=requested`
each hold a search on another type. That search runs first, as the caller (its scope, its
compartment, its view's searchable elements), and its matches become a plain condition of the
outer search: the references of the chained matches, or the ids the `_has` matches point to.
So a chain can only ever narrow by what the caller may already see, and the outer search is
confined as always. At most `MAX_LINKED` matches per linked search (400 `too-costly` beyond).
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.search import Condition, Include, SearchQuery
from fhir_gateway.store.repository import SearchPage

MAX_LINKED = 1000
_NOTHING = "-none-"  # an id no resource has: a linked search without matches matches nothing


def resolve(query: SearchQuery, run: Callable[[SearchQuery], SearchPage]) -> None:
    """Replace each chain / `_has` condition of `query` by what its search finds (`run`: the
    caller's confined search)."""
    for i, cond in enumerate(query.conditions):
        if cond.kind not in ("chain", "has"):
            continue
        sub = cond.values[0]
        assert isinstance(sub, SearchQuery) and cond.param is not None
        sub.count = MAX_LINKED + 1
        if cond.kind == "has":
            sub.includes = [Include(sub.resource_type, cond.param, query.resource_type)]
        page = run(sub)
        if len(page.matches) > MAX_LINKED:
            raise FhirError(
                400,
                [
                    error(
                        "too-costly",
                        f"The search on {sub.resource_type} behind '{cond.name}' matches more than "
                        f"{MAX_LINKED}: narrow it",
                        cond.name,
                    )
                ],
            )
        if cond.kind == "chain":
            refs = tuple(m.reference for m in page.matches) or (f"{sub.resource_type}/{_NOTHING}",)
            query.conditions[i] = Condition(cond.name, "reference", None, refs, cond.param)
        else:
            ids = tuple(s.id for s in page.included if s.resource_type == query.resource_type) or (_NOTHING,)
            query.conditions[i] = Condition("_id", "id", None, ids)
