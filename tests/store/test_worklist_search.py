"""The two worklist searches on both backends: the driving-index plans (probes fenced with
OFFSET 0, the (recipient, _lastUpdated) pair rows) must return exactly the confined matches, in pk
order, page after page — including resources whose last update is much newer than their pk."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from fhir_gateway.fhir.search import SearchQuery, parse_search
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository, Stored
from fhir_gateway.store.tables import SearchIndexRow

IX = SearchIndexRow.__table__

WELFARE_A, WELFARE_B = "Organization/welzijn-a", "Organization/welzijn-b"
PRACTICE = "Organization/praktijk-p"
ROLE, OTHER_ROLE = "PractitionerRole/huisarts-p", "PractitionerRole/huisarts-q"


def _pages(database: Database, query: SearchQuery) -> list[list[str]]:
    """Every page of `query`, following the keyset cursor like the `next` link does."""
    pages: list[list[str]] = []
    while True:
        with database.connection(write=False) as s:
            page = Repository(s).search(query)
        pages.append([m.id for m in page.matches])
        if page.next_cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"
        query.cursor = page.next_cursor


def _task(repo: Repository, owner: str, status: str, visible_to: str) -> Stored:
    stored = repo.create(
        {"resourceType": "Task", "status": status, "intent": "order", "owner": {"reference": owner}}
    )
    repo.grant(stored, [visible_to])
    return stored


def test_owner_and_status_worklist_pages_the_confined_matches(database: Database) -> None:
    statuses = ["requested", "accepted", "requested", "completed", "requested"]
    expected: list[str] = []
    with database.connection(write=True) as s:
        repo = Repository(s)
        for i in range(20):
            status = statuses[i % len(statuses)]
            mine = _task(repo, WELFARE_A, status, WELFARE_A)
            _task(repo, WELFARE_B, "requested", WELFARE_B)  # another owner's worklist
            if status == "requested":
                expected.append(mine.id)
        # owned by A, requested, but not in A's compartment: confinement hides it
        _task(repo, WELFARE_A, "requested", WELFARE_B)
        # was requested, now accepted: the status index row followed the update
        moved = _task(repo, WELFARE_A, "requested", WELFARE_A)
        repo.update({**moved.content, "status": "accepted"})
        gone = _task(repo, WELFARE_A, "requested", WELFARE_A)
        repo.delete("Task", gone.id)

    query = parse_search("Task", [("owner", WELFARE_A), ("status", "requested"), ("_count", "5")])
    query.compartment = WELFARE_A
    pages = _pages(database, query)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [rid for p in pages for rid in p] == expected


def _communication(repo: Repository, recipients: list[str], visible_to: str) -> Stored:
    stored = repo.create(
        {
            "resourceType": "Communication",
            "status": "completed",
            "recipient": [{"reference": r} for r in recipients],
        }
    )
    repo.grant(stored, [visible_to])
    return stored


def _second_between() -> str:
    """A whole second that starts after everything written so far and ends before anything
    written afterwards (`gt`/`lt` with a second compare against its last / first µs)."""
    time.sleep(1.02 - datetime.now(UTC).microsecond / 1_000_000)
    bound = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.02 - datetime.now(UTC).microsecond / 1_000_000)
    return bound


def test_recipient_and_last_updated_inbox_pages_the_confined_matches(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        old = [_communication(repo, [ROLE, PRACTICE], PRACTICE) for _ in range(4)]
    bound = _second_between()
    with database.connection(write=True) as s:
        repo = Repository(s)
        # an old Communication updated after the bound: low pk, recent last_updated
        repo.update({**old[1].content, "status": "in-progress"})
        new = [_communication(repo, [ROLE, PRACTICE], PRACTICE) for _ in range(5)]
        _communication(repo, [OTHER_ROLE, PRACTICE], PRACTICE)  # to someone else
        _communication(repo, [ROLE], "Organization/praktijk-q")  # addressed to ROLE, not visible to P
        deleted = _communication(repo, [ROLE, PRACTICE], PRACTICE)
        repo.delete("Communication", deleted.id)

    query = parse_search(
        "Communication", [("recipient", ROLE), ("_lastUpdated", f"gt{bound}"), ("_count", "2")]
    )
    query.compartment = PRACTICE
    pages = _pages(database, query)
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [rid for p in pages for rid in p] == [old[1].id] + [c.id for c in new]

    # the same with the bound before everything: all of them, still in pk order
    query = parse_search(
        "Communication", [("recipient", ROLE), ("_lastUpdated", "gt2000-01-01"), ("_count", "4")]
    )
    query.compartment = PRACTICE
    assert [rid for p in _pages(database, query) for rid in p] == [c.id for c in old + new]

    # lt: only what was not touched since the bound
    query = parse_search("Communication", [("recipient", ROLE), ("_lastUpdated", f"lt{bound}")])
    query.compartment = PRACTICE
    assert _pages(database, query) == [[old[0].id, old[2].id, old[3].id]]


def _pair_rows(database: Database) -> list[tuple[object, ...]]:
    with database.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(IX.c.resource_pk, IX.c.param, IX.c.value, IX.c.low, IX.c.high)
                .where(IX.c.param.startswith("_lastUpdated|"))
                .order_by(IX.c.resource_pk, IX.c.value)
            )
        ]


def test_migration_0005_backfills_the_pair_rows_index_rows_writes(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        updated = _communication(repo, [ROLE, PRACTICE], PRACTICE)
        repo.update({**updated.content, "status": "in-progress"})
        _task(repo, WELFARE_A, "requested", WELFARE_A)
        deleted = _communication(repo, [ROLE], PRACTICE)
        repo.delete("Communication", deleted.id)
    written = _pair_rows(database)
    assert len(written) == 3  # two recipients of one Communication, one Task owner
    config = database._alembic_config()
    for step, target in ((command.downgrade, "0004"), (command.upgrade, "head")):
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, target)
        if target == "0004":
            assert _pair_rows(database) == []
    assert _pair_rows(database) == written
