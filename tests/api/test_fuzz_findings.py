"""Transaction and batch Bundles the coverage-guided fuzzer (`python -m benchmarks.fuzz --target
bundle`) found, minimised: each was a 500 (a Python error under the router) before its fix."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, directory_client
from tests.wor import (
    FHIR_JSON,
    WOR,
    fresh_bsn,
    milestone,
    patient,
    put_task,
    referral_bundle,
    send_referral,
    task_for,
)

BASE = "http://gateway.test/fhir"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with directory_client(tmp_path_factory.mktemp("fuzz-findings") / "g.db") as c:
        yield c


def bundle(kind: str, *entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)})


def refused(resp: Any, expression: str) -> dict[str, Any]:
    assert resp.status_code == 400, resp.text
    first: dict[str, Any] = resp.json()["issue"][0]
    assert first["severity"] == "error" and first["expression"] == [expression], first
    return first


def test_a_post_entry_whose_url_names_no_type(client: TestClient) -> None:
    """IndexError in `_dispatch` (`sub.parts[0]` of an empty path)."""
    entry = {
        "fullUrl": "u",
        "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": ""},
    }
    resp = client.post("/fhir", content=bundle("transaction", entry), headers=FHIR_JSON)
    assert "names no resource type" in refused(resp, "Bundle.entry[0].request.url")["diagnostics"]


def test_a_post_entry_with_an_absolute_url_under_the_base_creates(client: TestClient) -> None:
    """ValueError in `_dispatch`: the promised id was `http://…/fhir/Patient/<id>` (split in 5)."""
    entry = {
        "fullUrl": "urn:uuid:1",
        "resource": patient(),
        "request": {"method": "POST", "url": f"{BASE}/Patient"},
    }
    resp = client.post("/fhir", content=bundle("transaction", entry), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert resp.json()["entry"][0]["response"]["status"] == "201 Created"
    assert resp.json()["entry"][0]["response"]["location"].startswith(f"{BASE}/Patient/")


@pytest.mark.parametrize("url", ["http://[x", "//[x/Patient"])
def test_an_entry_url_that_is_no_url(client: TestClient, url: str) -> None:
    """ValueError ('Invalid IPv6 URL') from urlsplit in `_entry_request`."""
    resp = client.post(
        "/fhir", content=bundle("batch", {"request": {"method": "GET", "url": url}}), headers=FHIR_JSON
    )
    assert "not a valid URL" in refused(resp, "Bundle.entry[0].request.url")["diagnostics"]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("resource", ["abc", ["a"], 5])
def test_an_entry_resource_that_is_not_an_object(client: TestClient, kind: str, resource: Any) -> None:
    """AttributeError in `_patch_body` (`"abc".get`): check_shell leaves resources out of the model."""
    entry = {"resource": resource, "request": {"method": "PATCH", "url": "Patient/x"}}
    resp = client.post("/fhir", content=bundle(kind, entry), headers=FHIR_JSON)
    refused(resp, "Bundle.entry[0].resource")


# -- v2 -----------------------------------------------------------------------------------------------
def batau(client: TestClient) -> Any:
    """The authenticated sender of the example REF^I12 (MSH-4 01053417), as a transport names it."""
    from fhir_gateway.security.clients import get_client
    from fhir_gateway.v2.senders import registered_sender

    registration = get_client(client.app.state.ctx.database, "praktijk-batau-his")  # type: ignore[attr-defined]
    assert registration is not None
    return registered_sender(registration, "test")


def test_control_ids_that_share_the_journals_64_characters_are_not_one_message(client: TestClient) -> None:
    """Found reviewing the v2 target's resend property: the journal cut MSH-10 to its 64-character
    column, so a second message whose id shared those 64 characters got the first's stored AA
    without being processed. Longer ids are refused (AR) instead; 64 still works."""
    from fhir_gateway.v2.inbound import parse

    good = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes().replace(b"\n", b"\r")
    # practice Batau's own patient: the admin's referrals in this module keep a single match
    good = good.replace(b"999911120", fresh_bsn().encode())
    service = client.app.state.v2  # type: ignore[attr-defined]
    answers = []
    for control_id in (b"X" * 64 + b"1", b"X" * 64 + b"2"):
        ack = parse(service.handle(good.replace(b"BATAU-000123", control_id), batau(client)))
        answers.append((ack.segment("MSA").value(1), ack.segment("MSA").value(2), ack.segment("ERR")))  # type: ignore[union-attr]
    assert [a[:2] for a in answers] == [("AR", "X" * 64 + "1"), ("AR", "X" * 64 + "2")]
    assert "longer than 64" in answers[1][2].value(8)  # type: ignore[union-attr]
    at_limit = parse(service.handle(good.replace(b"BATAU-000123", b"Y" * 64), batau(client)))
    assert at_limit.segment("MSA").value(1) == "AA"  # type: ignore[union-attr]


def test_a_known_referral_next_to_a_new_one_is_a_409_not_a_lost_referral(client: TestClient) -> None:
    """The resend shortcut answered the whole Bundle from the store as soon as one referral in it
    was known: the new one got '200 OK, not stored again' and was never stored."""
    bsn = fresh_bsn()  # the module's other tests refer the example BSN as other practices
    known = referral_bundle("FZ-KNOWN-1", bsn=bsn)
    assert client.post("/fhir", json=known, headers=FHIR_JSON).status_code == 200
    mixed = referral_bundle("FZ-KNOWN-1", bsn=bsn)
    extra = copy.deepcopy(mixed["entry"][2])
    extra["fullUrl"] = "urn:uuid:6ecbe969-edae-4bbc-b493-8caf63c4b24f"
    extra["resource"]["identifier"][0]["value"] = "FZ-NEW-2"
    mixed["entry"].append(extra)
    resp = client.post("/fhir", json=mixed, headers=FHIR_JSON)
    assert resp.status_code == 409, resp.text
    issue = resp.json()["issue"][0]
    assert issue["code"] == "conflict" and issue["expression"] == ["Bundle.entry[3].resource.identifier"]


def test_a_resend_answers_each_referral_with_its_own_even_without_full_urls(client: TestClient) -> None:
    """Entries without fullUrl all looked up `None`, the first referral's key: the resend answered
    the second ServiceRequest entry with the first ServiceRequest."""
    doc = referral_bundle("FZ-TWO-1")
    second = copy.deepcopy(doc["entry"][2])
    second["resource"]["identifier"][0]["value"] = "FZ-TWO-2"
    doc["entry"].append(second)
    for entry in doc["entry"][2:]:
        del entry["fullUrl"]
    first = client.post("/fhir", json=doc, headers=FHIR_JSON)
    assert first.status_code == 200, first.text
    again = client.post("/fhir", json=doc, headers=FHIR_JSON)
    assert again.status_code == 200, again.text
    ids = [[e["resource"]["id"] for e in r.json()["entry"][2:]] for r in (first, again)]
    assert ids[0] == ids[1] and ids[0][0] != ids[0][1]


def test_a_consent_scope_coding_without_a_code_grants_nothing(client: TestClient) -> None:
    """KeyError in `consent_scopes` (`c["code"]`): Coding.code is optional, so the model lets it in."""
    doc = referral_bundle("FZ-SCOPE-1")
    codings = doc["entry"][1]["resource"]["provision"]["code"][0]["coding"]
    codings.append({"system": codings[0]["system"]})  # next to contact-details: the profile is met
    resp = client.post("/fhir", json=doc, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text


def test_completing_a_task_whose_activity_output_starts_with_a_codeless_coding(client: TestClient) -> None:
    """Found reviewing the class of the consent finding (optional Coding.code read as required):
    the CarePlan activity took `type.coding[0]["code"]`, a KeyError 500 when coding[0] is
    another system's without a code. The activity coding is used now."""
    sr = send_referral(client, referral_id="FZ-ACTIVITY-1")
    task = task_for(client, sr["id"])
    for change in (
        {"status": "accepted"},
        {"status": "in-progress", "businessStatus": milestone("intake-held")},
    ):
        task = put_task(client, task, **change).json()
    activity = {"system": f"{WOR}/CodeSystem/wor-activity-categories", "code": "volunteering"}
    output = [{"type": {"coding": [{"system": "http://example.org/x"}, activity]}, "valueBoolean": True}]
    resp = put_task(
        client, task, status="completed", businessStatus=milestone("closed-goal-reached"), output=output
    )
    assert resp.status_code == 200, resp.text
    plans = client.get("/fhir/CarePlan", params={"supporting-info": f"ServiceRequest/{sr['id']}"}).json()
    details = [a["detail"] for a in plans["entry"][0]["resource"]["activity"] if "detail" in a]
    assert details[-1]["code"] == {"coding": [activity]} and details[-1]["description"] == "volunteering"


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/fhir/Patient", [], {**patient("999999151"), "birthDate": "9999-12-31"}),
        ("GET", "/fhir/Patient", [("birthdate", "9999-12-31")], None),
        ("GET", "/fhir/Patient", [("birthdate", "9999")], None),
        ("GET", "/fhir/Task", [("_lastUpdated", "lt0001-01-01T00:00:00+01:00")], None),
        ("GET", "/fhir/Patient/_history", [("_since", "9999-12-31T23:30:00-01:00")], None),
    ],
)
def test_dates_at_the_ends_of_the_calendar(
    client: TestClient, method: str, path: str, params: list[tuple[str, str]], body: Any
) -> None:
    """OverflowError in parse_date_range (found storing `birthDate: 9999-12-31`): a 500."""
    resp = client.request(method, path, params=params, json=body)
    assert resp.status_code in (200, 201), resp.text


