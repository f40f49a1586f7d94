"""`_sort` on declared parameters, `_elements`, paging links and strict handling, over HTTP on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FHIR_JSON, authorize
from tests.wor import BSN, DE_BRUG, load_directory, send_referral, task_for

# (family, birthDate or None, gender); duplicates on purpose: the keyset must not skip or repeat
PEOPLE = [
    ("Jansen", "1961-04-12", "female"),
    ("Bakker", "1950-01-01", "male"),
    ("de Vries", None, "female"),
    ("Visser", "1961-04-12", "male"),
    ("Smit", "1999-12-31", None),
    ("Bakker", "1950-01-01", "female"),
    ("Mulder", None, "male"),
]


def _patient(i: int, family: str, born: str | None, gender: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": BSN, "value": "999911120"}, {"system": "urn:sort", "value": str(i)}],
        "name": [{"family": family, "given": ["A"]}],
        "address": [{"postalCode": "3431 AB"}],
    }
    if born:
        res["birthDate"] = born
    if gender:
        res["gender"] = gender
    return res


def _walk(client: TestClient, url: str) -> tuple[list[str], int]:
    """The urn:sort numbers over every page, and how many pages."""
    seen: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        resp = client.get(next_url)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages += 1
        seen += [e["resource"]["identifier"][1]["value"] for e in body.get("entry", [])]
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert "first" in links and "_cursor" not in links["first"]
        next_url = links.get("next", "").replace("http://gateway.test", "") or None
        assert pages < 20
    return seen, pages


def _expected(key: Any, reverse: bool = False) -> list[str]:
    """Python's order: present values by key (reversed when descending), missing last, ties by
    creation (pk ascending)."""
    present = [i for i, p in enumerate(PEOPLE) if key(p) is not None]
    missing = [i for i, p in enumerate(PEOPLE) if key(p) is None]
    present.sort(key=lambda i: i)
    present.sort(key=lambda i: key(PEOPLE[i]), reverse=reverse)
    return [str(i) for i in present + missing]


@pytest.fixture
def people(any_client: TestClient) -> TestClient:
    for i, person in enumerate(PEOPLE):
        resp = any_client.post("/fhir/Patient", json=_patient(i, *person), headers=FHIR_JSON)
        assert resp.status_code == 201, resp.text
    return any_client


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("birthdate", _expected(lambda p: p[1])),
        ("-birthdate", _expected(lambda p: p[1], reverse=True)),
        ("gender", _expected(lambda p: p[2])),
        ("-family", _expected(lambda p: p[0].lower(), reverse=True)),
    ],
)
def test_sort_on_a_parameter_pages_each_match_once(
    people: TestClient, sort: str, expected: list[str]
) -> None:
    seen, pages = _walk(people, f"/fhir/Patient?identifier=urn:sort|&_sort={sort}&_count=2")
    assert seen == expected
    assert pages == 4


def test_sort_on_several_keys(people: TestClient) -> None:
    def key(i: int) -> tuple[Any, ...]:
        family, born, gender = PEOPLE[i]
        return (born is None, born or "", [-ord(c) for c in family.lower()], gender is None, gender or "")

    expected = [str(i) for i in sorted(range(len(PEOPLE)), key=key)]
    seen, pages = _walk(people, "/fhir/Patient?_sort=birthdate,-family,gender&_count=3")
    assert seen == expected and pages == 3


def test_bad_sorts_are_400(client: TestClient) -> None:
    for sort in ("organization", "nonsense", "a,b,c,d", "birthdate,birthdate"):
        resp = client.get(f"/fhir/Patient?_sort={sort}")
        assert resp.status_code == 400, sort
        assert resp.json()["issue"][0]["expression"] == ["_sort"]
    tampered = client.get("/fhir/Patient?_sort=birthdate&_cursor=WyJ4IiwxXQ")  # ["x",1]
    assert tampered.status_code == 400


def test_worklist_sorted_by_authored_on(any_client: TestClient) -> None:
    load_directory(any_client)
    for n, bsn in enumerate(("999911120", "999999151", "999990019")):
        task_for(any_client, send_referral(any_client, referral_id=f"REF-SORT{n}", bsn=bsn)["id"])
    authorize(any_client, "welzijn-de-brug-cms")
    url: str | None = f"/fhir/Task?owner={DE_BRUG}&status=requested&_sort=-authored-on,status&_count=2"
    authored: list[str] = []
    while url:
        body = any_client.get(url).json()
        authored += [e["resource"]["authoredOn"] for e in body.get("entry", [])]
        url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), "")
        url = url.replace("http://gateway.test", "") or None
    assert len(authored) == 3 and authored == sorted(authored, reverse=True)
    forbidden = any_client.get("/fhir/ServiceRequest?_sort=reason-code")
    assert forbidden.status_code == 403
    assert forbidden.json()["issue"][0]["expression"] == ["_sort"]


def _tags(resource: dict[str, Any]) -> list[str]:
    return [t["code"] for t in resource.get("meta", {}).get("tag", [])]


def test_elements_cut_the_minimised_view_never_widen_it(any_client: TestClient) -> None:
    load_directory(any_client)
    sr = send_referral(any_client, referral_id="REF-EL1")
    whole = any_client.get(f"/fhir/ServiceRequest/{sr['id']}?_elements=reasonCode,status").json()
    assert set(whole) == {"resourceType", "id", "meta", "reasonCode", "status"}
    assert "SUBSETTED" in _tags(whole)
    authorize(any_client, "welzijn-de-brug-cms")
    read = any_client.get(f"/fhir/ServiceRequest/{sr['id']}?_elements=reasonCode,status").json()
    assert set(read) == {"resourceType", "id", "meta", "status"}  # the consent withholds reasonCode
    assert "SUBSETTED" in _tags(read) and read["meta"]["security"][0]["code"] == "REDACTED"
    patient = any_client.get(f"/fhir/{sr['subject']['reference']}?_elements=identifier,name").json()
    assert "identifier" not in patient and patient["name"]
    found = any_client.get(f"/fhir/ServiceRequest?_id={sr['id']}&_elements=ServiceRequest.note,reasonCode")
    body = found.json()
    resource = body["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "note"} and "SUBSETTED" in _tags(resource)
    assert "_elements=" in next(lk["url"] for lk in body["link"] if lk["relation"] == "self")
    plain = any_client.get(f"/fhir/ServiceRequest/{sr['id']}").json()
    assert "SUBSETTED" not in _tags(plain) and plain["note"]


def test_bad_elements_are_400(client: TestClient) -> None:
    for value in ("name.family", "Practitioner.name", "na me"):
        resp = client.get(f"/fhir/Patient?_elements={value}")
        assert resp.status_code == 400, value
        assert resp.json()["issue"][0]["expression"] == ["_elements"]
    assert client.get("/fhir/Patient/x?_elements=name.family").status_code in (400, 404)


@pytest.mark.parametrize(
    "query",
    [
        "Task?focus.status=active",  # a chain on a parameter without a declared target, no type
        "Task?owner:Organization.partof:Organization.name=brug",  # two levels of chaining
        "Patient?_has:Task:patient:_has:Communication:about:status=requested",  # nested _has
        "Task?_filter=status eq requested",
    ],
)
def test_unsupported_search_features_are_400_under_strict(client: TestClient, query: str) -> None:
    strict = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert strict.json()["issue"][0]["code"] in ("not-supported", "invalid")
    lenient = client.get(f"/fhir/{query}")
    assert lenient.status_code in (200, 400)
    if lenient.status_code == 200:
        outcomes = [e for e in lenient.json().get("entry", []) if e["search"]["mode"] == "outcome"]
        assert outcomes and outcomes[0]["resource"]["issue"][0]["severity"] == "warning"
