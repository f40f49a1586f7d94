"""A referral as a FHIR message Bundle through $process-message: the same loop as a transaction."""

from __future__ import annotations

from typing import Any

from tests.conftest import authorize, make_client
from tests.wor import DE_BRUG, FHIR_JSON, load_directory, referral_bundle, task_for


def message(referral_id: str) -> dict[str, Any]:
    transaction = referral_bundle(referral_id)
    sr_url = transaction["entry"][2]["fullUrl"]
    header = {
        "resourceType": "MessageHeader",
        "id": "mh-1",
        "eventCoding": {"system": "https://wor.example.nl/fhir/CodeSystem/wor-events", "code": "referral"},
        "source": {"name": "HIS De Geinoord", "endpoint": "https://his.hadegeinoord.example.nl"},
        "focus": [{"reference": sr_url}],
    }
    entries = [{"fullUrl": "urn:uuid:9d0b6f4e-0000-4000-8000-000000000001", "resource": header}]
    entries += [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in transaction["entry"]]
    return {
        "resourceType": "Bundle",
        "id": f"msg-{referral_id}",
        "type": "message",
        "timestamp": "2026-11-23T10:00:00+01:00",
        "entry": entries,
    }


def test_message_referral_lands_as_a_task(sqlite_url: str) -> None:
    with make_client(sqlite_url) as client:
        load_directory(client)
        authorize(client, "praktijk-de-geinoord-his")
        resp = client.post("/fhir/$process-message", json=message("MSG-1"), headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        reply = resp.json()
        assert reply["type"] == "message"
        header = reply["entry"][0]["resource"]
        assert header["response"] == {"identifier": "msg-MSG-1", "code": "ok"}
        sr_ref = header["focus"][0]["reference"]
        assert task_for(client, sr_ref.split("/")[1])["owner"]["reference"] == DE_BRUG
        again = client.post("/fhir/$process-message", json=message("MSG-1"), headers=FHIR_JSON).json()
        assert (
            again["entry"][0]["resource"]["focus"][0]["reference"] == sr_ref
        )  # a resend, not a second referral
        not_a_message = client.post("/fhir/$process-message", json=referral_bundle(), headers=FHIR_JSON)
        assert not_a_message.status_code == 400
        assert not_a_message.json()["issue"][0]["expression"] == ["Bundle.type"]
