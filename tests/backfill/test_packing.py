"""Packed backfill writes on real SQLite: many rows per statement, many jobs per request, and
exactly what one guarded insert per row, one job after another, would write."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from backfill.packing import (
    MAX_LITERAL_BYTES,
    BatchLimits,
    StatementLimits,
    insert_sql,
    iter_batches,
    pack_jobs,
    request_bytes,
    values_row,
)
from backfill.plan import (
    JobPlan,
    Provenance,
    execution_row,
    report_rows,
    symbol_rows,
)
from backfill.sqlfile import FILE_LIMITS, inline
from verifier.model import LATEST, JobKey, JobRecord, KvRecord, ReportRecord, SymbolResult, Table
from verifier.sources import D1Source
from verifier.sources.local import LocalD1

DDL = (Path(__file__).resolve().parents[2] / "schema" / "scheduled-jobs.sql").read_text()
RUN = Provenance("20261129T120000Z-0a0b0c")
WORKER = Provenance("20261129T120500Z-0e0e0e")
ONE_ROW_AT_A_TIME = BatchLimits(max_rows=1, statement=StatementLimits(max_params=1))
TABLES = ("job_executions", "analysis_results", "report_snapshots")


def record(
    date: str = "2026-11-16",
    run: str = LATEST,
    *,
    symbols: Sequence[str] = ("AAPL", "MSFT"),
    report: bool = False,
    reasoning: str = "steady; -- up?",
    job_type: str = "analysis",
    at: str | None = None,
) -> KvRecord:
    results = tuple(
        SymbolResult(s, "bullish", 0.5 + i / 100, "up", reasoning, '["a"]', None, i)
        for i, s in enumerate(symbols)
    )
    time = None if run == LATEST else at or f"{date}T{int(run[:2]) + 5:02d}:{run[2:4]}:00.000Z"
    job = JobRecord(JobKey(date, job_type, run), execution_time=time, status="success",
                    duration_ms=1200, symbols_processed=len(symbols))
    rep = ReportRecord(job_type, date, '{"k":"v"}', "summary", 3) if report else None
    key = f"{job_type}_{date}" + ("" if run == LATEST else f"_{run}")
    return KvRecord(key, "B", job, results, rep, None, "ab" * 32)


def job(seq: int, rec: KvRecord, *, whole: bool = True, by: Provenance = RUN) -> JobPlan:
    """A plan straight from a record: the whole job, or its children only (stamped as `by`'s,
    as `backfill.plan.job_plan` stamps them)."""
    children = [*symbol_rows(rec, stamp=by.created_at), *report_rows(rec, stamp=by.created_at)]
    rows = [execution_row(rec, by), *children] if whole else children
    return JobPlan(seq, rec.kv_key, rec.job.key, tuple(rows))


def new_db(path: Path) -> LocalD1:
    with sqlite3.connect(path) as conn:
        conn.executescript(DDL)
    return LocalD1(path, readonly=False)


def read(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, tuple(params)).fetchall()


def content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, every column but `created_at`."""
    out = {}
    for table in TABLES:
        names = [r[1] for r in read(path, f"PRAGMA table_info({table})") if r[1] != "created_at"]
        out[table] = read(path, f"SELECT {', '.join(names)} FROM {table} ORDER BY id")
    return out


def backfill(
    tmp: Path, d1: D1Source, plans: list[JobPlan], limits: BatchLimits | None = None
) -> Any:
    ledger = Ledger.create(tmp / "runs", RUN.run_id, {"mode": "apply", "target": d1.describe()})
    result = apply_plans(d1, plans, ledger=ledger, counter=StatementCounter(), limits=limits)
    ledger.finish()
    return result


def ledger_rows(tmp: Path) -> set[tuple[str, int]]:
    run = load_run(tmp / "runs", RUN.run_id)
    return {(r["table"], r["rowid"]) for _, done in run.jobs() if done for r in done["rows"]}


# --- statements within D1's limits ---------------------------------------------------------------


