from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import holidays
import pytest

from verifier import calendar
from verifier.calendar import (
    et_run_time,
    expected_jobs,
    instant_of_run,
    is_trading_day,
    iso_utc,
    parse_instant,
)

REPO = Path(__file__).resolve().parents[2]


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


def _fresh(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """A process that has loaded no holidays yet, with its cache in `folder` (None: none)."""
    monkeypatch.setattr(calendar, "_HOLIDAYS", {})
    monkeypatch.setenv(calendar.CACHE_ENV, str(folder) if folder else "")


def _without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the holidays library was asked")

    monkeypatch.setattr(holidays, "financial_holidays", refuse)


def test_holidays_come_from_the_cache_file_without_asking_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fresh(monkeypatch, tmp_path)
    assert not is_trading_day(dt.date(2026, 11, 26))  # computed, and written down
    assert json.loads((tmp_path / "holidays-NYSE.json").read_text())["years"]["2026"]
    _fresh(monkeypatch, tmp_path)
    _without_the_library(monkeypatch)
    assert not is_trading_day(dt.date(2026, 11, 26))
    assert is_trading_day(dt.date(2020, 11, 27))  # ten years either side came with it


def test_a_cache_of_another_library_version_or_a_broken_one_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "holidays-NYSE.json"
    for text in ['{"library": "another", "years": {"2026": []}}', "{not json", '{"years": 1}']:
        cache.write_text(text)
        _fresh(monkeypatch, tmp_path)
        assert not is_trading_day(dt.date(2026, 11, 26)), text
        assert "2026-11-26" in json.loads(cache.read_text())["years"]["2026"]


def test_a_cache_that_cannot_be_written_or_is_turned_off_only_costs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder would go
    for folder in (blocked / "kv2d1", None):
        _fresh(monkeypatch, folder)
        assert not is_trading_day(dt.date(2026, 11, 26))
    assert list(tmp_path.iterdir()) == [blocked]


def test_a_process_with_the_cache_never_imports_the_library(tmp_path: Path) -> None:
    probe = (
        "import datetime as dt, sys; from verifier.calendar import is_trading_day; "
        "print(is_trading_day(dt.date(2026, 11, 26)), 'holidays' in sys.modules)"
    )
    env = {**os.environ, calendar.CACHE_ENV: str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
            check=True,
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["False", "True"], ["False", "False"]]
