"""Side doors between organisations: conditional matches, references, authorship, search on what
minimisation hides, and the audit of refusals. Each test names the hole it closes; every one
failed on 4e52730 and runs on SQLite and PostgreSQL.

Practice A (De Geinoord) refers a patient to welfare organisation 1 (De Brug); practice B
(Batau) and welfare organisation 2 (IJsselstein Samen) try to reach A's records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import authorize, make_client
from tests.wor import (
    BSN,
    DE_BRUG,
    FHIR_JSON,
    GP_ROLE,
    WOR,
    consent,
    fresh_bsn,
    load_directory,
    patient,
    put_task,
    refer_new_patient,
    referral_bundle,
    task_for,
)

GP_A, GP_B = "praktijk-de-geinoord-his", "praktijk-batau-his"
W1, W2 = "welzijn-de-brug-cms", "welzijn-ijsselstein-samen-cms"
ADMIN = "gateway-admin"
GP_B_ROLE = "PractitionerRole/huisarts-el-amrani-praktijk-batau"


@pytest.fixture
def loop(database_url: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """A's referral, accepted by W1, with one feedback Communication; A's records by type."""
    with make_client(database_url) as client:
        load_directory(client)
        authorize(client, GP_A)
        bsn, pat, cons, sr = refer_new_patient(client)
        authorize(client, W1)
        task = put_task(client, task_for(client, sr["id"]), status="accepted").json()
        authorize(client, ADMIN)
        comm = client.get("/fhir/Communication", params={"based-on": f"ServiceRequest/{sr['id']}"}).json()
        yield (
            client,
            {
                "bsn": bsn,
                "Patient": pat,
                "Consent": cons,
                "ServiceRequest": sr,
                "Task": task,
                "Communication": comm["entry"][0]["resource"],
            },
        )


def as_(client: TestClient, who: str) -> TestClient:
    authorize(client, who)
    return client


def audit_events(client: TestClient, **params: str) -> list[dict[str, Any]]:
    authorize(client, ADMIN)
    found = client.get("/fhir/AuditEvent", params={"_count": "200", **params}).json()
    return [e["resource"] for e in found.get("entry", [])]


def leaks(body: str, a: dict[str, Any]) -> list[str]:
    """Which of A's identifying values appear in a response body."""
    secrets = [a["bsn"], a["Patient"]["id"], a["Consent"]["id"], a["ServiceRequest"]["id"]]
    secrets += [a["Task"]["id"], a["Communication"]["id"]]
    return [s for s in secrets if s in body]


# -- 1. conditional create ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "criteria",
    [
        "identifier={BSN}|{bsn}",
        "name:contains=anse",
        "_lastUpdated=ge2000-01-01",
        "_id={patient}",
        "family=Jansen&birthdate=1961-04-12",
    ],
)
def test_a_conditional_create_never_hands_over_another_practices_patient(
    loop: tuple[TestClient, dict[str, Any]], criteria: str
) -> None:
    client, a = loop
    criteria = criteria.format(BSN=BSN, bsn=a["bsn"], patient=a["Patient"]["id"])
    resp = as_(client, GP_B).post(
        "/fhir/Patient",
        json=patient(a["bsn"], postcode="3435 CA"),
        headers={**FHIR_JSON, "If-None-Exist": criteria},
    )
    assert resp.status_code == 201, resp.text  # no match inside B's compartment: B's own record
    own = resp.json()
    assert own["id"] != a["Patient"]["id"]
    assert own["address"][0]["postalCode"] == "3435 CA"  # what B sent, not what A stored
    assert client.get(f"/fhir/Patient/{a['Patient']['id']}").status_code == 404  # still not B's to see
    if not criteria.startswith("_id"):
        again = client.post(
            "/fhir/Patient", json=patient(a["bsn"]), headers={**FHIR_JSON, "If-None-Exist": criteria}
        )
        assert again.status_code == 200 and again.json()["id"] == own["id"]  # B's match: B's own record
    assert as_(client, GP_A).get(f"/fhir/Patient/{own['id']}").status_code == 404  # and A cannot see it