def test_statements_hold_as_many_rows_as_100_parameters_allow_and_no_more() -> None:
    days = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(60)]
    plans = [job(i, record(day, "093000" if i % 2 else LATEST,
                           symbols=[f"S{n}" for n in range(i % 7)], report=i % 3 == 0))
             for i, day in enumerate(days)]
    packed = pack_jobs(plans, StatementLimits())
    assert [p.table for p in packed] == sorted((p.table for p in packed), key=list(Table).index)
    for table in Table:  # every row once, in job order
        rows = [r for p in packed if p.table == table for r in p.rows]
        assert rows == [r for plan in plans for r in plan.rows if r.table == table]
    for this, following in itertools.pairwise(packed):
        params = this.statement.params
        size = len(this.statement.sql.encode()) + MAX_LITERAL_BYTES * sum(
            not isinstance(p, str) for p in params
        )
        assert this.statement.sql.count("?") == len(params) <= 100 and size <= 100_000
        if following.table == this.table:  # full: the next row did not fit
            assert len(params) + len(values_row(following.rows[0]).params) > 100
    n_rows = sum(len(p.rows) for p in packed)
    n_params = sum(len(p.statement.params) for p in packed)
    allowed = 100 // (n_params / n_rows)  # rows per statement the limit allows, on average
    assert n_rows / len(packed) / allowed > 0.9  # the tail of each table aside, every one is full


def test_a_sql_file_packs_by_size_and_each_statement_stays_under_100_kb() -> None:
    long = "x" * 30_000
    [plan] = [job(1, record(symbols=[f"S{n}" for n in range(10)], reasoning=long))]
    packed = pack_jobs([plan], FILE_LIMITS)
    sizes = [len(inline(p.statement).encode()) for p in packed]
    assert [len(p.rows) for p in packed] == [1, 3, 3, 3, 1]
    assert max(sizes) < 100_000
    alone = pack_jobs([job(1, record(symbols=["S"], reasoning="y" * 150_000))], FILE_LIMITS)
    assert [len(p.rows) for p in alone] == [1, 1]  # a row too large for any statement goes alone


# --- duplicate keys inside one statement -------------------------------------------------------


def test_sqlite_checks_every_not_exists_before_inserting_so_one_statement_duplicates(
    tmp_path: Path,
) -> None:
    """Why the packer keeps rows that may share a natural key in separate statements."""
    d1 = new_db(tmp_path / "d1.sqlite")
    row = execution_row(record(run="093000"), RUN)
    tuple_ = values_row(row)
    sql = insert_sql(Table.JOB_EXECUTIONS, row.columns, [tuple_.sql, tuple_.sql])
    assert d1.execute_batch([(sql, tuple_.params * 2)]) == [2]
    assert read(d1.path, "SELECT count(*) FROM job_executions") == [(2,)]


def test_rows_that_may_share_a_natural_key_never_share_a_statement(tmp_path: Path) -> None:
    first, again = record(run="093000"), record(run="093000")
    other_run, latest = record(run="160000"), record()
    plans = [job(1, first), job(2, dataclasses.replace(again, kv_key="legacy-key")),
             job(3, other_run), job(4, latest)]
    packed = pack_jobs(plans, StatementLimits())
    executions = [[r.natural_key for r in p.rows] for p in packed if p.table == "job_executions"]
    assert executions == [
        ["analysis/2026-11-16/093000"],  # the same run twice: the second waits
        ["analysis/2026-11-16/093000", "analysis/2026-11-16/160000"],  # two runs: one statement
        ["analysis/2026-11-16/latest"],  # a latest key may be any run's of its date
    ]
    d1 = new_db(tmp_path / "d1.sqlite")
    backfill(tmp_path, d1, plans)
    assert read(d1.path, "SELECT execution_time FROM job_executions ORDER BY id") == [
        ("2026-11-16T14:30:00.000Z",), ("2026-11-16T21:00:00.000Z",)
    ]
    assert read(d1.path, "SELECT execution_id, symbol FROM analysis_results ORDER BY id") == [
        (1, "AAPL"), (1, "MSFT"), (2, "AAPL"), (2, "MSFT")
    ]  # the latest record's symbols were there: the 16:00 run is the latest of the date


# --- batches -------------------------------------------------------------------------------------


def test_one_request_mixes_new_executions_and_children_of_existing_ones(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker = pack_jobs([job(1, record(symbols=["AAPL"]), by=WORKER)], StatementLimits())
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in worker])
    plans = [
        job(1, record(symbols=["AAPL", "MSFT", "NVDA"]), whole=False),  # D1 has the execution
        job(2, record("2026-11-17", "093000", report=True)),
        job(3, record("2026-11-18", symbols=["TSLA"])),
    ]
    result = backfill(tmp_path, d1, plans)
    assert (result.jobs, result.requests, result.statements) == (3, 1, 3)  # one per table
    assert result.inserted.by_table() == {
        "job_executions": 2, "analysis_results": 5, "report_snapshots": 1
    }
    assert read(d1.path, "SELECT execution_id, symbol FROM analysis_results ORDER BY id") == [
        (1, "AAPL"), (1, "MSFT"), (1, "NVDA"), (2, "AAPL"), (2, "MSFT"), (3, "TSLA")
    ]
    run = load_run(tmp_path / "runs", RUN.run_id)
    recorded = {(r["table"], r["rowid"], r["parent"])
                for _, done in run.jobs() if done for r in done["rows"]}
    assert recorded == {
        ("analysis_results", 2, "existing"), ("analysis_results", 3, "existing"),
        ("job_executions", 2, "new"), ("analysis_results", 4, "new"),
        ("analysis_results", 5, "new"), ("report_snapshots", 1, "new"),
        ("job_executions", 3, "new"), ("analysis_results", 6, "new"),
    }
    apply_revert(d1, plan_revert(d1, run), ledger=Ledger(run.path, RUN.run_id))
    assert read(d1.path, "SELECT id, symbol FROM analysis_results") == [(1, "AAPL")]


