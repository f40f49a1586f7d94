"""What each referral was when it was posted (table `referral_digests`): a resend is compared
with it, so a reused ServiceRequest.identifier with other content is refused instead of being
answered with another patient's referral.

One row per stored ServiceRequest: its id and the SHA-256 of the canonical posted content
(`workflow/referrals.py::posted_digest` defines it; this module only reads and writes rows).
A table of its own rather than a tag on the resource: clients never see it, an update of the
ServiceRequest cannot drop it, and a minimised view has nothing to cut. Migration:
`0010_referral_digests`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from fhir_gateway.store.prepared import Prepared
from fhir_gateway.store.tables import SQLModel


class ReferralDigestRow(SQLModel, table=True):
    __tablename__ = "referral_digests"

    service_request_id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    digest: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))


T = ReferralDigestRow.__table__  # type: ignore[attr-defined]
_INSERT = Prepared(sa.insert(T), keys=("service_request_id", "digest"))
_SELECT = sa.select(T.c.digest).where(T.c.service_request_id == sa.bindparam("b_id"))


def record(session: Any, service_request_id: str, digest: str) -> None:
    """Remember the digest of a referral stored in this transaction."""
    _INSERT.rows(session, {"service_request_id": service_request_id, "digest": digest})


def find(session: Any, service_request_id: str) -> str | None:
    """The digest stored with a referral; None for referrals stored before digests were kept."""
    value = session.execute(_SELECT, {"b_id": service_request_id}).scalar()
    return value if isinstance(value, str) else None