def test_conditional_creates_of_consent_referral_and_message_match_nothing_of_others(
    loop: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = loop
    as_(client, GP_B)
    own = client.post("/fhir/Patient", json=patient(fresh_bsn()), headers=FHIR_JSON).json()
    resp = client.post(
        "/fhir/Consent",
        json=consent(f"Patient/{own['id']}"),
        headers={**FHIR_JSON, "If-None-Exist": f"patient=Patient/{a['Patient']['id']}"},
    )
    assert resp.status_code == 201 and resp.json()["id"] != a["Consent"]["id"], resp.text
    resp = client.post(
        "/fhir/Consent",
        json=consent(f"Patient/{own['id']}"),
        headers={**FHIR_JSON, "If-None-Exist": "status=active"},
    )
    assert resp.status_code == 200 and resp.json()["patient"]["reference"] == f"Patient/{own['id']}"
    bundle = referral_bundle(bsn=fresh_bsn())
    bundle["entry"][2]["resource"]["requester"] = {"reference": GP_B_ROLE}
    bundle["entry"][2]["request"]["ifNoneExist"] = f"subject=Patient/{a['Patient']['id']}"
    resp = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert not leaks(resp.text, a)
    as_(client, W2)  # a welfare organisation fishing for another's message by id
    message = {**a["Communication"], "sender": {"reference": "Organization/welzijn-ijsselstein-samen"}}
    resp = client.post(
        "/fhir/Communication", json=message, headers={**FHIR_JSON, "If-None-Exist": f"_id={message['id']}"}
    )
    assert resp.status_code == 422, resp.text  # no match, and the references are not W2's to use
    assert '"resourceType":"Communication"' not in resp.text
    assert client.get(f"/fhir/Communication/{a['Communication']['id']}").status_code == 404


def test_another_practice_cannot_withdraw_a_consent_it_never_gave(
    loop: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = loop
    as_(client, GP_B)
    own = client.post("/fhir/Patient", json=patient(fresh_bsn()), headers=FHIR_JSON).json()
    resp = client.post(  # B's own consent, conditioned on A's id: no match outside B's compartment
        "/fhir/Consent",
        json=consent(f"Patient/{own['id']}"),
        headers={**FHIR_JSON, "If-None-Exist": f"_id={a['Consent']['id']}"},
    )
    assert resp.status_code == 201 and resp.json()["id"] != a["Consent"]["id"], resp.text
    withdrawn = {**a["Consent"], "status": "inactive"}
    resp = client.put(f"/fhir/Consent/{a['Consent']['id']}", json=withdrawn, headers=FHIR_JSON)
    assert resp.status_code == 404
    assert as_(client, W1).get(f"/fhir/Task/{a['Task']['id']}").json()["status"] == "accepted"


def test_time_windows_harvest_nothing(loop: tuple[TestClient, dict[str, Any]]) -> None:
    client, a = loop
    as_(client, GP_B)
    stamp = a["Patient"]["meta"]["lastUpdated"]
    for window in (
        f"_lastUpdated=ge{stamp[:10]}",
        f"_lastUpdated=ge{stamp[:19]}&_lastUpdated=le{stamp[:19]}Z",
    ):
        resp = client.post(
            "/fhir/Patient", json=patient(fresh_bsn()), headers={**FHIR_JSON, "If-None-Exist": window}
        )
        assert resp.status_code in (200, 201, 412), resp.text  # 412: several of B's own
        assert not leaks(resp.text, a)
    assert client.get(f"/fhir/Patient/{a['Patient']['id']}").status_code == 404


# -- 3. authorship --------------------------------------------------------------------------------
def question(a: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": f"{WOR}/CodeSystem/wor-feedback-kinds", "code": "question"}]}],
        "basedOn": [{"reference": f"ServiceRequest/{a['ServiceRequest']['id']}"}],
        "about": [{"reference": f"Task/{a['Task']['id']}"}],
        "subject": {"reference": f"Patient/{a['Patient']['id']}"},
        "recipient": [{"reference": GP_ROLE}],
        "sender": {"reference": DE_BRUG},
        "sent": "2026-11-20T10:00:00+01:00",
        "payload": [{"contentString": "Mag ik de patiënt 's avonds bellen?"}],
    }
    return {**body, **changes}


def test_a_welfare_organisation_writes_only_as_itself_to_the_parties_of_its_referral(
    loop: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = loop
    as_(client, W1)
    assert client.post("/fhir/Communication", json=question(a), headers=FHIR_JSON).status_code == 201
    forged = client.post(
        "/fhir/Communication",
        json=question(a, sender={"reference": "Organization/welzijn-ijsselstein-samen"}),
        headers=FHIR_JSON,
    )
    assert forged.status_code == 403 and forged.json()["issue"][0]["expression"] == ["Communication.sender"]
    as_practice = client.post(
        "/fhir/Communication", json=question(a, sender={"reference": GP_ROLE}), headers=FHIR_JSON
    )
    assert as_practice.status_code == 403
    stranger = client.post(
        "/fhir/Communication",
        json=question(a, recipient=[{"reference": GP_B_ROLE}]),
        headers=FHIR_JSON,
    )
    assert stranger.status_code == 422
    assert stranger.json()["issue"][0]["expression"] == ["Communication.recipient[0]"]
    unlinked = {k: v for k, v in question(a).items() if k != "basedOn"}
    assert client.post("/fhir/Communication", json=unlinked, headers=FHIR_JSON).status_code == 422
    inbox = as_(client, GP_B).get("/fhir/Communication").json()
    assert not inbox.get("entry")  # nothing reached practice B


def test_a_reference_to_anothers_record_is_answered_as_one_to_nothing(
    loop: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = loop
    as_(client, W2)

    def refused(sent: str, shown: str) -> tuple[int, str, list[str], str]:
        sender = {"reference": "Organization/welzijn-ijsselstein-samen"}
        body = question(a, basedOn=[{"reference": sent}], sender=sender)
        resp = client.post("/fhir/Communication", json=body, headers=FHIR_JSON)
        issue = resp.json()["issue"][0]
        return resp.status_code, issue["code"], issue["expression"], issue["diagnostics"].replace(shown, "X")

    sr = f"ServiceRequest/{a['ServiceRequest']['id']}"
    theirs = refused(sr, sr)
    assert theirs[:3] == (422, "not-found", ["Communication.basedOn[0].reference"])
    assert refused(f"{sr}/_history/1", sr) == theirs  # a versioned reference is no way round
    assert refused("ServiceRequest/does-not-exist", "ServiceRequest/does-not-exist") == theirs
    assert (
        refused(
            "https://elsewhere.example/fhir/ServiceRequest/1",
            "https://elsewhere.example/fhir/ServiceRequest/1",
        )
        == theirs
    )


# -- 4. search on what minimisation hides ---------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"reason-code": "Z12"},
        {"reason-code": "P76"},
        {"reason-code:missing": "true"},
        {"reason-code:missing": "false"},
        {"code": "x"},
        {"_include": "ServiceRequest:based-on"},
        {"_sort": "reason-code"},  # the order alone would tell which referral has which code
        {"_sort": "-authored,-code"},
    ],
)
def test_a_welfare_organisation_cannot_search_what_its_view_withholds(
    loop: tuple[TestClient, dict[str, Any]], params: dict[str, str]
) -> None:
    client, a = loop
    resp = as_(client, W1).get("/fhir/ServiceRequest", params={"_id": a["ServiceRequest"]["id"], **params})
    assert resp.status_code == 403, resp.text
    assert resp.json()["issue"][0]["code"] == "forbidden"
    visible = client.get(
        "/fhir/ServiceRequest", params={"_id": a["ServiceRequest"]["id"], "status": "active"}
    )
    assert visible.status_code == 200 and len(visible.json()["entry"]) == 1  # what it does see, it finds
    assert "reasonCode" not in visible.json()["entry"][0]["resource"]


@pytest.mark.parametrize("sort", ["-authored-on", "status,-_lastUpdated", "-modified,business-status"])
def test_a_sorted_search_stays_in_the_compartment(loop: tuple[TestClient, dict[str, Any]], sort: str) -> None:
    """The sorted path builds its own statement: it must confine to the caller's records too."""
    client, a = loop
    for who, sees in ((W2, False), (W1, True), (GP_B, False), (GP_A, True)):
        resp = as_(client, who).get("/fhir/Task", params={"_sort": sort})
        assert resp.status_code == 200, (who, resp.text)
        ids = [e["resource"]["id"] for e in resp.json().get("entry", [])]
        assert (a["Task"]["id"] in ids) is sees, who
        owner = as_(client, who).get("/fhir/Task", params={"_sort": sort, "owner": DE_BRUG})
        assert (a["Task"]["id"] in [e["resource"]["id"] for e in owner.json().get("entry", [])]) is sees


def test_the_practice_keeps_searching_its_own_referrals_in_full(
    loop: tuple[TestClient, dict[str, Any]],
) -> None:
    client, a = loop
    resp = as_(client, GP_A).get("/fhir/ServiceRequest", params={"reason-code": "Z12"})
    assert [e["resource"]["id"] for e in resp.json()["entry"]] == [a["ServiceRequest"]["id"]]
    resp = client.get("/fhir/ServiceRequest", params={"_sort": "-reason-code"})
    assert [e["resource"]["id"] for e in resp.json()["entry"]] == [a["ServiceRequest"]["id"]]


# -- 8. refusals are audited ----------------------------------------------------------------------
def test_refusals_leave_an_audit_event(loop: tuple[TestClient, dict[str, Any]]) -> None:
    client, a = loop
    as_(client, GP_B)
    resp = client.post("/fhir/Consent", json=consent(f"Patient/{a['Patient']['id']}"), headers=FHIR_JSON)
    assert resp.status_code == 422
    assert client.get("/fhir/Consent", params={"status": "active"}).status_code == 403  # no Consent.s
    events = audit_events(client, outcome="4")
    by_b = [e for e in events if e["agent"][0]["name"] == GP_B]
    patients = {x["what"]["reference"] for e in by_b for x in e.get("entity", []) if "what" in x}
    assert f"Patient/{a['Patient']['id']}" in patients  # the attempt on A's patient is on record
    assert any(
        e["subtype"][0]["code"] == "search-type" and "Consent?" in str(e.get("entity")) for e in by_b
    ), by_b


# -- property: nothing of another organisation through If-None-Exist ------------------------------
PRACTICES = {
    GP_A: "Organization/praktijk-de-geinoord",
    GP_B: "Organization/praktijk-batau",
    "praktijk-het-rond-his": "Organization/praktijk-het-rond",
}


@pytest.fixture
def three_practices(database_url: str) -> Iterator[tuple[TestClient, dict[str, dict[str, Any]]]]:
    """Every practice has one patient of its own (same family name, own BSN)."""
    with make_client(database_url) as client:
        load_directory(client)
        records = {}
        for who in PRACTICES:
            authorize(client, who)
            resp = client.post("/fhir/Patient", json=patient(fresh_bsn()), headers=FHIR_JSON)
            assert resp.status_code == 201, resp.text
            records[who] = resp.json()
        yield client, records


def criteria_for(record: dict[str, Any]) -> st.SearchStrategy[str]:
    """Search strings a prober might try, built from the other practice's patient."""
    bsn = record["identifier"][0]["value"]
    parts = st.sampled_from(
        [
            f"identifier={bsn}",
            f"identifier={BSN}|{bsn}",
            f"_id={record['id']}",
            "_lastUpdated=ge2000-01-01",
            f"_lastUpdated=le{record['meta']['lastUpdated'][:10]}T23:59:59Z",
            "family=Jansen",
            "name:contains=ans",
            "birthdate=1961-04-12",
            "gender=female",
            "address-postalcode=3431",
            "active:missing=true",
            "_id:not=x",
        ]
    )
    return st.lists(parts, min_size=1, max_size=3).map("&".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_if_none_exist_never_reaches_another_organisation(
    three_practices: tuple[TestClient, dict[str, dict[str, Any]]], data: st.DataObject
) -> None:
    client, records = three_practices
    prober, victim = data.draw(st.permutations(list(PRACTICES)).map(lambda p: p[:2]))
    criteria = data.draw(criteria_for(records[victim]))
    authorize(client, prober)
    resp = client.post(
        "/fhir/Patient", json=patient(fresh_bsn()), headers={**FHIR_JSON, "If-None-Exist": criteria}
    )
    assert resp.status_code in (200, 201, 412), resp.text
    secret = records[victim]
    assert secret["id"] not in resp.text and secret["identifier"][0]["value"] not in resp.text
    assert client.get(f"/fhir/Patient/{secret['id']}").status_code == 404
    listed = client.get("/fhir/Patient", params={"_count": "200"}).text
    assert secret["id"] not in listed
