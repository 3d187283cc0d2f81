"""Business time: America/New_York dates and run times, and the NYSE trading calendar.

Holidays come from the maintained `holidays` library (its NYSE financial calendar), not from a
hand-written list. The library loads every market and country it knows when imported (~70 ms),
so what it computes is kept in a cache file (`cache_dir()`, one per calendar, valid for the
installed version of the library) and the library is imported only when that file lacks a year.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
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
CACHE_ENV = "KV2D1_CACHE_DIR"  # where computed holidays are kept; empty: keep none
_CACHE_SPAN = 10  # years either side of a missing one computed with it


def _holidays_of(calendar: str, year: int) -> frozenset[dt.date]:
    days = _HOLIDAYS.get((calendar, year))
    if days is None:
        _load_holidays(calendar, year)
        days = _HOLIDAYS[calendar, year]
    return days


def _load_holidays(calendar: str, year: int) -> None:
    """The holidays of `year` and the years around it, from the cache file when it holds them
    for the installed library, else computed by the library (and the file rewritten)."""
    stamp = _library_stamp()
    path = _cache_file(calendar)
    cached = _read_cache(path, stamp) if path and stamp else {}
    if year not in cached:
        import holidays

        for y in range(year - _CACHE_SPAN, year + _CACHE_SPAN + 1):
            if y not in cached and y >= 1:
                cached[y] = frozenset(holidays.financial_holidays(calendar, years=[y]).keys())
        if path and stamp:
            _write_cache(path, stamp, cached)
    for y, days in cached.items():
        _HOLIDAYS.setdefault((calendar, y), days)


def cache_dir() -> Path | None:
    """Where kv2d1 keeps what it computes once per machine: `$KV2D1_CACHE_DIR` (empty: nowhere),
    else `$XDG_CACHE_HOME/kv2d1`, else `~/.cache/kv2d1`."""
    raw = os.environ.get(CACHE_ENV)
    if raw is not None:
        return Path(raw) if raw.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kv2d1"


def _cache_file(calendar: str) -> Path | None:
    folder = cache_dir()
    if folder is None or not calendar.isalnum():
        return None
    return folder / f"holidays-{calendar}.json"


def _library_stamp() -> str | None:
    """What identifies the installed `holidays` (its files' sizes and times), without importing
    it (the import is what the cache saves); None when it cannot be found."""
    try:
        spec = importlib.util.find_spec("holidays")
        if spec is None or spec.origin is None:
            return None
        root = os.path.dirname(spec.origin)
        marks = [os.stat(os.path.join(root, name)) for name in ("__init__.py", "version.py")]
    except (ImportError, ValueError, OSError):
        return None
    return "|".join([root, *(f"{m.st_size}:{m.st_mtime_ns}" for m in marks)])


def _read_cache(path: Path, stamp: str) -> dict[int, frozenset[dt.date]]:
    """The years the cache file holds for this library; nothing when it is absent, unreadable,
    or from another version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("library") != stamp:
            return {}
        return {
            int(year): frozenset(dt.date.fromisoformat(d) for d in days)
            for year, days in data["years"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_cache(path: Path, stamp: str, years: dict[int, frozenset[dt.date]]) -> None:
    """Replace the cache file at once (a concurrent reader sees the old file or the new one);
    a cache that cannot be written is only a cache: the run goes on without it."""
    data = {
        "library": stamp,
        "years": {str(y): sorted(d.isoformat() for d in days) for y, days in sorted(years.items())},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def warm_calendar(calendar: str, since: str, until: str) -> None:
    """Load the holidays of the years from `since` to `until` (dates) now."""
    if is_date(since) and is_date(until):
        for year in range(int(since[:4]), int(until[:4]) + 1):
            _holidays_of(calendar, year)


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
    ordered = sorted(schedule.items())
    rules = set(schedule.values())
    for day in iter_days(since, until):
        on = {rule: scheduled_on(rule, day, calendar) for rule in rules}  # once a rule, a day
        if any(on.values()):
            date = day.isoformat()
            for job_type, rule in ordered:
                if on[rule]:
                    yield date, job_type


def today_et(now: dt.datetime) -> str:
    """The New York date of the instant `now` (a run's `as_of`)."""
    return et_date(now)
