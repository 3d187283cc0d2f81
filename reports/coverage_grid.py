"""The coverage grid: which scheduled (day, job type) cells have their job in D1.

One grid feeds both the 7-day coverage metric (its last 7 days, `metric_days`) and the HTML
heatmap (all `GRID_DAYS` days, through `to_json`). A cell is expected when the schedule
rule of its job type falls on that day of the calendar; an error-severity finding makes it a
`defect` rather than `ok`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier.calendar import is_date, scheduled_on, today_et
from verifier.model import Finding, JobType, Severity, Window

GRID_DAYS = 35


def job_group(f: Finding) -> tuple[str, str] | None:
    """The (date, job type) a finding belongs to, from its natural key `type/date/run/…`."""
    parts = f.natural_key.split("/")
    return (parts[1], parts[0]) if len(parts) >= 3 and is_date(parts[1]) else None


class CellState(enum.StrEnum):
    OK = "ok"  # scheduled and in D1
    DEFECT = "defect"  # in D1, with findings of severity error
    MISSING = "missing"  # scheduled, not in D1
    EXTRA = "extra"  # in D1 on a day the schedule does not expect it
    NONE = "none"  # neither scheduled nor in D1


@dataclass(frozen=True)
class CoverageGrid:
    """Which (day, job type) cells have the job in D1, for the heatmap and the 7-day metric."""

    days: tuple[str, ...]
    job_types: tuple[str, ...]
    cells: Mapping[tuple[str, str], CellState]
    metric_days: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "metric_days": list(self.metric_days),
            "job_types": list(self.job_types),
            "cells": {t: [self.cells[(d, t)].value for d in self.days] for t in self.job_types},
        }


def grid_span(window: Window, now: dt.datetime, *, days: int = GRID_DAYS) -> tuple[str, str] | None:
    """First and last day of the heatmap: the window's end (at most yesterday, ET), back `days`."""
    yesterday = dt.date.fromisoformat(today_et(now)) - dt.timedelta(days=1)
    last = min(dt.date.fromisoformat(window.until), yesterday) if window.until else yesterday
    start = last - dt.timedelta(days=days - 1)
    if window.since:
        start = max(start, dt.date.fromisoformat(window.since))
    return (start.isoformat(), last.isoformat()) if start <= last else None


def build_grid(
    in_d1: set[tuple[str, str]],
    *,
    first_day: str,
    last_day: str,
    schedule: Mapping[str, str],
    calendar: str,
    findings: Sequence[Finding],
) -> CoverageGrid:
    """Hold the (day, job type) pairs D1 has against the schedule, day by day."""
    defects = {g for f in findings if f.severity is Severity.ERROR and (g := job_group(f))}
    present = set(schedule) | {t for _, t in in_d1}
    known = [t.value for t in JobType]
    types = [t for t in known if t in present] + sorted(present - set(known))
    days = _days(first_day, last_day)
    cells = {(d, t): _cell(d, t, schedule, calendar, in_d1, defects) for d in days for t in types}
    return CoverageGrid(tuple(days), tuple(types), cells, tuple(days[-7:]))


def _days(first_day: str, last_day: str) -> list[str]:
    day, last = dt.date.fromisoformat(first_day), dt.date.fromisoformat(last_day)
    return [(day + dt.timedelta(days=i)).isoformat() for i in range((last - day).days + 1)]


def _cell(
    day: str,
    job_type: str,
    schedule: Mapping[str, str],
    calendar: str,
    in_d1: set[tuple[str, str]],
    defects: set[tuple[str, str]],
) -> CellState:
    rule = schedule.get(job_type)
    expected = rule is not None and scheduled_on(rule, dt.date.fromisoformat(day), calendar)
    if (day, job_type) in in_d1:
        if (day, job_type) in defects:
            return CellState.DEFECT
        return CellState.OK if expected else CellState.EXTRA
    return CellState.MISSING if expected else CellState.NONE
