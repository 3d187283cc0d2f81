"""Business time: America/New_York dates and run times, and the NYSE trading calendar.

Holidays come from the maintained `holidays` library (its NYSE financial calendar), not from a
hand-written list. The library loads every market and country it knows on first use (~40 ms), so
it is imported only when a year's holidays are first needed; a process that has them already
(a forked worker) can hand them over (`known_holidays`, `adopt_holidays`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

ET = ZoneInfo("America/New_York")
UTC = dt.UTC


def parse_instant(text: str) -> dt.datetime | None:
    """An aware UTC datetime from ISO 8601 (`…Z`, offsets) or SQLite's `YYYY-MM-DD HH:MM:SS` (UTC)."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def instant_from_epoch_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)


# f-strings of the fields, not `strftime` (which costs a microsecond a call, and once per
# record adds up); years are written with four digits, as JavaScript writes them.


def iso_utc(value: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`, the form JavaScript's `toISOString()` writes."""
    u = value.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T"
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"
    )


def et_run_time(instant: dt.datetime) -> str:
    """The ET wall-clock time `HHMMSS` of an instant (the per-run key suffix)."""
    local = instant.astimezone(ET)
    return f"{local.hour:02d}{local.minute:02d}{local.second:02d}"


def et_date(instant: dt.datetime) -> str:
    return instant.astimezone(ET).date().isoformat()


def instant_of_run(date: str, hhmmss: str) -> dt.datetime:
    """The UTC instant of an ET business date and wall-clock `HHMMSS`."""
    day = dt.date.fromisoformat(date)
    clock = dt.time(int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:6]))
    return dt.datetime.combine(day, clock, tzinfo=ET).astimezone(UTC)


def is_date(text: object) -> bool:
    if not isinstance(text, str) or len(text) != 10:
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


_HOLIDAYS: dict[tuple[str, int], frozenset[dt.date]] = {}  # (calendar, year): a few per run


def _holidays_of(calendar: str, year: int) -> frozenset[dt.date]:
    days = _HOLIDAYS.get((calendar, year))
    if days is None:
        import holidays

        days = frozenset(holidays.financial_holidays(calendar, years=[year]).keys())
        _HOLIDAYS[calendar, year] = days
    return days


def warm_calendar(calendar: str, since: str, until: str) -> None:
    """Load the holidays of the years from `since` to `until` (dates) now."""
    if is_date(since) and is_date(until):
        for year in range(int(since[:4]), int(until[:4]) + 1):
            _holidays_of(calendar, year)


def known_holidays(calendar: str) -> dict[int, frozenset[dt.date]]:
    """The holidays of `calendar` loaded so far, by year."""
    return {year: days for (name, year), days in _HOLIDAYS.items() if name == calendar}


def adopt_holidays(calendar: str, by_year: dict[int, frozenset[dt.date]]) -> None:
    """Take holidays another process loaded (`known_holidays`) instead of loading them here."""
    for year, days in by_year.items():
        _HOLIDAYS.setdefault((calendar, year), days)


def is_trading_day(day: dt.date, calendar: str = "NYSE") -> bool:
    return day.weekday() < 5 and day not in _holidays_of(calendar, day.year)


def iter_days(since: str, until: str) -> Iterator[dt.date]:
    day = dt.date.fromisoformat(since)
    last = dt.date.fromisoformat(until)
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def scheduled_on(rule: str, day: dt.date, calendar: str = "NYSE") -> bool:
    """Whether a schedule rule (`trading_days`, `sundays`, `daily`) expects a run on `day`."""
    if rule == "trading_days":
        return is_trading_day(day, calendar)
    if rule == "sundays":
        return day.weekday() == 6
    return rule == "daily"


def expected_jobs(
    since: str, until: str, schedule: dict[str, str], calendar: str = "NYSE"
) -> Iterator[tuple[str, str]]:
    """`(date, job_type)` for every job the schedule expects in the window, in date order."""
    for day in iter_days(since, until):
        for job_type, rule in sorted(schedule.items()):
            if scheduled_on(rule, day, calendar):
                yield day.isoformat(), job_type


def today_et(now: dt.datetime | None = None) -> str:
    return et_date(now or dt.datetime.now(tz=UTC))
