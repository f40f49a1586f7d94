"""Inputs the coverage-guided fuzzer (`python -m benchmarks.fuzz`) found, minimised, as plain tests.

Each one crashed a layer below the HTTP/MLLP edge with a Python error (a 500, or an AR ACK saying
"internal error") before it was fixed; now each gets the gateway's own answer.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from fhir_gateway.fhir.models import check_resource
from fhir_gateway.fhir.outcome import Invalid
from fhir_gateway.fhir.search import TokenValue, _token, parse_search, search_escape
from fhir_gateway.fhir.searchparams import DateRange, parse_date_range
from fhir_gateway.fhir.strict_json import JsonLimits, loads
from fhir_gateway.v2.ack import AckError, build_ack
from fhir_gateway.v2.inbound import parse


@pytest.mark.parametrize(
    "raw",
    [
        # fhir.resources' url/uri validators call `value.startswith` before checking the type
        b'{"resourceType":"Endpoint","address":1e+308}',
        b'{"resourceType":"Endpoint","address":12}',
        # ... and its primitive-extension validator calls `.get` on whatever `_element` holds
        b'{"resourceType":"Patient","address":[{"line":["a"],"_line":["12345678"]}],"telecom":[1]}',
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400_not_a_python_error(raw: bytes) -> None:
    with pytest.raises(Invalid) as raised:
        check_resource(loads(raw, JsonLimits()))
    assert raised.value.status == 400
    assert raised.value.issues[0].code in ("structure", "value")
    orjson.dumps(raised.value.outcome())


@pytest.mark.parametrize("control_id", [b"\\X0D\\HHIJ-242", b"A\\X0A\\B", b"A\\X0D0A\\B", b"\\.br\\x"])
def test_msa_2_reads_back_as_the_control_id_sent(control_id: bytes) -> None:
    """MSH-10 `\\X0D\\HHIJ-242` is CR + text; the ACK wrote the CR as `\\.br\\`, which reads back
    as LF, so MSA-2 no longer matched the message the sender was waiting on."""
    message = parse(b"MSH|^~\\&|APP\\X0D\\|FAC|GW|WOR|||REF^I12|" + control_id + b"|P|2.5\r")
    ack = parse(build_ack(message, "AE", [AckError(102, "x")]))
    msa = ack.segment("MSA")
    assert msa is not None and msa.value(2) == message.control_id
    assert ack.msh.value(5) == message.msh.value(3)  # sender and receiver swapped, exactly


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("9999", datetime(9999, 1, 1), datetime.max),
        ("9999-12", datetime(9999, 12, 1), datetime.max),
        ("9999-12-31", datetime(9999, 12, 31), datetime.max),
        ("9999-12-31T23:59:59", datetime(9999, 12, 31, 23, 59, 59), datetime.max),
        ("9999-12-31T23:30:00-01:00", datetime.max, datetime.max),
        ("0001-01-01T00:00:00+01:00", datetime.min, datetime(1, 1, 1, 0, 0, 0, 999999)),
    ],
)
def test_date_ranges_at_the_ends_of_the_calendar_are_clamped(
    text: str, low: datetime, high: datetime
) -> None:
    """`birthDate: 9999-12-31` was an OverflowError (the day after it) while indexing: a 500."""
    assert parse_date_range(text) == DateRange(low, high)


@pytest.mark.parametrize(
    ("raw", "system", "code"),
    [
        ("s|c", "s", "c"),
        ("|c", "", "c"),
        ("s|", "s", None),
        ("c", None, "c"),
        ("s\\|x|c", "s|x", "c"),
        ("s|a\\,b\\$\\\\", "s", "a,b$\\"),
    ],
)
def test_token_search_values_honour_fhir_escaping(raw: str, system: str | None, code: str | None) -> None:
    (condition,) = parse_search("Patient", [("identifier", raw)]).conditions
    assert condition.values == (TokenValue(system, code),)
    odd = "a|b,c$d\\"
    assert _token(search_escape(odd) + "|x") == TokenValue(odd, "x")
