"""Routing: the social map (directory) and the choice of welfare organisation for a referral."""

from fhir_gateway.routing.directory import (
    CoverageRange,
    Directory,
    normalise_postcode,
)
from fhir_gateway.routing.router import Route, address_house_number, pick_address, route

__all__ = [
    "CoverageRange",
    "Directory",
    "Route",
    "address_house_number",
    "normalise_postcode",
    "pick_address",
    "route",
]