@pytest.mark.parametrize(
    ("system", "value"),
    [
        ('https://his.hadegeinoord.exampl"\\ud800"wijzing', "FZ-ESC-1"),  # the fuzzer's: a backslash
        ("https://his.hadegeinoord.example.nl/verwijzing", "FZ-ESC-2,FZ-ESC-3"),  # OR-ed into two
        ("https://his.hadegeinoord.example.nl/a|b", "FZ-ESC-4$x"),  # split at the wrong `|`
    ],
)
def test_a_resend_is_recognised_whatever_characters_its_identifier_holds(
    client: TestClient, system: str, value: str
) -> None:
    """find_resend searched `system|value` unescaped: the resend was not recognised and stored as a
    second referral with a second Task."""
    doc = referral_bundle()
    doc["entry"][2]["resource"]["identifier"] = [{"system": system, "value": value}]
    first = client.post("/fhir", json=doc, headers=FHIR_JSON)
    assert first.status_code == 200, first.text
    again = client.post("/fhir", json=doc, headers=FHIR_JSON)
    assert again.status_code == 200, again.text
    sr_ids = [r.json()["entry"][2]["resource"]["id"] for r in (first, again)]
    assert sr_ids[0] == sr_ids[1]
    tasks = client.get("/fhir/Task", params={"based-on": f"ServiceRequest/{sr_ids[0]}"}).json()
    assert len(tasks["entry"]) == 1


