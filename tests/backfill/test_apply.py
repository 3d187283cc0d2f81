"""Applying plans to real SQLite files: ledger, row ids, reconcile, revert, concurrent writers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill.apply import (
    Ledger,
    LedgerRun,
    StatementCounter,
    apply_plans,
    apply_revert,
    check_writable,
    find_unfinished,
    job_event,
    load_run,
    max_ids,
    plan_revert,
    read_events,
    reconcile,
)
from backfill.packing import BatchLimits, job_statements
from backfill.plan import JobPlan, Provenance, build_plans
from verifier.d1 import iter_d1_jobs
from verifier.diff import DiffContext, diff_streams
from verifier.errors import BackfillError
from verifier.model import (
    LATEST,
    Coverage,
    Finding,
    JobKey,
    JobRecord,
    KvRecord,
    SymbolResult,
    Window,
)
from verifier.sources.local import LocalD1

DDL = (Path(__file__).resolve().parents[2] / "schema" / "scheduled-jobs.sql").read_text()
NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
RUN_ID = "20261129T120000Z-0a0b0c"


class FileD1(LocalD1):
    """A writable local D1 file, with a plain connection beside it for the test's own reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, readonly=False, busy_timeout_ms=10_000)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)


def new_db(path: Path) -> FileD1:
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    conn.close()
    return FileD1(path)


def record(date: str, symbols: Sequence[str] = ("AAPL", "MSFT"), run: str = LATEST) -> KvRecord:
    results = tuple(SymbolResult(s, "bullish", 0.75, "up", None, None, None, 3) for s in symbols)
    time = None if run == LATEST else f"{date}T14:30:00.000Z"
    job = JobRecord(JobKey(date, "analysis", run), execution_time=time, status="success",
                    symbols_processed=len(symbols), symbols_successful=len(symbols),
                    symbols_failed=0)
    return KvRecord(f"analysis_{date}", "B", job, results, None, None, "cd" * 32)


def findings(d1: FileD1, records: list[KvRecord]) -> list[Finding]:
    ctx = DiffContext(NOW, Coverage(), kv_first_date={"analysis": "2026-11-01"})
    kv = sorted(records, key=lambda r: (r.job.key, r.kv_key))
    return list(diff_streams(kv, iter_d1_jobs(d1, Window()), ctx))


def plans(d1: FileD1, records: list[KvRecord], run_id: str = RUN_ID) -> list[JobPlan]:
    return list(build_plans(findings(d1, records), provenance=Provenance(run_id)))


def ledger_for(tmp_path: Path, d1: FileD1, run_id: str = RUN_ID) -> Ledger:
    return Ledger.create(tmp_path / "runs", run_id, {"mode": "apply", "target": d1.describe()})


def counts(d1: FileD1) -> tuple[int, int, int]:
    row = d1.conn.execute(
        "SELECT (SELECT count(*) FROM job_executions), (SELECT count(*) FROM analysis_results), "
        "(SELECT count(*) FROM report_snapshots)"
    ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2]))


def natural_key_duplicates(d1: FileD1) -> list[tuple[Any, ...]]:
    return d1.conn.execute(
        "SELECT job_type, execution_date, count(*) FROM job_executions "
        "GROUP BY job_type, execution_date HAVING count(*) > 1 "
        "UNION ALL SELECT execution_id, symbol, count(*) FROM analysis_results "
        "GROUP BY execution_id, symbol HAVING count(*) > 1"
    ).fetchall()


# --- applying --------------------------------------------------------------------------------


