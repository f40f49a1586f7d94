"""Mapping: declarative YAML templates with FHIRPath, region overlays and region settings."""

from fhir_gateway.mapping.dates import add_months, dutch_public_holidays, working_days_after
from fhir_gateway.mapping.engine import Mapping, MappingError
from fhir_gateway.mapping.inputs import feedback_for, feedback_inputs, map_file, referral_inputs
from fhir_gateway.mapping.loader import DEFAULT_REGION, MappingSet, deep_merge, load_mappings

__all__ = [
    "DEFAULT_REGION",
    "Mapping",
    "MappingError",
    "MappingSet",
    "add_months",
    "deep_merge",
    "dutch_public_holidays",
    "feedback_for",
    "feedback_inputs",
    "load_mappings",
    "map_file",
    "referral_inputs",
    "working_days_after",
]