def test_latest_and_per_run_children_find_their_executions_in_one_statement(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    with sqlite3.connect(d1.path) as conn:
        conn.executemany(
            "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
            "VALUES ('analysis', '2026-11-16', ?, 'success')",
            [("2026-11-16T14:30:00.000Z",), ("2026-11-16T21:00:00.000Z",),
             ("2026-11-16T14:30:00.731Z",)],  # 3: a duplicate of 1's run, to the second
        )
    plans = [job(1, record(run="093000", symbols=["AAPL"]), whole=False),
             job(2, record(symbols=["MSFT"]), whole=False)]
    packed = pack_jobs(plans, StatementLimits())
    assert [len(p.rows) for p in packed] == [2]
    backfill(tmp_path, d1, plans)
    assert read(d1.path, "SELECT execution_id, symbol FROM analysis_results ORDER BY id") == [
        (1, "AAPL"),  # per run: the first execution of the run
        (2, "MSFT"),  # latest: the latest run of the date
    ]
    assert ledger_rows(tmp_path) == {("analysis_results", 1), ("analysis_results", 2)}


def test_a_new_execution_of_a_date_waits_for_the_latest_records_children() -> None:
    latest_children = job(1, record(symbols=["AAPL"]), whole=False)
    later_run = job(2, record(run="160000"))
    batches = list(iter_batches([latest_children, later_run, job(3, record("2026-11-17"))],
                                BatchLimits()))
    assert [[p.seq for p in b] for b in batches] == [[1], [2, 3]]


def test_batches_are_bounded_by_rows_and_bytes() -> None:
    plans = [job(i, record(f"2026-11-{i:02d}", reasoning="z" * 1000)) for i in range(1, 29)]
    by_rows = list(iter_batches(plans, BatchLimits(max_rows=10)))
    assert [len(b) for b in by_rows] == [3] * 9 + [1]  # 3 rows a job
    by_bytes = list(iter_batches(plans, BatchLimits(max_bytes=10_000)))
    assert [p for b in by_bytes for p in b] == plans and len(by_bytes) > 5
    for batch, following in itertools.pairwise(by_bytes):
        size = sum(map(request_bytes, batch))
        assert size <= 10_000 < size + request_bytes(following[0])


# --- packed batches write what one row at a time writes -------------------------------------------

symbols = st.lists(st.sampled_from(["AAPL", "MSFT", "NVDA", "BRK/B"]), max_size=4)


@st.composite
def worlds(draw: Any) -> tuple[list[KvRecord], list[tuple[KvRecord, bool]]]:
    """What D1 already had (the worker's records), and the jobs to backfill (whole or children
    only), with clashing keys: runs and latest records of one date, one run twice."""
    def one() -> KvRecord:
        date = draw(st.sampled_from(["2026-11-16", "2026-11-17"]))
        run = draw(st.sampled_from([LATEST, "093000", "160000"]))
        at = draw(st.sampled_from([None, f"{date}T14:30:00.500Z"])) if run == "093000" else None
        return record(date, run, symbols=draw(symbols), report=draw(st.booleans()), at=at)

    present = [one() for _ in range(draw(st.integers(0, 3)))]
    jobs = [(one(), draw(st.booleans())) for _ in range(draw(st.integers(1, 8)))]
    return present, jobs


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_packed_batches_write_and_record_what_one_row_at_a_time_does(
    world: tuple[list[KvRecord], list[tuple[KvRecord, bool]]],
) -> None:
    present, jobs = world
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, limits in (("packed", None), ("rows", ONE_ROW_AT_A_TIME)):
            directory = Path(tmp) / name
            directory.mkdir()
            d1 = new_db(directory / "d1.sqlite")
            worker = [job(i, rec, by=WORKER) for i, rec in enumerate(present)]
            for plan in worker:
                d1.execute_batch([(p.statement.sql, p.statement.params)
                                  for p in pack_jobs([plan], StatementLimits(max_params=1))])
            before = content(d1.path)
            plans = [job(i, rec, whole=whole) for i, (rec, whole) in enumerate(jobs, start=1)]
            plans = [plan for plan in plans if plan.rows]  # as PlanSpool keeps them
            backfill(directory, d1, plans, limits)
            after = content(d1.path)
            ids = {t: len(before[t]) for t in TABLES}
            added = {(t, row[0]) for t in TABLES for row in after[t] if row[0] > ids[t]}
            assert ledger_rows(directory) == added  # the ledger knows every row, and no other
            results.append(after)
            run = load_run(directory / "runs", RUN.run_id)
            apply_revert(d1, plan_revert(d1, run), ledger=Ledger(run.path, RUN.run_id))
            assert content(d1.path) == before
            d1.close()
        assert results[0] == results[1]


class RacingD1:
    """A local D1 where another writer commits rows after the max ids are read, just before
    the batch runs."""

    def __init__(self, inner: LocalD1, theirs: list[str]) -> None:
        self.inner, self.pending = inner, theirs
        self.their_rows: set[tuple[str, int]] = set()

    def query(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.inner.query(sql, params)

    def describe(self) -> str:
        return self.inner.describe()

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with sqlite3.connect(self.inner.path) as conn:
            for sql in self.pending:
                self.their_rows.add((sql.split()[2], int(conn.execute(sql).lastrowid or 0)))
        self.pending = []
        return self.inner.execute_batch(statements)

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        self.execute_batch([])  # the other writer commits first
        return self.inner.execute_batch_rows(statements)


def test_rows_another_writer_adds_during_a_batch_are_not_recorded_as_the_runs(
    tmp_path: Path,
) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    worker = pack_jobs([job(1, record(symbols=["AAPL"]), by=WORKER)], StatementLimits())
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in worker])
    racing = RacingD1(d1, [
        "INSERT INTO analysis_results (execution_id, symbol) VALUES (1, 'MSFT')",
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
        "VALUES ('analysis', '2026-11-17', '2026-11-17T23:00:00.000Z', 'success')",
    ])
    plans = [
        job(1, record(symbols=["AAPL", "MSFT", "NVDA"]), whole=False),  # MSFT: the worker's now
        job(2, record("2026-11-17", symbols=[])),  # a latest execution: the date has one now
        job(3, record("2026-11-17", "093000", symbols=["TSLA"])),
    ]
    result = backfill(tmp_path, racing, plans)
    assert result.requests == 1
    assert read(d1.path, "SELECT id, execution_id, symbol FROM analysis_results ORDER BY id") == [
        (1, 1, "AAPL"), (2, 1, "MSFT"), (3, 1, "NVDA"), (4, 3, "TSLA")
    ]
    run = load_run(tmp_path / "runs", RUN.run_id)
    by_job = {d["seq"]: {(r["table"], r["rowid"]) for r in d["rows"]} for _, d in run.jobs() if d}
    assert by_job == {
        1: {("analysis_results", 3)},  # not the worker's MSFT, though it came after the max ids
        2: set(),  # not job 3's execution, though it has job 2's natural key too
        3: {("job_executions", 3), ("analysis_results", 4)},
    }