def test_a_v2_resend_with_separators_in_its_referral_number_is_one_referral(client: TestClient) -> None:
    """The mapping wrote RF1-6 into ifNoneExist as it was: `A&B` read as two query parameters and
    `A,B` as A or B. The `query` filter escapes it."""
    from fhir_gateway.v2.inbound import parse

    good = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes().replace(b"\n", b"\r")
    message = good.replace(b"REF-2026-0001", b"FZ\\T\\1,2+3%4").replace(b"999911120", b"999990019")
    service = client.app.state.v2  # type: ignore[attr-defined]
    focus = []
    for control_id in (b"FZ-V2-ESC-1", b"FZ-V2-ESC-2"):  # a new control id: not the journal's answer
        ack = parse(service.handle(message.replace(b"BATAU-000123", control_id), batau(client)))
        assert ack.segment("MSA").value(1) == "AA", ack.to_er7()  # type: ignore[union-attr]
        found = client.get("/fhir/ServiceRequest", params={"identifier": "FZ&1\\,2+3%4"}).json()
        focus.append([e["resource"]["id"] for e in found.get("entry", [])])
    assert len(focus[0]) == 1 and focus[0] == focus[1]


def test_a_put_entry_whose_resource_has_an_id_but_no_type(client: TestClient) -> None:
    """KeyError in `_assign_ids` (`resource['resourceType']`)."""
    entry = {"fullUrl": "u", "resource": {"id": "2"}, "request": {"method": "PUT", "url": "Patient/2"}}
    resp = client.post("/fhir", content=bundle("transaction", entry), headers=FHIR_JSON)
    assert resp.status_code == 400, resp.text
    assert resp.json()["issue"][0]["code"] == "required"
