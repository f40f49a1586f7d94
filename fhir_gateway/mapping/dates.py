"""Calendar arithmetic the mappings need but FHIRPath cannot do well (working days, months).

FHIRPath `%now + 10 days` drops the time zone in fhirpathpy and knows no holidays, so the dates
are computed here and handed to the mappings as inputs (`%intakeDeadline`, `%plannedEnd`).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from fhir_gateway.vocabulary import AMSTERDAM


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month = (h + ell - 7 * m + 114) // 31
    day = (h + ell - 7 * m + 114) % 31 + 1
    return date(year, month, day)


@lru_cache(maxsize=64)
def dutch_public_holidays(year: int) -> frozenset[date]:
    """Weekday-relevant Dutch public holidays (algemeen erkende feestdagen).

    New Year, Easter Monday, King's Day (27 April, 26 April when the 27th is a Sunday), Liberation
    Day (5 May, a general day off in lustrum years only), Ascension Day, Whit Monday, Christmas Day
    and Boxing Day. Good Friday is left out: most employers do not give it off.
    """
    easter = easter_sunday(year)
    kings = date(year, 4, 27)
    if kings.weekday() == 6:
        kings = date(year, 4, 26)
    days = {
        date(year, 1, 1),
        easter + timedelta(days=1),
        kings,
        easter + timedelta(days=39),
        easter + timedelta(days=50),
        date(year, 12, 25),
        date(year, 12, 26),
    }
    if year % 5 == 0:
        days.add(date(year, 5, 5))
    return frozenset(days)


def is_working_day(day: date, holidays: bool = True) -> bool:
    return day.weekday() < 5 and not (holidays and day in dutch_public_holidays(day.year))


def working_days_after(start: date, n: int, holidays: bool = True) -> date:
    """The n-th working day after `start` (start itself not counted); n = 0 gives `start`."""
    if n < 0:
        raise ValueError("n must not be negative")
    day = start
    while n:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            n -= 1
    return day


def add_months(start: date, months: int) -> date:
    """Same day `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def parse_datetime(value: str | datetime) -> datetime:
    """A FHIR dateTime with time zone -> aware datetime; a naive time is refused (FHIR needs a zone)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment


def fhir_datetime(moment: datetime) -> str:
    return parse_datetime(moment).isoformat(timespec="seconds")


def dutch_naive_utc(moment: datetime) -> datetime:
    """A moment as the naive UTC the store keeps; one without a zone is Dutch local time (how GP
    systems write authoredOn, and how a plain date is read)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=AMSTERDAM)
    return moment.astimezone(UTC).replace(tzinfo=None)
