"""HL7 v2 for older GP systems: REF^I12 in (MLLP or POST /v2), ACK back, RRI^I12 out.

message (ER7 data) → inbound (parse, map with mappings/v2-*.yaml) → service (journal, router, ACK)
→ mllp (asyncio listener and client); ack and outbound build the answers.
"""

from fhir_gateway.v2.ack import AckError, build_ack
from fhir_gateway.v2.inbound import V2ContentError, V2Rejected, load_mappings, parse, to_bundle
from fhir_gateway.v2.mapping import Loc, MappingResult, V2Mapping, V2MappingError
from fhir_gateway.v2.message import Message, Segment, V2ParseError
from fhir_gateway.v2.mllp import MLLPClient, MLLPServer, ServerThread, send_message
from fhir_gateway.v2.outbound import rri_for
from fhir_gateway.v2.service import V2Service

__all__ = [
    "AckError",
    "Loc",
    "MLLPClient",
    "MLLPServer",
    "MappingResult",
    "Message",
    "Segment",
    "ServerThread",
    "V2ContentError",
    "V2Mapping",
    "V2MappingError",
    "V2ParseError",
    "V2Rejected",
    "V2Service",
    "build_ack",
    "load_mappings",
    "parse",
    "rri_for",
    "send_message",
    "to_bundle",
]
