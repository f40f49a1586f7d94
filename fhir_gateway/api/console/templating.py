"""The console's Jinja2 environment: templates ship in `templates/`, every value is escaped.

Why Jinja2 with `select_autoescape()`: the pages show patient names and free text that came in
over FHIR and HL7 v2, so escaping must be the default that a template cannot forget — a value is
emitted raw only when it is already `Markup` (another rendered template, e.g. the report charts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


def moment(value: datetime | None) -> str:
    """`{{ x | moment }}`: a UTC minute, or "" for a moment that has not happened."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


ENV = Environment(
    loader=PackageLoader("fhir_gateway.api.console", "templates"),
    autoescape=select_autoescape(),
    undefined=StrictUndefined,  # a misspelt variable is an error, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["moment"] = moment


def render(name: str, **values: Any) -> Markup:
    """One template, rendered with autoescape; the result is markup for a page or a response."""
    return Markup(ENV.get_template(name).render(**values))
