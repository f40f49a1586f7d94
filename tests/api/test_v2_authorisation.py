"""The /v2 and MLLP cells of the authorisation matrix: who may send a REF^I12 as which practice.

A referral (REF^I12) whose MSH-4 is practice A's AGB code is sent by every principal of the
matrix (test_authorisation_matrix.py), over HTTP with the principal's access token and over MLLP
with TLS and the principal's client certificate; then practice B's by GP A. Only GP A sending as
A gets AA; every other cell is AR with the ERR given here, and stores nothing. Both backends.

The cells are exported as `V2_CELLS` (route → MSH-4 practice → principal → outcome) so that a
route-coverage test can import them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_gateway.rest.request import FhirRequest
from fhir_gateway.security.clients import RegistrationError, get_client, save_client, validate_registration
from fhir_gateway.security.principal import Principal
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.mllp import MLLPClient, MLLPServer, ServerThread, client_tls_context, server_tls_context
from tests.api.authorisation import ADMIN, GP_A, GP_B, PRINCIPALS, W1, W2
from tests.conftest import authorize, make_client
from tests.tls import Issued, TestCA
from tests.wor import load_directory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "v2"
ER7 = {"content-type": "x-application/hl7-v2+er7"}
# practice A (De Geinoord, AGB 01051234) and practice B (Batau-Noord, AGB 01053417), each message
# as that practice's own system sends it (its practitioner, its referral numbers)
MESSAGES = {
    "A": (EXAMPLES / "ref-i12-escapes.hl7").read_text().replace("\n", "\r"),
    "B": (EXAMPLES / "ref-i12-v25.hl7").read_text().replace("\n", "\r"),
}
REFERRAL = {"A": "GEIN-VW-7781", "B": "REF-2026-0001"}  # ServiceRequest.identifier of each

AA = ("AA", None, None)
FORBIDDEN = ("AR", "204", "forbidden")  # ERR-3 table 0357, ERR-5 FHIR issue type
NOT_AUTHENTICATED = ("AR", "204", "login")

# route → MSH-4 of practice … → principal → (MSA-1, ERR-3, ERR-5)
V2_CELLS: dict[str, dict[str, dict[str, tuple[str, str | None, str | None]]]] = {
    "POST /v2": {
        "A": {ADMIN: FORBIDDEN, GP_A: AA, GP_B: FORBIDDEN, W1: FORBIDDEN, W2: FORBIDDEN},
        "B": {GP_A: FORBIDDEN},
    },
    # an admin or welfare registration cannot hold an MLLP identity (only a gp-practice sends
    # referrals), so their certificates identify nobody: not authenticated
    "MLLP": {
        "A": {
            ADMIN: NOT_AUTHENTICATED,
            GP_A: AA,
            GP_B: FORBIDDEN,
            W1: NOT_AUTHENTICATED,
            W2: NOT_AUTHENTICATED,
        },
        "B": {GP_A: FORBIDDEN},
    },
}
# what ERR-8 must say per outcome (the sender's client id is in every refusal by an identified client)
FORBIDDEN_TEXT = "(MSH-4) is not registered for client"


@dataclass
class Outcome:
    cell: tuple[str, str | None, str | None]
    text: str


def outcome_of(ack: bytes) -> Outcome:
    message = parse(ack)
    msa, err = message.segment("MSA"), message.segment("ERR")
    assert msa is not None
    if err is None:
        return Outcome((msa.value(1), None, None), "")
    assert err.value(2) == "MSH" and err.value(2, 2) == "1" and err.value(2, 3) == "4"  # ERR-2: MSH-4
    return Outcome((msa.value(1), err.value(3), err.value(5)), err.value(8))


def stored(client: TestClient, identifier: str) -> tuple[int, int]:
    """(ServiceRequests with that identifier, Tasks): what a refused message must not leave."""
    router: Any = client.app.state.router  # type: ignore[attr-defined]

    def total(resource_type: str, *params: tuple[str, str]) -> int:
        req = FhirRequest(
            "GET", resource_type, params=[("_summary", "count"), *params], principal=Principal.system()
        )
        return int(router.handle(req).body["total"])

    return total("ServiceRequest", ("identifier", identifier)), total("Task")


@pytest.fixture
def gateway(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        load_directory(client)
        yield client


# -- HTTP ---------------------------------------------------------------------------------------------
def refuse_over_http(
    gateway: TestClient, practice: str, principal: str, seen: dict[str, dict[str, Any]]
) -> None:
    authorize(gateway, principal)
    resp = gateway.post("/v2", content=MESSAGES[practice].encode(), headers=ER7)
    assert resp.status_code == 200
    result = outcome_of(resp.content)
    seen[practice][principal] = result.cell
    assert f"{FORBIDDEN_TEXT} {principal} (bearer token)" in result.text, result.text
    assert stored(gateway, REFERRAL[practice]) == (0, 0), (practice, principal)


def test_post_v2_cells(gateway: TestClient) -> None:
    seen: dict[str, dict[str, tuple[str, str | None, str | None]]] = {"A": {}, "B": {}}
    # the refusals first: each must leave nothing behind
    for practice, cells in V2_CELLS["POST /v2"].items():
        for principal in (who for who, expected in cells.items() if expected != AA):
            refuse_over_http(gateway, practice, principal, seen)
    authorize(gateway, GP_A)
    resp = gateway.post("/v2", content=MESSAGES["A"].encode(), headers=ER7)
    seen["A"][GP_A] = outcome_of(resp.content).cell
    assert seen == V2_CELLS["POST /v2"]
    assert stored(gateway, REFERRAL["A"]) == (1, 1)
    # every refusal above is in the audit log, as who tried it
    authorize(gateway, ADMIN)
    events = gateway.get("/fhir/AuditEvent", params={"outcome": "4", "_count": "100"}).json().get("entry", [])
    refused_by = sorted(
        e["resource"]["agent"][0]["name"] for e in events if "HL7 v2" in str(e["resource"].get("entity"))
    )
    assert refused_by == sorted([ADMIN, GP_B, W1, W2, GP_A])  # A's four, then GP A as practice B


def test_post_v2_without_a_token_is_401(gateway: TestClient) -> None:
    gateway.headers.pop("Authorization", None)
    resp = gateway.post("/v2", content=MESSAGES["A"].encode(), headers=ER7)
    assert resp.status_code == 401 and resp.json()["issue"][0]["code"] == "login"
    assert stored(gateway, REFERRAL["A"]) == (0, 0)


# -- MLLP over TLS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Issued, dict[str, Issued]]:
    ca = TestCA(tmp_path_factory.mktemp("v2-authorisation-tls"))
    return ca, ca.issue("localhost", server=True), {who: ca.issue(f"{who}.test") for who in PRINCIPALS}


def test_mllp_cells(gateway: TestClient, certificates: tuple[TestCA, Issued, dict[str, Issued]]) -> None:
    ca, server_cert, client_certs = certificates
    app: Any = gateway.app
    database = app.state.ctx.database
    for who in PRINCIPALS:  # each principal's certificate on its own registration, where it may be
        registration = get_client(database, who)
        assert registration is not None
        document = {**registration.to_json(), "mllp_certificates": [client_certs[who].fingerprint]}
        if registration.role == "gp-practice":
            save_client(database, validate_registration(document))
        else:
            with pytest.raises(RegistrationError, match="need v2_facilities"):
                validate_registration(document)
    tls = server_tls_context(server_cert.cert, server_cert.key, ca.cert_file)
    thread = ServerThread(
        MLLPServer(host="127.0.0.1", port=0, for_peer=app.state.v2.for_peer, ssl_context=tls, idle_timeout=5)
    ).start()

    def send(who: str, practice: str) -> Outcome:
        context: ssl.SSLContext = client_tls_context(
            ca.cert_file, client_certs[who].cert, client_certs[who].key
        )

        async def go() -> bytes:
            async with MLLPClient(
                "127.0.0.1", thread.port, timeout=20, ssl_context=context, server_hostname="localhost"
            ) as client:
                return await client.send(MESSAGES[practice])

        return outcome_of(asyncio.run(go()))

    try:
        seen: dict[str, dict[str, tuple[str, str | None, str | None]]] = {"A": {}, "B": {}}
        for practice, cells in V2_CELLS["MLLP"].items():
            for who, expected in cells.items():
                if expected == AA:
                    continue
                result = send(who, practice)
                seen[practice][who] = result.cell
                if expected == FORBIDDEN:
                    assert f"{FORBIDDEN_TEXT} {who} (client certificate)" in result.text, result.text
                else:
                    assert client_certs[who].fingerprint in result.text and "is not registered" in result.text
                assert stored(gateway, REFERRAL[practice]) == (0, 0), (practice, who)
        seen["A"][GP_A] = send(GP_A, "A").cell
    finally:
        thread.stop()
    assert seen == V2_CELLS["MLLP"]
    assert stored(gateway, REFERRAL["A"]) == (1, 1)
