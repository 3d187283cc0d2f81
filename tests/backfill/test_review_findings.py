"""Review findings on the packed backfill write path (commit a393413), as regression tests.

Each test uses real SQLite files (or the loopback Cloudflare API, itself backed by SQLite).
"Another writer" is a plain second SQLite connection committing rows at a chosen moment, as the
dual-writing worker would. Findings 2 and 3 were known limitations (strict xfails) until the
run's child rows carried its stamp in `created_at` (`Provenance.stamp`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill.apply import (
    Ledger,
    StatementCounter,
    announce,
    apply_plans,
    apply_revert,
    max_ids,
    plan_revert,
    reconcile,
)
from backfill.ledger import load_run
from backfill.packing import BatchLimits, StatementLimits, pack_jobs
from backfill.revert import run_rows
from tests.backfill.test_packing import (
    DDL,
    RUN,
    WORKER,
    backfill,
    content,
    job,
    ledger_rows,
    new_db,
    read,
    record,
)
from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub, FaultPlan
from verifier.sources.cloudflare import CloudflareClient, RemoteCredentials, RetryPolicy
from verifier.sources.local import LocalD1
from verifier.sources.remote import RemoteD1

pytest_plugins = ("tests.remote_fixtures",)

DATE = "2026-11-16"
WORKER_EXECUTION = (
    "INSERT INTO job_executions (job_type, execution_date, execution_time, status, metadata) "
    "VALUES ('analysis', ?, ?, 'success', '{\"worker\":true}')"
)


def worker_rows(d1: LocalD1) -> None:
    """D1 as the worker left it: the date's latest execution (id 1) with AAPL only."""
    plans = pack_jobs([job(1, record(DATE, symbols=["AAPL"]), by=WORKER)], StatementLimits())
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in plans])


class WriterAfterCommit:
    """A local D1 where another writer commits rows right after each backfill batch commits
    (before the run's lookup of what the batch inserted)."""

    def __init__(self, inner: LocalD1, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.inner, self.writes = inner, writes

    def query(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.inner.query(sql, params)

    def describe(self) -> str:
        return self.inner.describe()

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        changes = self.inner.execute_batch(statements)
        with sqlite3.connect(self.inner.path) as conn:
            for sql, params in self.writes:
                conn.execute(sql, params)
        self.writes = []
        return changes

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        results = self.inner.execute_batch_rows(statements)
        self.execute_batch([])  # the other writer commits
        return results


# --- 1. a latest record's parent is looked up again after the commit -------------------------


def test_a_run_the_worker_adds_after_the_commit_does_not_move_the_ledger_to_its_rows(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker_rows(d1)
    # Right after our batch commits, the worker dual-writes a later run of the same date, with
    # its own MSFT result (the daily "latest" KV key now describes that run).
    racing = WriterAfterCommit(d1, [
        (WORKER_EXECUTION, (DATE, f"{DATE}T21:00:00.000Z")),
        ("INSERT INTO analysis_results (execution_id, symbol) VALUES (2, 'MSFT')", ()),
    ])
    backfill(tmp_path, racing, [job(1, record(DATE, symbols=["AAPL", "MSFT"]), whole=False)])
    ours = read(d1.path, "SELECT id FROM analysis_results WHERE execution_id = 1 AND "
                         "symbol = 'MSFT'")
    assert ours == [(2,)]  # the run's MSFT went under execution 1, the latest at the time
    assert ledger_rows(tmp_path) == {("analysis_results", 2)}  # not the worker's, id 3
    run = load_run(tmp_path / "runs", RUN.run_id)
    apply_revert(d1, plan_revert(d1, run), ledger=Ledger(run.path, RUN.run_id))
    assert read(d1.path, "SELECT id, execution_id, symbol FROM analysis_results ORDER BY id") == [
        (1, 1, "AAPL"), (3, 2, "MSFT")  # the worker's rows, and only those
    ]


# --- 2. a batch whose answer was lost and that the client sent again ---------------------------


@pytest.fixture
def remote_d1(cf_server: CloudflareStub) -> tuple[RemoteD1, sqlite3.Connection]:
    client = CloudflareClient(
        RemoteCredentials(TOKEN, ACCOUNT, cf_server.base_url),
        retry=RetryPolicy(backoff_s=0.005, backoff_cap_s=0.02, timeout_s=10.0),
    )
    database = cf_server.add_database("retried", schema_sql=DDL)
    return RemoteD1(client, database), cf_server.d1(database)


def test_a_batch_committed_twice_over_a_lost_answer_still_records_its_rows(
    cf_server: CloudflareStub, remote_d1: tuple[RemoteD1, sqlite3.Connection], tmp_path: Path
) -> None:
    d1, db = remote_d1
    plans = pack_jobs([job(1, record(DATE, symbols=["AAPL"]), by=WORKER)], StatementLimits())
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in plans])
    before = {t: db.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]
              for t in ("job_executions", "analysis_results", "report_snapshots")}
    # seed 1: of the run's /raw requests, the first (the max ids read) and the third (the batch)
    # are carried out and their answers cut off; their retries are not.
    cf_server.set_faults(FaultPlan(seed=1, dropped=0.5, kinds=frozenset({"d1_raw"})))
    ledger = Ledger.create(tmp_path / "runs", RUN.run_id, {"mode": "apply"})
    apply_plans(d1, [job(1, record(DATE, symbols=["AAPL", "MSFT", "NVDA"]), whole=False),
                     job(2, record("2026-11-17", symbols=["TSLA"]))],
                ledger=ledger, counter=StatementCounter())
    ledger.finish()
    cf_server.set_faults(FaultPlan())
    assert [e.kind for e in cf_server.log].count("d1_raw") >= 3  # max ids, the lost one, retry
    assert [e.fault for e in cf_server.log if e.kind == "d1_raw"][-2:] == ["drop", None]
    added = {(t, i) for t, n in before.items()
             for (i,) in db.execute(f"SELECT id FROM {t} WHERE id > ?", (n,))}
    assert added == {("analysis_results", 2), ("analysis_results", 3),
                     ("job_executions", 2), ("analysis_results", 4)}
    assert ledger_rows(tmp_path) == added  # MSFT and NVDA too: under execution 1, stamped


