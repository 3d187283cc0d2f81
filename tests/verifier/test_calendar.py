from __future__ import annotations

import datetime as dt

from verifier.calendar import (
    et_run_time,
    expected_jobs,
    instant_of_run,
    is_trading_day,
    iso_utc,
    parse_instant,
)


def test_thanksgiving_2026_is_not_a_trading_day() -> None:
    assert not is_trading_day(dt.date(2026, 11, 26))
    assert is_trading_day(dt.date(2026, 11, 27))
    assert not is_trading_day(dt.date(2026, 11, 28))  # Saturday


def test_expected_jobs_skip_the_holiday_and_put_weekly_on_sunday() -> None:
    schedule = {"analysis": "trading_days", "weekly": "sundays"}
    jobs = list(expected_jobs("2026-11-25", "2026-11-29", schedule))
    assert jobs == [
        ("2026-11-25", "analysis"),
        ("2026-11-27", "analysis"),
        ("2026-11-29", "weekly"),
    ]


def test_run_times_are_new_york_wall_clock() -> None:
    instant = instant_of_run("2026-07-15", "083000")  # EDT
    assert iso_utc(instant) == "2026-07-15T12:30:00.000Z"
    assert et_run_time(instant) == "083000"
    winter = instant_of_run("2026-01-15", "083000")  # EST
    assert iso_utc(winter) == "2026-01-15T13:30:00.000Z"


def test_parse_instant_reads_both_d1_formats() -> None:
    iso = parse_instant("2026-11-16T13:30:00.123Z")
    sqlite = parse_instant("2026-11-16 13:30:00")
    assert iso is not None and sqlite is not None
    assert iso.replace(microsecond=0) == sqlite
    assert parse_instant("yesterday") is None
