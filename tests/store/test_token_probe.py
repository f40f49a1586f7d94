"""`identifier=system|code` searches take one prepared probe; they must give exactly the rows
(and the next-page answer) the general search SQL gives, on both backends."""

from __future__ import annotations

from fhir_gateway.fhir.search import parse_search
from fhir_gateway.store import search_sql
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository, _stored

SYSTEM = "https://his.example.nl/verwijzing"


def _referral(repo: Repository, *identifiers: tuple[str, str]) -> str:
    stored = repo.create(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": s, "value": v} for s, v in identifiers],
        }
    )
    return stored.id


def test_probe_and_general_search_agree(database: Database) -> None:
    with database.connection(write=True) as s:
        repo = Repository(s)
        a = _referral(repo, (SYSTEM, "R-1"))
        b = _referral(repo, (SYSTEM, "R-1"), (SYSTEM, "R-1"))  # twice on one resource: one match
        _referral(repo, ("https://other.example.nl", "R-1"))  # same code, other system
        gone = _referral(repo, (SYSTEM, "R-1"))
        repo.delete("ServiceRequest", gone)
        _referral(repo, (SYSTEM, "R-2"))

    for count in (1, 2, 5):
        query = parse_search("ServiceRequest", [("identifier", f"{SYSTEM}|R-1"), ("_count", str(count))])
        assert search_sql.token_probe(query) == ("identifier", SYSTEM, "R-1")
        with database.connection(write=False) as s:
            page = Repository(s).search(query)
            general = [_stored(r).id for r in s.execute(search_sql.page_statement(query, s.dialect.name))]
        assert [m.id for m in page.matches] == general[:count] == [a, b][:count]
        assert (page.next_cursor is not None) == (len(general) > count)


def test_other_shapes_keep_the_general_search() -> None:
    def probe(*params: tuple[str, str]) -> object:
        return search_sql.token_probe(parse_search("ServiceRequest", list(params)))

    assert probe(("identifier", "R-1")) is None  # any system
    assert probe(("identifier", f"{SYSTEM}|")) is None  # any code
    assert probe(("identifier", f"{SYSTEM}|R-1,{SYSTEM}|R-2")) is None  # OR
    assert probe(("identifier:not", f"{SYSTEM}|R-1")) is None
    assert probe(("identifier", f"{SYSTEM}|R-1"), ("status", "active")) is None
    assert probe(("identifier", f"{SYSTEM}|R-1"), ("_sort", "-_lastUpdated")) is None