def test_apply_records_every_inserted_row_with_its_id(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    ledger = ledger_for(tmp_path, d1)
    result = apply_plans(d1, plans(d1, [record("2026-11-16"), record("2026-11-17")]),
                         ledger=ledger, counter=StatementCounter())
    assert result.inserted.by_table() == {
        "job_executions": 2, "analysis_results": 4, "report_snapshots": 0
    }
    assert (result.jobs, result.statements, result.requests) == (2, 2, 1)
    events = read_events(ledger.path)
    assert [e["event"] for e in events] == ["started", "batch", "job", "job", "done", "done"]
    assert events[1] == {"event": "batch", "batch": 1, "jobs": 2, "rows": 6, "statements": 2,
                         "at": events[1]["at"]}
    done = [r for e in events if e["event"] == "done" for r in e["rows"]]
    ids = {(r["table"], r["rowid"]) for r in done}
    assert ids == {("job_executions", 1), ("job_executions", 2)} | {
        ("analysis_results", i) for i in range(1, 5)
    }
    assert {r["parent"] for r in done} == {"new"}


def test_a_job_already_written_by_the_worker_inserts_nothing_and_records_nothing(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    job_plans = plans(d1, [record("2026-11-16")])
    d1.execute_batch([(s.sql, s.params) for p in plans(d1, [record("2026-11-16")], "20261129T115500Z-0e0e0e")
                      for s in job_statements(p)])
    ledger = ledger_for(tmp_path, d1)
    result = apply_plans(d1, job_plans, ledger=ledger, counter=StatementCounter())
    assert result.inserted.total == 0
    assert read_events(ledger.path)[-1] == {"event": "done", "seq": 1, "rows": []}


# Another process running the same guarded inserts, one short transaction each. (A subprocess,
# not multiprocessing: its resource tracker would outlive the test as a child of pytest.)
WRITER = """
import json, pathlib, sqlite3, sys, time
path, statements, ready = sys.argv[1], json.loads(pathlib.Path(sys.argv[2]).read_text()), sys.argv[3]
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
for index, (sql, params) in enumerate(statements):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql, params)
    conn.execute("COMMIT")
    time.sleep(0.0005)  # a worker's pace, so that the two really interleave
    if index == 10:
        pathlib.Path(ready).touch()
pathlib.Path(ready).touch()
"""


class Yielding(StatementCounter):
    """After our first batch, waits until the other writer has committed another execution:
    the two runs' transactions interleave on any machine, however it schedules them."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path, self._batches = path, 0

    def after_batch(self) -> None:
        super().after_batch()
        self._batches += 1
        if self._batches != 1:
            return
        with sqlite3.connect(self._path, timeout=30) as conn:
            def theirs() -> int:
                sql = "SELECT count(*) FROM job_executions WHERE metadata LIKE '%dual-writer%'"
                return int(conn.execute(sql).fetchone()[0])

            before, deadline = theirs(), time.monotonic() + 30
            while theirs() == before and time.monotonic() < deadline:
                time.sleep(0.001)


def test_a_concurrent_writer_of_the_same_jobs_causes_no_duplicates(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    d1.conn.execute("PRAGMA journal_mode = WAL")
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(150)]
    records = [record(d.isoformat(), ("AAPL", "MSFT", "NVDA", "TSLA")) for d in days]
    ours, theirs = plans(d1, records), plans(d1, records, "20261129T120500Z-d0a1e5")
    statements = [(s.sql, s.params) for p in reversed(theirs) for s in job_statements(p)]
    (tmp_path / "theirs.json").write_text(json.dumps(statements))
    ready = tmp_path / "ready"
    other = subprocess.Popen([sys.executable, "-c", WRITER, str(d1.path),
                              str(tmp_path / "theirs.json"), str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists() and other.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert ready.exists()  # the other writer is under way: the two runs overlap
    result = apply_plans(d1, ours, ledger=ledger_for(tmp_path, d1), counter=Yielding(d1.path),
                         limits=BatchLimits(max_rows=10))  # short transactions, as the worker's
    assert other.wait(60) == 0
    assert natural_key_duplicates(d1) == []
    assert counts(d1) == (150, 150 * 4, 0)
    assert 0 < result.inserted.total < 150 * 5  # each side wrote part of it
    writers = [json.loads(m)["kv2d1"]["run_id"] for (m,) in
               d1.conn.execute("SELECT metadata FROM job_executions ORDER BY id")]
    switches = sum(a != b for a, b in itertools.pairwise(writers))
    assert switches >= 2  # their transactions interleaved with ours


# --- reconcile after a kill --------------------------------------------------------------------


def _announce(d1: FileD1, ledger: Ledger, plan: JobPlan) -> None:
    ledger.append(job_event(ledger.next_seq(), plan, max_ids(d1)), sync=True)


def test_a_job_committed_before_its_done_line_is_recovered(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    [plan] = plans(d1, [record("2026-11-16")])
    ledger = ledger_for(tmp_path, d1)
    _announce(d1, ledger, plan)
    d1.execute_batch([(s.sql, s.params) for s in job_statements(plan)])  # killed right after
    assert reconcile(d1, Ledger.resume(load_run(tmp_path / "runs", RUN_ID))) == 3
    done = [e for e in read_events(ledger.path) if e["event"] == "done"]
    assert [(r["table"], r["rowid"]) for r in done[0]["rows"]] == [
        ("job_executions", 1), ("analysis_results", 1), ("analysis_results", 2)
    ]
    assert done[0]["reconciled"] is True


def test_a_job_killed_before_commit_claims_nothing_the_worker_wrote_later(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    existing = record("2026-11-16", ("AAPL",))
    d1.execute_batch([(s.sql, s.params) for p in plans(d1, [existing], "20261129T115500Z-0e0e0e")
                      for s in job_statements(p)])
    [plan] = plans(d1, [record("2026-11-16", ("AAPL", "MSFT"))])
    assert not plan.new_execution
    ledger = ledger_for(tmp_path, d1)
    _announce(d1, ledger, plan)  # ... and killed before its transaction
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    d1.conn.execute("INSERT INTO analysis_results (execution_id, symbol, created_at) "
                    "VALUES (1, 'MSFT', ?)", (later,))  # the worker, two hours later
    assert reconcile(d1, Ledger.resume(load_run(tmp_path / "runs", RUN_ID))) == 0


def test_unfinished_runs_are_found_for_their_target_only(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    ledger = ledger_for(tmp_path, d1)
    assert find_unfinished(tmp_path / "runs", d1.describe()) is not None
    assert find_unfinished(tmp_path / "runs", "another database") is None
    ledger.finish()
    assert find_unfinished(tmp_path / "runs", d1.describe()) is None


def test_a_line_cut_short_by_a_kill_is_ignored(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    ledger = ledger_for(tmp_path, d1)
    with ledger.path.open("a") as out:
        out.write('{"event":"job","seq":1,"ro')
    run = load_run(tmp_path / "runs", RUN_ID)
    assert [e["event"] for e in run.events] == ["started"]
    assert run.state == "started"


# --- revert ----------------------------------------------------------------------------------


def _backfill(tmp_path: Path, d1: FileD1, records: list[KvRecord]) -> LedgerRun:
    ledger = ledger_for(tmp_path, d1)
    apply_plans(d1, plans(d1, records), ledger=ledger, counter=StatementCounter())
    ledger.finish()
    return load_run(tmp_path / "runs", RUN_ID)


def test_revert_deletes_exactly_the_runs_rows(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    d1.execute_batch([(s.sql, s.params) for p in plans(d1, [record("2026-11-16", ("AAPL",))], "20261129T115500Z-0e0e0e")
                      for s in job_statements(p)])
    before = d1.conn.execute("SELECT * FROM analysis_results").fetchall()
    assert counts(d1) == (1, 1, 0)
    run = _backfill(tmp_path, d1, [record("2026-11-16", ("AAPL", "MSFT")), record("2026-11-17")])
    assert counts(d1) == (2, 4, 0)
    plan = plan_revert(d1, run)
    assert plan.counts() == {"job_executions": 1, "analysis_results": 3, "report_snapshots": 0}
    deleted = apply_revert(d1, plan, ledger=Ledger(run.path, RUN_ID))
    assert deleted.total == 4
    assert counts(d1) == (1, 1, 0)
    assert d1.conn.execute("SELECT * FROM analysis_results").fetchall() == before
    assert load_run(tmp_path / "runs", RUN_ID).state == "reverted"
    assert sum(plan_revert(d1, load_run(tmp_path / "runs", RUN_ID)).counts().values()) == 0


def test_a_row_added_later_to_a_backfilled_execution_blocks_its_revert(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    run = _backfill(tmp_path, d1, [record("2026-11-16")])
    d1.conn.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (1, 'NVDA')")
    plan = plan_revert(d1, run)
    assert plan.blocked and "analysis_results 3" in plan.blocked[0]
    with pytest.raises(BackfillError, match=r"cannot revert run .*execution 1 .*nothing was deleted"):
        apply_revert(d1, plan, ledger=Ledger(run.path, RUN_ID))
    assert counts(d1) == (1, 3, 0)


def test_the_delete_of_an_execution_is_guarded_against_a_child_added_meanwhile(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    run = _backfill(tmp_path, d1, [record("2026-11-16")])
    plan = plan_revert(d1, run)
    d1.conn.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (1, 'NVDA')")
    apply_revert(d1, plan, ledger=Ledger(run.path, RUN_ID))
    assert counts(d1) == (1, 1, 0)  # no cascade: the newcomer and its execution stay


def test_the_ledger_is_json_lines_with_natural_keys(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    run = _backfill(tmp_path, d1, [record("2026-11-16", ("AAPL",), run="093000")])
    lines = run.path.read_text().splitlines()
    batch, job = json.loads(lines[1]), json.loads(lines[2])
    assert (batch["event"], batch["statements"], job["batch"]) == ("batch", 2, 1)
    assert job["execution"] == {"job_type": "analysis", "execution_date": "2026-11-16",
                                "run_time": "2026-11-16T14:30:00"}
    assert [r["natural_key"] for r in job["rows"]] == [
        "analysis/2026-11-16/093000", "analysis/2026-11-16/093000/AAPL"
    ]
    assert dataclasses.asdict(StatementCounter()) == {"kill_after": None, "sent": 0}


def test_a_database_opened_read_only_refuses_before_anything_is_written(tmp_path: Path) -> None:
    new_db(tmp_path / "d1.sqlite")
    before = (tmp_path / "d1.sqlite").read_bytes()
    with pytest.raises(BackfillError, match="was opened read-only"):
        check_writable(LocalD1(tmp_path / "d1.sqlite"))
    assert (tmp_path / "d1.sqlite").read_bytes() == before