def test_a_batch_killed_after_its_commit_is_reconciled_job_by_job(tmp_path: Path) -> None:
    d1 = new_db(tmp_path / "d1.sqlite")
    plans = [job(1, record(run="093000")), job(2, dataclasses.replace(record(run="093000"),
             kv_key="legacy-key")), job(3, record("2026-11-17", report=True))]
    ledger = Ledger.create(tmp_path / "runs", RUN.run_id, {"mode": "apply"})
    statements = pack_jobs(plans, StatementLimits())
    announce(ledger, plans, max_ids(d1), len(statements))
    d1.execute_batch([(p.statement.sql, p.statement.params) for p in statements])  # then killed
    assert reconcile(d1, Ledger.resume(load_run(tmp_path / "runs", RUN.run_id))) == 7
    run = load_run(tmp_path / "runs", RUN.run_id)
    assert {d["seq"]: sorted((r["table"], r["rowid"]) for r in d["rows"])
            for _, d in run.jobs() if d} == {
        1: [("analysis_results", 1), ("analysis_results", 2), ("job_executions", 1)],
        2: [],  # the same run from another KV key: its inserts found the rows there
        3: [("analysis_results", 3), ("analysis_results", 4), ("job_executions", 2),
            ("report_snapshots", 1)],
    }
