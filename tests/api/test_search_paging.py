"""`first`, `previous` and `next` links: walking back gives exactly the pages walking forward gave.

Keyset paging both ways, for the insertion order, the column sorts and `_sort` keys with missing
values (NULLs sort last forward, so they come first walking back). SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import authorize, make_client
from tests.wor import FHIR_JSON, fresh_bsn, patient

FAMILIES = ["Bakker", None, "Jansen", "de Vries", None, "Bakker", "Smit"]




def walk(client: TestClient, url: str, relation: str) -> list[list[str]]:
    pages: list[list[str]] = []
    while url:
        resp = client.get(url)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append([e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"])
        link = next((lk["url"] for lk in body["link"] if lk["relation"] == relation), None)
        url = "" if link is None else _local(link)
        assert len(pages) < 20
    return pages


def _local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def last_page_url(client: TestClient, url: str) -> str:
    while True:
        body = client.get(url).json()
        nxt = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        if nxt is None:
            return url
        url = _local(nxt)


@pytest.mark.parametrize("sort", [None, "-_lastUpdated", "_id", "family", "-family,birthdate"])
def test_previous_walks_back_over_the_same_pages(database_url: str, sort: str | None) -> None:
    with make_client(database_url) as client:
        authorize(client, "praktijk-de-geinoord-his")
        for i, family in enumerate(FAMILIES):
            body: dict[str, Any] = patient(bsn=fresh_bsn())
            body["birthDate"] = f"19{60 + i % 3}-01-01"
            body["name"] = [{"family": family} if family else {"text": "Onbekend"}]
            assert client.post("/fhir/Patient", json=body, headers=FHIR_JSON).status_code == 201
        url = "/fhir/Patient?_count=3" + (f"&_sort={sort}" if sort else "")
        forward = walk(client, url, "next")
        assert [len(p) for p in forward] == [3, 3, 1]
        assert len({i for p in forward for i in p}) == len(FAMILIES)
        backward = walk(client, last_page_url(client, url), "previous")
        assert backward == forward[::-1]
        first = client.get(url).json()
        assert not any(lk["relation"] == "previous" for lk in first["link"])
