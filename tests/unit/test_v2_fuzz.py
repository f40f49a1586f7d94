"""Property: whatever bytes arrive, V2Service answers with a readable ACK and never raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_gateway.app import create_app
from fhir_gateway.loading import load_files
from fhir_gateway.settings import Settings
from fhir_gateway.store.database import Database
from fhir_gateway.v2.inbound import parse
from fhir_gateway.v2.senders import V2_SCOPES, V2Sender
from fhir_gateway.v2.service import V2Service

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "examples" / "v2" / "ref-i12-v25.hl7").read_bytes().replace(b"\n", b"\r")
# the authenticated sender of GOOD (MSH-4 01053417), as the transport would name it
BATAU = V2Sender(
    "praktijk-batau-his", "Organization/praktijk-batau", "gp-practice", V2_SCOPES, ("01053417",), "test"
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> V2Service:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'gw.db'}"
    Database(url).upgrade()
    app = create_app(Settings(database_url=url))
    assert all(r.ok for r in load_files(app.state.router, [ROOT / "examples" / "directory"]))
    return V2Service(app.state.router, "http://gateway.test/fhir")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "delimiter", "segment"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "delimiter":
            data[pos:pos] = draw(st.sampled_from([b"|", b"^", b"~", b"&", b"\\", b"\r", b"\\X4\\", b"\\E"]))
        else:
            segments = bytes(data).split(b"\r")
            i = draw(st.integers(0, len(segments) - 1))
            segments.insert(draw(st.integers(0, len(segments))), segments.pop(i))
            data = bytearray(b"\r".join(segments))
    return bytes(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_messages_always_get_an_ack(service: V2Service, data: bytes) -> None:
    outcome = service.process(data, BATAU)  # raises on any unhandled error
    ack = parse(service.handle(data, BATAU))
    msa = ack.segment("MSA")
    assert msa is not None and msa.value(1) in ("AA", "AE", "AR")
    assert outcome.code in ("AA", "AE", "AR")
