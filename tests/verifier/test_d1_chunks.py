"""Reading D1 in chunks of dates: whole dates, about N executions each, nothing missed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from verifier.d1 import date_chunks, iter_d1_jobs
from verifier.model import Window
from verifier.profile import schema_dir
from verifier.sources.local import LocalD1

# executions per date: 2026-01-01 … 2026-01-08, one heavy date in the middle
PER_DATE = {f"2026-01-0{d}": n for d, n in zip(range(1, 9), (3, 1, 2, 9, 1, 1, 4, 2), strict=True)}


@pytest.fixture()
def d1(tmp_path: Path) -> LocalD1:
    path = tmp_path / "d1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript((schema_dir() / "scheduled-jobs.sql").read_text())
    for date, n in PER_DATE.items():
        for i in range(n):
            conn.execute(
                "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
                "VALUES ('intraday', ?, ?, 'success')",
                (date, f"{date}T{10 + i:02d}:00:00.000Z"),
            )
    conn.commit()
    conn.close()
    return LocalD1(path)


def test_chunks_hold_whole_dates_of_at_most_the_budget(d1: LocalD1) -> None:
    chunks = date_chunks(d1, Window(), 4)
    assert chunks == [
        Window("2026-01-01", "2026-01-02"),
        Window("2026-01-03", "2026-01-03"),
        Window("2026-01-04", "2026-01-04"),  # 9 executions: one date is never split
        Window("2026-01-05", "2026-01-06"),
        Window("2026-01-07", "2026-01-07"),
        Window("2026-01-08", "2026-01-08"),
    ]


def test_chunks_respect_the_window_and_none_means_one_read(d1: LocalD1) -> None:
    window = Window("2026-01-05", "2026-01-20")
    assert date_chunks(d1, window, 100) == [Window("2026-01-05", "2026-01-08")]
    assert date_chunks(d1, window, None) == [window]
    assert date_chunks(d1, Window("2027-01-01", None), 5) == [Window("2027-01-01", None)]


@pytest.mark.parametrize("budget", [1, 2, 5, 1000])
def test_every_execution_is_read_once_whatever_the_budget(d1: LocalD1, budget: int) -> None:
    jobs = list(iter_d1_jobs(d1, Window(), per_chunk=budget))
    assert len(jobs) == sum(PER_DATE.values())
    assert len({j.row_id for j in jobs}) == len(jobs)
    assert [j.job.key.execution_date for j in jobs] == sorted(j.job.key.execution_date for j in jobs)
