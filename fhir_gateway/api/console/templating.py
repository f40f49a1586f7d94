"""The console's Jinja2 environment: templates ship in `templates/`, every value is escaped.

Why Jinja2 with `select_autoescape()`: the pages show patient names and free text that came in
over FHIR and HL7 v2, so escaping must be the default that a template cannot forget — a value is
emitted raw only when it is already `Markup` (another rendered template, e.g. the report charts).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from fhir_gateway.api.console.labels import label

ZONE = ZoneInfo("Europe/Amsterdam")  # the people who read the console are in the Netherlands
MONTHS = ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec")


def as_moment(value: datetime | str | None) -> datetime | date | None:
    """A datetime (naive = UTC, how the store keeps it) or a FHIR date/dateTime/instant string;
    a bare date stays a date (it has no time of day to convert)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def moment(value: datetime | str | None) -> str:
    """`{{ x | moment }}`: "4 dec 2026 09:30" in Europe/Amsterdam, to the minute; a date alone
    as "4 dec 2026"; "" for a moment that has not happened (or text that is no moment)."""
    when = as_moment(value)
    if when is None:
        return "" if value in (None, "") else str(value)
    if not isinstance(when, datetime):
        return f"{when.day} {MONTHS[when.month - 1]} {when.year}"
    local = when.astimezone(ZONE)
    return f"{local.day} {MONTHS[local.month - 1]} {local.year} {local:%H:%M}"


def iso(value: datetime | str | None) -> str:
    """`{{ x | iso }}`: the same moment as ISO 8601 in Amsterdam time with its offset, to the
    second (for a tooltip or a `<time datetime>`)."""
    when = as_moment(value)
    if isinstance(when, datetime):
        return when.astimezone(ZONE).isoformat(timespec="seconds")
    return when.isoformat() if when else ""


ENV = Environment(
    loader=PackageLoader("fhir_gateway.api.console", "templates"),
    autoescape=select_autoescape(),
    undefined=StrictUndefined,  # a misspelt variable is an error, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["moment"] = moment
ENV.filters["iso"] = iso
ENV.filters["nl"] = label


def render(name: str, **values: Any) -> Markup:
    """One template, rendered with autoescape; the result is markup for a page or a response."""
    return Markup(ENV.get_template(name).render(**values))