# --- 3. a batch killed before it was sent claims the worker's dual-written rows ---------------


def test_a_batch_killed_before_its_request_claims_no_row_on_resume(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker_rows(d1)
    plans = [job(1, record(DATE, symbols=["AAPL", "MSFT"]), whole=False)]
    ledger = Ledger.create(tmp_path / "runs", RUN.run_id, {"mode": "apply"})
    announce(ledger, plans, max_ids(d1), 1)  # job lines fsync'd; SIGKILL before the request
    with sqlite3.connect(d1.path) as conn:  # meanwhile the worker writes MSFT itself
        conn.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (1, 'MSFT')")
    before = content(d1.path)
    resumed = Ledger.resume(load_run(tmp_path / "runs", RUN.run_id))
    reconcile(d1, resumed)
    assert ledger_rows(tmp_path) == set()  # not the worker's MSFT: it has no stamp
    run = load_run(tmp_path / "runs", RUN.run_id)
    apply_revert(d1, plan_revert(d1, run), ledger=Ledger(run.path, RUN.run_id))
    assert content(d1.path) == before


def test_a_run_begun_before_the_stamp_is_reconciled_by_its_time(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker_rows(d1)
    before = content(d1.path)
    plan = job(1, record(DATE, symbols=["AAPL", "MSFT"]), whole=False)
    unstamped = dataclasses.replace(
        plan, rows=tuple(dataclasses.replace(r, stamp=None) for r in plan.rows)
    )  # as a kv2d1 from before the stamp planned it
    ledger = Ledger.create(tmp_path / "runs", RUN.run_id, {"mode": "apply"})
    lines = ledger.path.read_text().splitlines()
    started = json.loads(lines[0])
    del started["stamped"]  # and began its ledger
    ledger.path.write_text("\n".join([json.dumps(started), *lines[1:]]) + "\n")
    announce(ledger, [unstamped], max_ids(d1), 1)
    statements = pack_jobs([unstamped], StatementLimits())
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in statements])  # then killed
    resumed = Ledger.resume(load_run(tmp_path / "runs", RUN.run_id))  # by this kv2d1
    reconcile(d1, resumed)
    assert ledger_rows(tmp_path) == {("analysis_results", 2)}  # MSFT: created within its window
    run = load_run(tmp_path / "runs", RUN.run_id)
    apply_revert(d1, plan_revert(d1, run), ledger=Ledger(run.path, RUN.run_id))
    assert content(d1.path) == before


# --- 4. a ledger line cut short by a kill, then appended to ------------------------------------


def test_a_ledger_line_cut_short_by_a_kill_does_not_damage_the_resumed_ledger(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker_rows(d1)
    plans = [job(1, record(DATE, symbols=["AAPL", "MSFT"]), whole=False)]
    ledger = Ledger.create(tmp_path / "runs", RUN.run_id, {"mode": "apply", "target": "t"})
    announce(ledger, plans, max_ids(d1), 1)
    with ledger.path.open("a", encoding="utf-8") as out:  # a big batch write, killed midway
        out.write('{"event":"batch","batch":2,"jo')
    resumed = Ledger.resume(load_run(tmp_path / "runs", RUN.run_id))
    reconcile(d1, resumed)
    apply_plans(d1, plans, ledger=resumed, counter=StatementCounter())
    resumed.finish()
    run = load_run(tmp_path / "runs", RUN.run_id)
    assert run.state == "finished"
    assert {(r.table, r.rowid) for r in run_rows(d1, run)} == {("analysis_results", 2)}


# --- 5. the revert dry run counts a row twice ----------------------------------------------------


def test_the_revert_plan_counts_what_the_revert_deletes(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker_rows(d1)
    plans = [job(1, record(DATE, "160000", symbols=["X"])),  # a later run of the date: batch 1
             job(2, record(DATE, symbols=["AAPL", "MSFT"]), whole=False)]  # its children: batch 2
    backfill(tmp_path, d1, plans, BatchLimits(max_rows=2))
    run = load_run(tmp_path / "runs", RUN.run_id)
    plan = plan_revert(d1, run)
    deleted = apply_revert(d1, plan, ledger=Ledger(run.path, RUN.run_id))
    assert deleted.by_table() == {"job_executions": 1, "analysis_results": 3,
                                  "report_snapshots": 0}
    assert plan.counts() == deleted.by_table()
