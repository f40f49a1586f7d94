"""POST /v2: HL7 v2 ER7 over HTTP, for integration engines that do not speak MLLP.

Same service as the MLLP listener; the answer is always HTTP 200 with the ACK (AE/AR inside it),
because the ACK is the v2 outcome. Only a missing or invalid access token (401, from the bearer
middleware, as on /fhir), a wrong content type (415) and a message over
`GATEWAY_MAX_V2_MESSAGE_BYTES` (413, refused by `api.body_limit` while it streams, with an AR ACK)
are HTTP-level errors.

The sender is the token's client: MSH-4 must be one of its registered `v2_facilities`, the AGB
code of its own practice (`v2.senders.authorise`); otherwise AR. Only with `GATEWAY_INSECURE_DEV`
does a request without a token act as the practice MSH-4 names.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_gateway.api.auth import INSECURE_DEV_PRINCIPAL
from fhir_gateway.security.principal import Principal
from fhir_gateway.v2.ack import SEGMENT_SEQUENCE_ERROR, AckError, build_ack, header_guess
from fhir_gateway.v2.senders import SenderSource, bearer_sender
from fhir_gateway.v2.service import V2Service

ER7_TYPES = ("x-application/hl7-v2+er7", "application/hl7-v2", "application/hl7-v2+er7")


def too_large_ack(limit: int, prefix: bytes) -> tuple[str, bytes]:
    """The 413 body for `api.body_limit`: an AR ACK (MSA-2 from the message's MSH when readable)."""
    error = AckError(SEGMENT_SEQUENCE_ERROR, f"Message exceeds {limit} bytes; not processed")
    return ER7_TYPES[0], build_ack(header_guess(prefix), "AR", [error]).encode("utf-8")


def build_v2_api(v2_service: V2Service) -> APIRouter:
    api = APIRouter()

    @api.post("/v2", include_in_schema=False)
    async def post_v2(request: Request) -> Response:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type not in ER7_TYPES:
            return Response(
                f"Send HL7 v2 ER7 as one of: {', '.join(ER7_TYPES)}\n",
                status_code=415,
                media_type="text/plain",
            )
        body = await request.body()  # bounded while it streams: api.body_limit.BodyLimitMiddleware
        principal = getattr(request.state, "principal", None) or Principal.unauthenticated()
        address = request.client.host if request.client else None
        sender: SenderSource = None  # insecure dev, no token: MSH-4 decides (the service warns)
        if principal is not INSECURE_DEV_PRINCIPAL:  # resolved in the service's read transaction
            sender = partial(bearer_sender, principal, address)

        ack = await run_in_threadpool(v2_service.handle, body, sender)
        return Response(ack, status_code=200, media_type=content_type)

    return api
