"""Routing: the social map (directory) and the choice of welfare organisation for a referral."""

from fhir_gateway.routing.directory import (
    COVERAGE_URL,
    REGION_URL,
    WOR_CATEGORY_CODE,
    WOR_CATEGORY_SYSTEM,
    CoverageRange,
    Directory,
    normalise_postcode,
)
from fhir_gateway.routing.router import Route, address_house_number, pick_address, route

__all__ = [
    "COVERAGE_URL",
    "REGION_URL",
    "WOR_CATEGORY_CODE",
    "WOR_CATEGORY_SYSTEM",
    "CoverageRange",
    "Directory",
    "Route",
    "address_house_number",
    "normalise_postcode",
    "pick_address",
    "route",
]
