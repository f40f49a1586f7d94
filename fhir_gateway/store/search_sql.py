"""SQL for FHIR searches: the page, count and _include statements a `SearchQuery` turns into.

Kept apart from `repository.py` so the read path (statement shape, index use, query plans) can
change without touching the write path; `Repository.search` / `count` only execute what this
module builds. Nothing here runs a query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from fhir_gateway.fhir.search import Condition, DateValue, Include, SearchQuery, SortKey, TokenValue
from fhir_gateway.store.index import LAST_UPDATED_PAIRS, pair_param
from fhir_gateway.store.tables import ResourceRow, SearchIndexRow

R = ResourceRow.__table__
IX = SearchIndexRow.__table__

COMPARTMENT = "_compartment"  # index rows naming the organisations that may see a resource


def page_statement(query: SearchQuery, dialect: str = "sqlite") -> sa.Select[Any]:
    """One page of matches (`query.count` + 1 rows, so the caller knows whether a next page exists).

    `dialect` picks the shape each planner runs lazily (see the pair branch)."""
    if query.sort_by == "_keys":
        return _keyed_page(query)
    sort_col: sa.ColumnElement[Any] = {"_pk": R.c.pk, "_lastUpdated": R.c.last_updated, "_id": R.c.id}[
        query.sort_by
    ]
    stmt = sa.select(R).where(filtered(query))
    driver = driving_value(query) if query.sort_by == "_pk" else None
    after = _pk_after(query) if query.sort_by == "_pk" else None
    if driver is not None:
        # Walk one index entry (e.g. owner=X) in pk order and probe the other conditions per
        # row: a page costs about as many probes as it has rows, however large the table.
        param, value = driver
        drv = IX.alias("drv")
        pair = _pair_condition(query, driver)
        where = [
            drv.c.resource_type == query.resource_type,
            drv.c.param == (param if pair is None else pair_param(param)),
            drv.c.value == value,
        ]
        if after is not None:
            where.append(after(drv.c.resource_pk))
        source: Any = drv
        if pair is not None:
            # reference + _lastUpdated: the pair rows of exactly the matches (ix_search_pair),
            # sorted by pk, then probed in that order until the page is full; the resource's own
            # last_updated is still checked. Cost: sorting the pks of the matches, not reading
            # all the recipient's rows.
            where.append(
                sa.or_(*(date_match(v, drv.c.high, drv.c.high) for v in pair.values))  # type: ignore[arg-type]
            )
            candidates = sa.select(drv.c.resource_pk).where(*where)
            if dialect == "sqlite":
                # SQLite walks `pk IN (…)` in sorted order, so ORDER BY pk needs no sort after
                # the probes (a join to a sorted subquery would sort again after probing all).
                stmt = sa.select(R).where(R.c.pk.in_(candidates), filtered(query, skip=driver))
                sort_col = R.c.pk
                order = [sort_col.desc()] if query.sort_desc else [sort_col]
                return stmt.order_by(*order).limit(query.count + 1)
            # PostgreSQL: the sorted pks as a subquery fenced by OFFSET 0 (not flattened), so
            # the probes above it stop at the page size.
            source = (
                candidates.order_by(drv.c.resource_pk.desc() if query.sort_desc else drv.c.resource_pk)
                .offset(0)
                .subquery("drv")
            )
            where = []
        sort_col = source.c.resource_pk
        stmt = (
            sa.select(R)
            .select_from(source.join(R, R.c.pk == source.c.resource_pk))
            .where(*where, filtered(query, skip=driver, pk=source.c.resource_pk))
        )
    elif after is not None:
        stmt = stmt.where(after(sort_col))
    if query.cursor is not None and query.sort_by != "_pk":
        value, pk = query.cursor
        typed: Any = datetime.fromisoformat(value) if query.sort_by == "_lastUpdated" else value
        if query.sort_desc:
            stmt = stmt.where(sa.or_(sort_col < typed, sa.and_(sort_col == typed, R.c.pk < pk)))
        else:
            stmt = stmt.where(sa.or_(sort_col > typed, sa.and_(sort_col == typed, R.c.pk > pk)))
    order = [sort_col.desc(), R.c.pk.desc()] if query.sort_desc else [sort_col, R.c.pk]
    if query.sort_by == "_pk":
        order = order[:1]
    return stmt.order_by(*order).limit(query.count + 1)


def _keyed_page(query: SearchQuery) -> sa.Select[Any]:
    """A page sorted on `query.sort_keys`, then pk (unique, so the keyset is stable however many
    matches share a sort value). Each key on a search parameter is a correlated lookup of the
    match's lowest (ascending) or highest (descending) indexed value, NULL when it has none, and
    NULLs sort last either way. The matches come from the driving index entry (owner=X, the
    compartment) like a pk-ordered page, but all of them are sorted: a page costs the matches of
    the filter, not the table.

    The matches and their sort values are a subquery fenced with OFFSET 0, so each lookup runs
    once per match: the cursor's comparisons and the ORDER BY read its columns instead of
    running the lookups again (which made a second page cost several times the first). The sort
    values are returned as `sort_0`… for the next cursor."""
    driver = driving_value(query)
    if driver is None:
        pk: sa.ColumnElement[Any] = R.c.pk
        keyed = sa.select(pk.label("kpk"))
        where: list[sa.ColumnElement[bool]] = [filtered(query)]
    else:
        drv = IX.alias("drv")
        pk = drv.c.resource_pk
        keyed = sa.select(pk.label("kpk")).select_from(drv.join(R, R.c.pk == drv.c.resource_pk))
        where = [
            drv.c.resource_type == query.resource_type,
            drv.c.param == driver[0],
            drv.c.value == driver[1],
            filtered(query, skip=driver, pk=pk),
        ]
    exprs = [sort_expression(query.resource_type, key, pk) for key in query.sort_keys]
    inner = keyed.add_columns(*(e.label(f"sort_{i}") for i, e in enumerate(exprs))).where(*where)
    matches = inner.offset(0).subquery("keyed")
    cols = [matches.c[f"sort_{i}"] for i in range(len(exprs))]
    stmt = sa.select(R, *cols).select_from(matches.join(R, R.c.pk == matches.c.kpk))
    if query.cursor is not None and query.cursor_keys is not None:
        stmt = stmt.where(_after_keys(query.sort_keys, cols, query.cursor_keys, matches.c.kpk, query.cursor[1]))
    order = [(c.desc() if k.desc else c.asc()).nulls_last() for k, c in zip(query.sort_keys, cols, strict=True)]
    return stmt.order_by(*order, matches.c.kpk).limit(query.count + 1)


def sort_expression(resource_type: str, key: SortKey, pk: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """What a match sorts on for `key`: a resource column, or its lowest / highest index value
    of the parameter (a date's low end ascending, its high end descending)."""
    if key.param is None:
        return R.c.last_updated if key.name == "_lastUpdated" else R.c.id
    column = (IX.c.high if key.desc else IX.c.low) if key.param.type == "date" else IX.c.value
    pick = sa.func.max(column) if key.desc else sa.func.min(column)
    return (
        sa.select(pick)
        .where(IX.c.resource_pk == pk, IX.c.resource_type == resource_type, IX.c.param == key.name)
        .scalar_subquery()
    )


def _after_keys(
    keys: list[SortKey],
    exprs: list[sa.ColumnElement[Any]],
    values: tuple[str | None, ...],
    pk: sa.ColumnElement[Any],
    last_pk: int,
) -> sa.ColumnElement[bool]:
    """Rows after the cursor in (key…, pk) order, NULLs last: some key strictly after the
    cursor's value with all the keys before it equal, or all equal and a larger pk."""
    alternatives: list[sa.ColumnElement[bool]] = []
    equal: list[sa.ColumnElement[bool]] = []
    for key, expr, raw in zip(keys, exprs, values, strict=True):
        if raw is None:  # the cursor is among the rows without this value: nothing sorts after NULL
            equal.append(expr.is_(None))
            continue
        value = _typed(key, raw)
        beyond = expr < value if key.desc else expr > value
        alternatives.append(sa.and_(*equal, sa.or_(expr.is_(None), beyond)))
        equal.append(expr == value)
    alternatives.append(sa.and_(*equal, pk > last_pk))
    return sa.or_(*alternatives)


def _typed(key: SortKey, raw: str) -> Any:
    dated = key.name == "_lastUpdated" or (key.param is not None and key.param.type == "date")
    return datetime.fromisoformat(raw) if dated else raw


def keys_cursor(query: SearchQuery, row: Any) -> tuple[str, int]:
    """The `_keys` cursor after `row` (selected by `_keyed_page`): its sort values as JSON, its pk."""
    values = [row._mapping[f"sort_{i}"] for i in range(len(query.sort_keys))]
    text = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return orjson.dumps(text).decode(), row._mapping["pk"]


def _pk_after(query: SearchQuery) -> Any:
    """The keyset condition of a pk-ordered page, for whichever column carries the pk."""
    if query.cursor is None:
        return None
    pk = query.cursor[1]
    return (lambda col: col < pk) if query.sort_desc else (lambda col: col > pk)


def _pair_condition(query: SearchQuery, driver: tuple[str, str]) -> Condition | None:
    """The `_lastUpdated` condition a (reference, _lastUpdated) pair index can serve with the driver."""
    if driver[0] not in LAST_UPDATED_PAIRS.get(query.resource_type, ()):
        return None
    return next(
        (
            c
            for c in query.conditions
            if c.name == "_lastUpdated" and c.values and all(isinstance(v, DateValue) for v in c.values)
        ),
        None,
    )


def next_cursor(query: SearchQuery, pk: int, last_updated: datetime, rid: str) -> tuple[str, int]:
    """The keyset cursor after the last match of a page (its sort value and pk)."""
    key = {"_pk": str(pk), "_lastUpdated": last_updated.isoformat(), "_id": rid}
    return key[query.sort_by], pk


def count_statement(query: SearchQuery) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(R).where(filtered(query))


def filtered(
    query: SearchQuery,
    skip: tuple[str, str] | None = None,
    pk: sa.ColumnElement[Any] | None = None,
) -> sa.ColumnElement[bool]:
    """The WHERE of a search; `skip` is the (param, value) a driving index join already holds.

    With `pk` (the driving index's resource_pk) every index condition is a probe keyed on it,
    fenced with OFFSET 0 so PostgreSQL keeps it a per-row probe instead of turning it into a
    join over every resource with that value (which is what made its plans grow with the table)."""
    clauses: list[sa.ColumnElement[bool]] = [
        R.c.resource_type == query.resource_type,
        R.c.deleted.is_(False),
    ]
    clauses.extend(
        clause(query.resource_type, c, pk)
        for c in query.conditions
        if skip is None or (c.name, c.values) != (skip[0], (skip[1],))
    )
    if query.compartment is not None and skip != (COMPARTMENT, query.compartment):
        clauses.append(
            _probe(
                sa.select(IX.c.resource_pk).where(
                    IX.c.resource_pk == (R.c.pk if pk is None else pk),
                    IX.c.resource_type == query.resource_type,
                    IX.c.param == COMPARTMENT,
                    IX.c.value == query.compartment,
                ),
                pk,
            )
        )
    return sa.and_(*clauses)


def _probe(rows: sa.Select[Any], pk: sa.ColumnElement[Any] | None) -> sa.Exists:
    return (rows if pk is None else rows.offset(0)).exists()


def clause(
    resource_type: str, cond: Condition, pk: sa.ColumnElement[Any] | None = None
) -> sa.ColumnElement[bool]:
    if cond.kind == "id":
        return R.c.id.in_(list(cond.values))
    if cond.name == "_lastUpdated":
        return sa.or_(
            *(
                date_match(v, R.c.last_updated, R.c.last_updated)  # type: ignore[arg-type]
                for v in cond.values
            )
        )
    rows = sa.select(IX.c.resource_pk).where(
        IX.c.resource_pk == (R.c.pk if pk is None else pk),
        IX.c.resource_type == resource_type,
        IX.c.param == cond.name,
    )
    if cond.kind == "missing":
        exists = _probe(rows, pk)
        return ~exists if cond.values[0] else exists
    if cond.kind == "token":
        match = sa.or_(*(token_match(v) for v in cond.values))  # type: ignore[arg-type]
        exists = _probe(rows.where(match), pk)
        return ~exists if cond.modifier == "not" else exists
    if cond.kind == "reference":
        return _probe(rows.where(IX.c.value.in_(list(cond.values))), pk)
    if cond.kind == "date":
        return _probe(
            rows.where(
                sa.or_(
                    *(
                        date_match(v, IX.c.low, IX.c.high)  # type: ignore[arg-type]
                        for v in cond.values
                    )
                )
            ),
            pk,
        )
    if cond.modifier == "exact":
        return _probe(rows.where(IX.c.text.in_(list(cond.values))), pk)
    pattern = "%{}%" if cond.modifier == "contains" else "{}%"
    return _probe(
        rows.where(
            IX.c.text.is_not(None),  # string rows only: what lets ix_search_string serve the prefix
            sa.or_(*(IX.c.value.like(pattern.format(like_escape(str(v))), escape="\\") for v in cond.values)),
        ),
        pk,
    )


def revinclude_statement(inc: Include, references: list[str]) -> sa.Select[Any]:
    """Resources of `inc.source_type` whose `inc.param` points at one of `references`."""
    return sa.select(R).where(
        R.c.resource_type == inc.source_type,
        R.c.deleted.is_(False),
        sa.select(IX.c.pk)
        .where(IX.c.resource_pk == R.c.pk, IX.c.param == inc.param.name, IX.c.value.in_(references))
        .exists(),
    )


def include_values_statement(inc: Include, pks: list[int]) -> sa.Select[Any]:
    """The references `inc.param` holds in the matched resources (`pks`)."""
    return sa.select(IX.c.value).where(IX.c.resource_pk.in_(pks), IX.c.param == inc.param.name)


def include_targets(inc: Include, values: list[str | None]) -> list[str]:
    """The referenced `Type/id`s an _include should read (only `inc.target_type` if it names one)."""
    return [v for v in values if v and (inc.target_type is None or v.startswith(inc.target_type + "/"))]


def token_probe(query: SearchQuery) -> tuple[str, str, str] | None:
    """(param, system, code) when the search is exactly `param=system|code`, first page in pk
    order, nothing else asked: the lookup behind every conditional create and resend check,
    which `Repository` answers with one prepared probe (confined to `query.compartment` when
    set) instead of building this module's SQL."""
    if (
        len(query.conditions) != 1
        or query.cursor is not None
        or query.sort_by != "_pk"
        or query.sort_desc
        or query.includes
        or query.total
    ):
        return None
    cond = query.conditions[0]
    if cond.kind != "token" or cond.modifier is not None or len(cond.values) != 1:
        return None
    value = cond.values[0]
    if not isinstance(value, TokenValue) or not value.system or value.code is None:
        return None
    return cond.name, value.system, value.code


def driving_value(query: SearchQuery) -> tuple[str, str] | None:
    """A single-valued reference condition (owner=X, recipient=Y, …) or else the compartment:
    each resource has at most one index row for it, so joining on it yields no duplicates."""
    for cond in query.conditions:
        if cond.kind == "reference" and len(cond.values) == 1:
            return cond.name, str(cond.values[0])
    if query.compartment is not None:
        return COMPARTMENT, query.compartment
    return None


def token_match(value: TokenValue) -> sa.ColumnElement[bool]:
    parts: list[sa.ColumnElement[bool]] = []
    if value.code is not None:
        parts.append(IX.c.value == value.code)
    if value.system == "":
        parts.append(IX.c.system.is_(None))
    elif value.system is not None:
        parts.append(IX.c.system == value.system)
    return sa.and_(*parts)


def date_match(
    value: DateValue, low: sa.ColumnElement[Any], high: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    p = value.range
    match value.prefix:
        case "eq":
            return sa.and_(low >= p.low, high <= p.high)
        case "ne":
            return sa.or_(low < p.low, high > p.high)
        case "gt":
            return high > p.high
        case "lt":
            return low < p.low
        case "ge":
            return high >= p.low
        case "le":
            return low <= p.high
        case "sa":
            return low > p.high
        case _:  # eb
            return high < p.low


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
