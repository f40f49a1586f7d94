"""Reports for the people around the loop: the municipality MeasureReport (`$wor-report`)."""

from fhir_gateway.reports.measure import MIN_CELL, to_csv
from fhir_gateway.reports.municipality import Period, build_report, parse_period
from fhir_gateway.vocabulary import MUNICIPALITY_REPORT_MEASURE as MEASURE

__all__ = ["MEASURE", "MIN_CELL", "Period", "build_report", "parse_period", "to_csv"]
