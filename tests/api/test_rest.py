"""FHIR REST semantics through the real app (TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.vocabulary import OAUTH_URIS, RESTFUL_SECURITY_SERVICE
from tests.conftest import FHIR_JSON
from tests.wor import BSN, DE_BRUG, load_directory, send_referral, task_for


def patient(**extra: Any) -> dict[str, Any]:
    """A Patient valid against WorPatient (BSN, name, Dutch postcode)."""
    base = {
        "resourceType": "Patient",
        "identifier": [{"system": BSN, "value": "999911120"}],
        "name": [{"family": "Jansen", "given": ["Anna"]}],
        "address": [{"postalCode": "3431 AB"}],
        "birthDate": "1961-04-12",
    }
    if "identifier" in extra:
        extra["identifier"] = base["identifier"] + extra["identifier"]
    return {**base, **extra}


def create(client: TestClient, resource: dict[str, Any], **headers: str) -> Any:
    return client.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR_JSON, **headers})


def outcome_code(resp: Any) -> str:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["code"]


def test_create_assigns_id_version_and_headers(any_client: TestClient) -> None:
    resp = create(any_client, patient(id="client-chosen"))
    assert resp.status_code == 201
    body = resp.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert resp.headers["etag"] == 'W/"1"'
    assert resp.headers["location"] == f"http://gateway.test/fhir/Patient/{body['id']}/_history/1"
    assert resp.headers["content-type"].startswith("application/fhir+json")
    assert resp.headers["x-request-id"]


def test_read_vread_update_and_history(any_client: TestClient) -> None:
    created = create(any_client, patient()).json()
    pid = created["id"]
    changed = {**created, "gender": "female"}
    resp = any_client.put(f"/fhir/Patient/{pid}", json=changed, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert resp.status_code == 200
    assert resp.json()["meta"]["versionId"] == "2"
    assert any_client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"
    v1 = any_client.get(f"/fhir/Patient/{pid}/_history/1").json()
    assert "gender" not in v1 and v1["meta"]["versionId"] == "1"
    hist = any_client.get(f"/fhir/Patient/{pid}/_history").json()
    assert hist["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in hist["entry"]] == ["PUT", "POST"]
    type_hist = any_client.get("/fhir/Patient/_history").json()
    assert len(type_hist["entry"]) == 2


def test_stale_if_match_is_412(any_client: TestClient) -> None:
    created = create(any_client, patient()).json()
    pid = created["id"]
    ok = any_client.put(f"/fhir/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = any_client.put(f"/fhir/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert outcome_code(stale) == "conflict"
    assert stale.json()["issue"][0]["expression"] == ["If-Match"]  # which precondition failed
    missing = any_client.put(
        "/fhir/Patient/never-there",
        json={**created, "id": "never-there"},
        headers={**FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert missing.status_code == 412 and missing.json()["issue"][0]["expression"] == ["If-Match"]


def test_put_creates_with_client_id(client: TestClient) -> None:
    resp = client.put("/fhir/Patient/p-1", json=patient(id="p-1"), headers=FHIR_JSON)
    assert resp.status_code == 201
    assert client.get("/fhir/Patient/p-1").json()["id"] == "p-1"


def test_patch_with_json_patch(any_client: TestClient) -> None:
    pid = create(any_client, patient()).json()["id"]
    ops = [
        {"op": "replace", "path": "/birthDate", "value": "1962-01-01"},
        {"op": "add", "path": "/active", "value": True},
    ]
    resp = any_client.patch(
        f"/fhir/Patient/{pid}", json=ops, headers={"content-type": "application/json-patch+json"}
    )
    assert resp.status_code == 200
    assert resp.json()["birthDate"] == "1962-01-01" and resp.json()["active"] is True
    assert resp.json()["meta"]["versionId"] == "2"
    bad = any_client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "replace", "path": "/nope/x", "value": 1}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert bad.status_code == 422 and outcome_code(bad) == "processing"
    invalid = any_client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "add", "path": "/foo", "value": 1}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert invalid.status_code == 400 and outcome_code(invalid) == "structure"
    stale = any_client.patch(
        f"/fhir/Patient/{pid}",
        json=ops,
        headers={"content-type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412


def test_delete_is_soft_and_keeps_history(any_client: TestClient) -> None:
    pid = create(any_client, patient()).json()["id"]
    assert any_client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = any_client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410 and outcome_code(gone) == "deleted"
    assert any_client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    hist = any_client.get(f"/fhir/Patient/{pid}/_history").json()
    assert hist["entry"][0]["request"]["method"] == "DELETE" and "resource" not in hist["entry"][0]
    assert any_client.get("/fhir/Patient", params={"_id": pid}).json().get("entry") is None
    assert any_client.delete(f"/fhir/Patient/{pid}").status_code == 204  # idempotent


def test_conditional_create_returns_existing(any_client: TestClient) -> None:
    ident = {"system": "urn:test", "value": "cc-1"}
    header = {"If-None-Exist": "identifier=urn:test|cc-1"}
    first = create(any_client, patient(identifier=[ident]), **header)
    again = create(any_client, patient(identifier=[ident]), **header)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    total = any_client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    assert total == 1
    several = create(any_client, patient(), **{"If-None-Exist": "birthdate=1961-04-12"})
    assert several.status_code == 200  # criteria on another field: the one match is returned
    create(any_client, patient(identifier=[{"system": "urn:test", "value": "cc-2"}]))
    ambiguous = create(any_client, patient(), **{"If-None-Exist": "family=jansen"})
    assert ambiguous.status_code == 412 and outcome_code(ambiguous) == "multiple-matches"


def test_conditional_create_race_creates_one(any_client: TestClient) -> None:
    header = {"If-None-Exist": "identifier=urn:test|race-1"}
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        statuses.append(
            create(
                any_client, patient(identifier=[{"system": "urn:test", "value": "race-1"}]), **header
            ).status_code
        )

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert (
        any_client.get("/fhir/Patient", params={"identifier": "urn:test|race-1", "_summary": "count"}).json()[
            "total"
        ]
        == 1
    )


def test_paging_250_results_each_exactly_once(any_client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": patient(identifier=[{"system": "urn:page", "value": str(i)}]),
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(250)
        ],
    }
    assert any_client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_count=40&family=jansen"
    pages = 0
    while url:
        page = any_client.get(url).json()
        pages += 1
        seen.extend(e["resource"]["identifier"][1]["value"] for e in page.get("entry", []))
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://gateway.test", "") if nxt else None
        if pages == 2:  # a write between pages must not shift what later pages return
            create(any_client, patient(identifier=[{"system": "urn:page", "value": "late"}]))
    assert pages == 7  # 251 results (250 + the late one, which sorts last) at 40 per page
    assert seen[:250] == [str(i) for i in range(250)]
    assert seen[250:] == ["late"]


def test_sort_by_last_updated_descending(client: TestClient) -> None:
    ids = [create(client, patient()).json()["id"] for _ in range(3)]
    found = [e["resource"]["id"] for e in client.get("/fhir/Patient?_sort=-_lastUpdated").json()["entry"]]
    assert found == list(reversed(ids))
    paged = client.get("/fhir/Patient?_sort=_lastUpdated&_count=2").json()
    nxt = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    rest = client.get(nxt.replace("http://gateway.test", "")).json()
    assert [e["resource"]["id"] for e in paged["entry"] + rest["entry"]] == ids


def test_search_parameters(any_client: TestClient) -> None:
    load_directory(any_client)
    sr = send_referral(any_client, referral_id="REF-S1")
    other = send_referral(any_client, referral_id="REF-S2", postcode="3402 AB", bsn="999999151")
    tid, other_tid = task_for(any_client, sr["id"])["id"], task_for(any_client, other["id"])["id"]
    patient_ref = sr["subject"]["reference"]

    def ids(query: str) -> list[str]:
        body = any_client.get(f"/fhir/{query}").json()
        return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]

    assert ids(f"Task?owner={DE_BRUG}&status=requested") == [tid]
    assert ids(f"Task?owner={DE_BRUG}&status=accepted") == []
    assert sorted(ids("Task?status=requested,accepted")) == sorted([tid, other_tid])
    assert ids(f"Task?status:not=requested&owner={DE_BRUG}") == []
    assert ids(f"Task?focus=ServiceRequest/{sr['id']}&patient={patient_ref}") == [tid]
    assert len(ids("Task?requester=PractitionerRole/huisarts-van-dijk-praktijk-de-geinoord")) == 2
    assert ids("ServiceRequest?identifier=https://his.hadegeinoord.example.nl/verwijzing|REF-S1") == [
        sr["id"]
    ]
    assert ids("ServiceRequest?identifier=urn:other|REF-S1") == []
    assert (
        ids(
            "ServiceRequest?reason-code=http://hl7.org/fhir/sid/icpc-1-nl|Z12&authored=ge2026-11-01"
        ).__len__()
        == 2
    )
    assert ids("ServiceRequest?authored=lt2026-11-02T08:00:00Z") == []
    assert ids("ServiceRequest?authored=gt2026-11-02T08:00:00Z").__len__() == 2
    assert ids("ServiceRequest?authored=2026-11-02").__len__() == 2
    assert ids(f"Task?_id={tid}") == [tid]
    assert ids("Patient?address-postalcode=3431") != []
    assert ids("Patient?name:missing=true") == []
    assert ids("Organization?name=stichting de brug") == ["welzijn-de-brug"]
    assert ids("Organization?name:exact=stichting de brug welzijn") == []
    assert ids("Organization?name:contains=brug") == ["welzijn-de-brug"]
    assert len(ids("Task?_lastUpdated=ge2000-01-01")) == 2
    assert ids("Task?_lastUpdated=lt2000-01-01") == []
    included = any_client.get(f"/fhir/Task?_id={tid}&_include=Task:focus&_include=Task:patient").json()
    modes = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in included["entry"])
    assert modes == [("include", "Patient"), ("include", "ServiceRequest"), ("match", "Task")]
    rev = any_client.get(f"/fhir/ServiceRequest?_id={sr['id']}&_revinclude=Task:focus").json()
    assert sum(e["search"]["mode"] == "include" for e in rev["entry"]) == 1
    assert any_client.get("/fhir/Task?_summary=count").json()["total"] == 2


def test_unknown_search_parameter_warns_or_fails_strict(client: TestClient) -> None:
    lenient = client.get("/fhir/Patient?bogus=1").json()
    outcome = [e for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcome and outcome[0]["resource"]["issue"][0]["severity"] == "warning"
    strict = client.get("/fhir/Patient?bogus=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and outcome_code(strict) == "not-supported"
    bad_date = client.get("/fhir/Patient?birthdate=yesterday")
    assert bad_date.status_code == 400 and outcome_code(bad_date) == "invalid"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", FHIR_JSON, 400, "structure"),
        (b'{"resourceType": "Observation", "status": "final"}', FHIR_JSON, 400, "invalid"),
        (b'{"resourceType": "Patient", "name": [{"family": "X"}]}', FHIR_JSON, 422, "required"),
        (b'{"resourceType": "Patient", "gender": "unknown-code"}', FHIR_JSON, 422, "code-invalid"),
        (b'{"resourceType": "Patient", "hairColour": "red"}', FHIR_JSON, 400, "structure"),
        (b'{"resourceType": "Patient", "birthDate": "12-04-1961"}', FHIR_JSON, 400, "value"),
        (b'{"name": []}', FHIR_JSON, 400, "required"),
        (b"[1, 2]", FHIR_JSON, 400, "structure"),
        (
            b"<Patient/>",
            {"content-type": "application/fhir+xml", "accept": "application/json"},
            400,
            "structure",
        ),
        (b"<Patient/>", {"content-type": "text/csv"}, 415, "not-supported"),
    ],
)
def test_bad_input_gets_specific_outcome(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    resp = client.post("/fhir/Patient", content=body, headers=headers)
    assert resp.status_code == status
    assert outcome_code(resp) == code


def test_errors_name_the_element(client: TestClient) -> None:
    resp = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"famly": "x"}]}, headers=FHIR_JSON
    )
    assert resp.json()["issue"][0]["expression"] == ["Patient.name[0].famly"]


def test_id_mismatch_missing_and_unknown_type(client: TestClient) -> None:
    mismatch = client.put("/fhir/Patient/a", json=patient(id="b"), headers=FHIR_JSON)
    assert mismatch.status_code == 400 and outcome_code(mismatch) == "invalid"
    assert mismatch.json()["issue"][0]["expression"] == ["Patient.id"]
    missing = client.get("/fhir/Patient/does-not-exist")
    assert missing.status_code == 404 and outcome_code(missing) == "not-found"
    unknown = client.get("/fhir/Observation")
    assert unknown.status_code == 404 and outcome_code(unknown) == "not-supported"
    assert client.get("/fhir/Patient/x/_history/abc").status_code == 400
    unconditional = client.delete("/fhir/Patient")  # a conditional delete needs its criteria
    assert unconditional.status_code == 400 and outcome_code(unconditional) == "invalid"
    assert client.patch("/fhir/Patient", json=[]).status_code == 405


def test_formats_the_gateway_cannot_produce_are_406(client: TestClient) -> None:
    for asked in ({"Accept": "text/csv"}, {"Accept": "application/fhir+json;q=0, text/html"}):
        resp = client.get("/fhir/metadata", headers=asked)
        assert resp.status_code == 406 and outcome_code(resp) == "not-supported", asked
        assert resp.headers["content-type"].startswith("application/fhir+json")
    bad_format = client.get("/fhir/metadata?_format=turtle")
    assert bad_format.status_code == 406 and bad_format.json()["issue"][0]["expression"] == ["_format"]


@pytest.mark.parametrize(
    ("query", "accept", "answered_as"),
    [
        ("", None, "application/fhir+json"),
        ("", "application/fhir+json", "application/fhir+json"),
        ("", "application/json", "application/json"),
        ("", "application/json+fhir", "application/fhir+json"),
        ("", "*/*", "application/fhir+json"),
        ("", "application/fhir+xml", "application/fhir+xml"),
        ("", "application/xml", "application/xml"),
        ("", "text/csv, application/xml;q=0.5, application/json;q=0.9", "application/json"),
        ("?_format=xml", "application/fhir+json", "application/fhir+xml"),
        ("?_format=json", "application/fhir+xml", "application/fhir+json"),
        ("?_format=application/xml", None, "application/xml"),
        ("?_format=application/fhir%2Bjson", None, "application/fhir+json"),
    ],
)
def test_answers_in_the_requested_type(
    client: TestClient, query: str, accept: str | None, answered_as: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    resp = client.get(f"/fhir/metadata{query}", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == f"{answered_as}; charset=utf-8"
    if "xml" in answered_as:
        assert resp.content.lstrip().startswith(b"<?xml") and b"<CapabilityStatement" in resp.content
    else:
        assert resp.json()["resourceType"] == "CapabilityStatement"


def test_capability_statement_names_smart_and_the_token_endpoint(client: TestClient) -> None:
    security = client.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"] == [{"system": RESTFUL_SECURITY_SERVICE, "code": "SMART-on-FHIR"}]
    (oauth,) = security["extension"]
    assert oauth["url"] == OAUTH_URIS
    token = client.get("/fhir/.well-known/smart-configuration").json()["token_endpoint"]
    assert oauth["extension"] == [{"url": "token", "valueUri": token}]


def test_capability_statement_is_truthful(client: TestClient) -> None:
    cap = client.get("/fhir/metadata").json()
    assert {"json", "xml", "application/fhir+json", "application/fhir+xml"} <= set(cap["format"])
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cap["rest"][0]["resource"]}
    required = {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "HealthcareService",
        "Location",
        "Endpoint",
        "Consent",
        "ServiceRequest",
        "Task",
        "CarePlan",
        "Communication",
        "QuestionnaireResponse",
        "Provenance",
        "AuditEvent",
        "Subscription",
    }
    assert required <= set(types)
    task_params = {p["name"] for p in types["Task"]["searchParam"]}
    assert {"owner", "status", "focus", "patient", "_lastUpdated", "identifier"} <= task_params
    # every advertised type answers a search, every advertised parameter is accepted strictly
    for rtype, entry in types.items():
        for param in entry["searchParam"]:
            value = (
                "2026-01-01"
                if param["type"] == "date"
                else ("Patient/x" if param["type"] == "reference" else "x")
            )
            resp = client.get(
                f"/fhir/{rtype}", params={param["name"]: value}, headers={"Prefer": "handling=strict"}
            )
            assert resp.status_code == 200, (rtype, param["name"], resp.json())
        # and every sort key the resource's documentation names, both ways, strictly
        keys = entry["documentation"].splitlines()[0].removeprefix("_sort keys: ").split(", ")
        for key in keys:
            for sort in (key, f"-{key}"):
                resp = client.get(f"/fhir/{rtype}", params={"_sort": sort}, headers={"Prefer": "handling=strict"})
                assert resp.status_code == 200, (rtype, sort, resp.json())
    documented = {p["name"] for p in cap["rest"][0]["searchParam"]}
    assert {"_sort", "_elements", "_count"} <= documented
    assert "authored-on" in types["Task"]["documentation"] and "status" in types["Task"]["documentation"]


def test_prefer_return_minimal(client: TestClient) -> None:
    resp = create(client, patient(), Prefer="return=minimal")
    assert resp.status_code == 201 and resp.content == b"" and resp.headers["location"]


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    create(client, patient())
    metrics = client.get("/metrics").text
    assert 'gateway_http_requests_total{method="POST",route="/fhir/Patient",status="201"} 1.0' in metrics
    assert "gateway_http_request_duration_seconds_bucket" in metrics
