"""Hostile input never gets a 500: random JSON, mutated resources and Bundles, odd paths and headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import directory_client
from tests.wor import FHIR_JSON, patient, referral_bundle

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
TYPES = st.sampled_from(
    ["Patient", "ServiceRequest", "Task", "Bundle", "Consent", "Communication", "Bogus", ""]
)
FIELDS = st.sampled_from(
    [
        "resourceType",
        "id",
        "identifier",
        "subject",
        "status",
        "entry",
        "request",
        "meta",
        "reference",
        "extension",
        "code",
        "valueString",
        "address",
        "item",
        "fullUrl",
    ]
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with directory_client(tmp_path_factory.mktemp("fuzz") / "g.db") as c:
        yield c


def mutate(doc: Any, path: list[str | int], value: Any) -> Any:
    """Replace the value at `path` (as far as it exists) with `value`."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(head, str):
        return {**doc, head: mutate(doc.get(head), rest, value)}
    if isinstance(doc, list) and isinstance(head, int) and doc:
        i = head % len(doc)
        return [*doc[:i], mutate(doc[i], rest, value), *doc[i + 1 :]]
    return value


def check(resp: Any) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        body = resp.json()
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON, rtype=TYPES)
def test_random_json_bodies(client: TestClient, body: Any, rtype: str) -> None:
    check(client.post(f"/fhir/{rtype}" if rtype else "/fhir", content=orjson.dumps(body), headers=FHIR_JSON))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(FIELDS | st.integers(0, 5), min_size=1, max_size=5), value=JSON)
def test_mutated_referral_bundles(client: TestClient, path: list[str | int], value: Any) -> None:
    bundle = mutate(referral_bundle(), ["entry", 2, "resource", *path], value)
    check(client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON))
    other = mutate(referral_bundle(), ["entry", *path], value)
    check(client.post("/fhir", content=orjson.dumps(other), headers=FHIR_JSON))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(FIELDS, min_size=1, max_size=3), value=JSON)
def test_mutated_resources(client: TestClient, path: list[str], value: Any) -> None:
    check(
        client.post(
            "/fhir/Patient", content=orjson.dumps(mutate(patient(), list(path), value)), headers=FHIR_JSON
        )
    )
    check(
        client.post(
            "/fhir/Patient/$validate",
            content=orjson.dumps(mutate(patient(), list(path), value)),
            headers=FHIR_JSON,
        )
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(st.text(alphabet="ab$_/-.%Tk0Task", max_size=8), max_size=5),
    query=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "_count",
                    "_sort",
                    "_include",
                    "status",
                    "_lastUpdated",
                    "owner",
                    "_cursor",
                    "identifier",
                    "x:missing",
                    "name:exact",
                ]
            ),
            st.text(max_size=12),
        ),
        max_size=4,
    ),
    method=st.sampled_from(["GET", "DELETE", "PUT", "PATCH", "POST"]),
)
def test_odd_paths_and_queries(
    client: TestClient, segments: list[str], query: list[tuple[str, str]], method: str
) -> None:
    path = "/fhir/" + "/".join(segments)
    resp = client.request(method, path, params=query, content=b"{}", headers=FHIR_JSON)
    assert resp.status_code < 500, (method, path, query, resp.text)
