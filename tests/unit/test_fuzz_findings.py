"""Inputs the coverage-guided fuzzer (`python -m benchmarks.fuzz`) found, minimised, as plain tests.

Each one crashed a layer below the HTTP/MLLP edge with a Python error (a 500, or an AR ACK saying
"internal error") before it was fixed; now each gets the gateway's own answer.
"""

from __future__ import annotations

import orjson
import pytest

from fhir_gateway.fhir.jsonlimits import JsonLimits, loads
from fhir_gateway.fhir.models import check_resource
from fhir_gateway.fhir.outcome import Invalid


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
