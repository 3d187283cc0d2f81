"""Backfill plans on real SQLite files: rows from findings, guarded SQL, literals, ordering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.packing import StatementLimits, insert_sql, job_statements, pack_rows
from backfill.plan import (
    BACKFILLED,
    JobPlan,
    PlanSpool,
    Provenance,
    build_plans,
    symbol_rows,
)
from backfill.sqlfile import inline, literal
from verifier.d1 import iter_d1_jobs
from verifier.diff import DiffContext, diff_streams
from verifier.model import (
    LATEST,
    Category,
    Coverage,
    Finding,
    JobKey,
    JobRecord,
    KvRecord,
    ReportRecord,
    SymbolResult,
    Table,
    Window,
)

DDL = (Path(__file__).resolve().parents[2] / "schema" / "scheduled-jobs.sql").read_text()
NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
RUN = Provenance("20261129T120000Z-abcdef")
FIXTURE_REUSE = HealthCheck.function_scoped_fixture


class SqliteD1:
    """The read side of a `D1Source` over a plain sqlite3 connection (what the diff needs)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        return iter(self.conn.execute(sql, tuple(params)).fetchall())

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with self.conn:
            return [self.conn.execute(sql, tuple(p)).rowcount for sql, p in statements]

    def describe(self) -> str:
        return "a test database"


def new_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(DDL)
    return conn


def record(
    date: str = "2026-11-16",
    run: str = LATEST,
    *,
    symbols: Sequence[str] = ("AAPL", "MSFT"),
    report: bool = False,
    expiration: int | None = None,
    job_type: str = "analysis",
) -> KvRecord:
    results = tuple(
        SymbolResult(s, "bullish", 0.5 + i / 10, "up", f"it's {s}; -- really", '[{"a":1}]', None, i)
        for i, s in enumerate(symbols)
    )
    time = None if run == LATEST else f"{date}T{int(run[:2]) + 5:02d}:{run[2:4]}:{run[4:]}.000Z"
    job = JobRecord(
        JobKey(date, job_type, run),
        execution_time=time,
        status="success",
        symbols_processed=len(symbols),
        symbols_successful=len(symbols),
        symbols_failed=0,
    )
    rep = ReportRecord(job_type, date, '{"k":"v"}', None, 3) if report else None
    key = f"{job_type}_{date}" + ("" if run == LATEST else f"_{run}")
    return KvRecord(key, "B", job, results if not report else (), rep, expiration, "ab" * 32)


def findings_of(conn: sqlite3.Connection, records: list[KvRecord]) -> list[Finding]:
    ctx = DiffContext(NOW, Coverage())
    for r in records:  # as Verification does while it spools KV
        first = ctx.kv_first_date.get(r.job.key.job_type, "9999")
        ctx.kv_first_date[r.job.key.job_type] = min(first, r.job.key.execution_date)
    kv = sorted(records, key=lambda r: (r.job.key, r.kv_key))
    return list(diff_streams(kv, iter_d1_jobs(SqliteD1(conn), Window()), ctx))


def apply(conn: sqlite3.Connection, plans: list[JobPlan]) -> int:
    inserted = 0
    for plan in plans:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for statement in job_statements(plan):
                inserted += conn.execute(statement.sql, statement.params).rowcount
    return inserted


def plans_for(conn: sqlite3.Connection, records: list[KvRecord]) -> list[JobPlan]:
    return list(build_plans(findings_of(conn, records), provenance=RUN))


def rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


# --- what a plan holds ---------------------------------------------------------------------


def test_a_missing_job_plans_its_execution_children_and_provenance(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    [plan] = plans_for(conn, [record(symbols=("AAPL", "MSFT"))])
    assert [(r.table, r.natural_key) for r in plan.rows] == [
        (Table.JOB_EXECUTIONS, "analysis/2026-11-16/latest"),
        (Table.ANALYSIS_RESULTS, "analysis/2026-11-16/latest/AAPL"),
        (Table.ANALYSIS_RESULTS, "analysis/2026-11-16/latest/MSFT"),
    ]
    assert plan.new_execution
    assert apply(conn, [plan]) == 3
    [(metadata,)] = conn.execute("SELECT metadata FROM job_executions").fetchall()
    assert metadata == (
        '{"kv2d1":{"kv_key":"analysis_2026-11-16","kv_sha256":"'
        + "ab" * 32
        + '","run_id":"20261129T120000Z-abcdef","tool":"kv2d1","version":"0.1.0"}}'
    )
    assert RUN.marker in metadata


def test_the_runs_children_carry_its_stamp_in_a_created_at_sqlite_still_reads(
    tmp_path: Path,
) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    conn.execute("INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
                 "VALUES ('analysis', '2026-11-16', '2026-11-16T14:30:00.000Z', 'success')")
    conn.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (1, 'AAPL')")
    apply(conn, plans_for(conn, [record(symbols=("AAPL", "MSFT"), report=False)]))
    apply(conn, plans_for(conn, [record("2026-11-17", symbols=("NVDA",))]))
    rows = conn.execute("SELECT symbol, created_at, datetime(created_at) = substr(created_at, 1, "
                        "19) FROM analysis_results ORDER BY id").fetchall()
    assert [(s, c.endswith(RUN.stamp), same) for s, c, same in rows] == [
        ("AAPL", False, 1),  # the worker's: the default `datetime('now')`
        ("MSFT", True, 1),  # under the worker's execution
        ("NVDA", True, 1),  # under the run's own
    ]
    assert re.fullmatch(r"\.000[0-9]{9}", RUN.stamp)
    assert Provenance(RUN.run_id).stamp == RUN.stamp != Provenance("another run").stamp
    # The time is the run's start, which its id carries (one clock; D1's is never asked).
    assert RUN.created_at == "2026-11-29 12:00:00" + RUN.stamp
    assert [c for s, c, _ in rows if s != "AAPL"] == [RUN.created_at] * 2
    with pytest.raises(ValueError, match="time and digits"):
        insert_sql(Table.ANALYSIS_RESULTS, ("symbol",), ["(?)"], "'; DROP TABLE x; --")
    with pytest.raises(ValueError, match="does not start with its UTC time"):
        _ = Provenance("another run").created_at


def test_rows_of_existing_executions_join_them_by_natural_key(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    full = record(symbols=("AAPL", "BRK/B", "MSFT"))
    apply(conn, plans_for(conn, [dataclasses.replace(full, symbols=full.symbols[:1])]))
    [plan] = plans_for(conn, [full])
    assert not plan.new_execution
    assert [r.child_key for r in plan.rows] == ["BRK/B", "MSFT"]  # a "/" inside a symbol
    assert apply(conn, [plan]) == 2
    assert {r[0] for r in conn.execute("SELECT execution_id FROM analysis_results")} == {1}
    assert [f for f in findings_of(conn, [full]) if f.category in BACKFILLED] == []


def test_a_missing_report_joins_its_execution(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    weekly = record("2026-11-15", job_type="weekly", report=True)
    apply(conn, plans_for(conn, [weekly]))
    conn.execute("DELETE FROM report_snapshots")
    [plan] = plans_for(conn, [weekly])
    assert [(r.table, r.natural_key) for r in plan.rows] == [
        (Table.REPORT_SNAPSHOTS, "weekly/2026-11-15/latest/report:weekly")
    ]
    assert apply(conn, [plan]) == 1
    assert findings_of(conn, [weekly]) == []


def test_field_mismatches_duplicates_and_orphans_are_not_planned(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    kept = record("2026-11-16")
    apply(conn, plans_for(conn, [kept, record("2026-11-17")]))
    other = dataclasses.replace(kept.symbols[0], confidence=0.9)
    changed = dataclasses.replace(kept, symbols=(other, kept.symbols[1]))
    findings = findings_of(conn, [changed])
    assert {f.category for f in findings} == {Category.FIELD_MISMATCH, Category.ORPHAN_IN_D1}
    assert list(build_plans(findings, provenance=RUN)) == []


# --- guards ----------------------------------------------------------------------------------


def test_every_statement_is_a_guarded_insert_within_d1_limits(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    plans = plans_for(
        conn,
        [
            record(),
            record("2026-11-17", "093000"),
            record("2026-11-15", job_type="weekly", report=True),
        ],
    )
    for plan in plans:
        for statement in job_statements(plan):
            assert statement.sql.startswith("INSERT INTO ")
            assert "WHERE NOT EXISTS" in statement.sql or "AND NOT EXISTS" in statement.sql
            assert not re.search(r"\b(REPLACE|UPDATE|DELETE|BEGIN|COMMIT)\b", statement.sql, re.I)
            assert statement.sql.count("?") == len(statement.params) <= 100
            assert len(inline(statement).encode()) < 100_000


def test_applying_a_plan_twice_inserts_nothing_twice(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    plans = plans_for(conn, [record(), record("2026-11-17", "093000", report=True)])
    first = apply(conn, plans)
    assert first == 3 + 2
    assert apply(conn, plans) == 0
    assert conn.execute("SELECT count(*) FROM job_executions").fetchone() == (2,)


def test_a_latest_record_counts_any_run_of_its_date_as_present(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    [plan] = plans_for(conn, [record(symbols=("AAPL",))])
    conn.execute(
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
        "VALUES ('analysis', '2026-11-16', '2026-11-16T20:00:00.000Z', 'success'), "
        "('analysis', '2026-11-16', '2026-11-16T14:00:00.000Z', 'success')"
    )
    assert apply(conn, [plan]) == 1  # the symbol only: the date has runs
    assert conn.execute("SELECT execution_id FROM analysis_results").fetchall() == [(1,)]


def test_a_latest_records_children_go_to_the_latest_execution(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    conn.execute(
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
        "VALUES ('analysis', '2026-11-16', '2026-11-16T21:00:00.000Z', 'success'), "
        "('analysis', '2026-11-16', '2026-11-16T14:00:00.000Z', 'success')"
    )
    [packed] = pack_rows(symbol_rows(record(symbols=("AAPL",))), StatementLimits())
    assert conn.execute(packed.statement.sql, packed.statement.params).rowcount == 1
    assert conn.execute("SELECT execution_id FROM analysis_results").fetchall() == [(1,)]


def test_a_per_run_execution_is_identified_to_the_second(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    conn.execute(
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
        "VALUES ('analysis', '2026-11-17', '2026-11-17T14:30:00.731Z', 'success')"
    )
    rec = record("2026-11-17", "093000")
    assert rec.job.execution_time == "2026-11-17T14:30:00.000Z"
    [execution, *_] = plans_for(new_db(tmp_path / "empty.sqlite"), [rec])[0].rows
    [packed] = pack_rows([execution], StatementLimits())
    assert conn.execute(packed.statement.sql, packed.statement.params).rowcount == 0


# --- order and spooling ------------------------------------------------------------------------


def test_findings_of_one_record_make_one_job_and_urgent_jobs_come_first(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "d1.sqlite")
    soon = int((NOW + dt.timedelta(hours=3)).timestamp())
    sooner = int((NOW + dt.timedelta(hours=1)).timestamp())
    records = [
        record("2026-11-16"),
        record("2026-11-17", expiration=soon),
        record("2026-11-18"),
        record("2026-11-19", expiration=sooner),
    ]
    plans = plans_for(conn, records)
    assert [p.seq for p in plans] == [1, 2, 3, 4]
    with PlanSpool(tmp_path) as spool:
        for plan in plans:
            spool.add(plan)
        ordered = [p.job_key.execution_date for p in spool]
        assert (spool.jobs, spool.urgent_jobs) == (4, 2)
        assert spool.counts.by_table() == {
            "job_executions": 4,
            "analysis_results": 8,
            "report_snapshots": 0,
        }
    assert ordered == ["2026-11-19", "2026-11-17", "2026-11-16", "2026-11-18"]


# --- literals ----------------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)
values = st.none() | st.integers(-(2**63), 2**63 - 1) | texts | finite


@settings(max_examples=400, deadline=None)
@given(values)
def test_a_literal_reads_back_as_its_value(value: Any) -> None:
    conn = sqlite3.connect(":memory:")
    [(back, kind)] = conn.execute(f"SELECT {literal(value)}, typeof({literal(value)})").fetchall()
    assert back == value
    assert kind == {type(None): "null", int: "integer", float: "real", str: "text"}[type(value)]


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(reasoning=texts, confidence=st.floats(0, 1), news=st.none() | st.integers(0, 99))
def test_an_inlined_statement_writes_what_the_bound_one_does(
    tmp_path: Path, reasoning: str, confidence: float, news: int | None
) -> None:
    rec = record(symbols=("AAPL",))
    result = dataclasses.replace(
        rec.symbols[0], reasoning=reasoning, confidence=confidence, news_count=news
    )
    rec = dataclasses.replace(rec, symbols=(result,))
    bound, inlined = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (bound, inlined):
        conn.executescript(DDL)
    [plan] = plans_for(bound, [rec])
    for statement in job_statements(plan):
        bound.execute(statement.sql, statement.params)
        inlined.executescript(inline(statement) + ";")
    for table in ("job_executions", "analysis_results"):
        assert content(bound, table) == content(inlined, table)


def content(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, every column but `created_at`, with each value's SQLite type."""
    names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "created_at"]
    columns = ", ".join(f"{n}, typeof({n})" for n in names)
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()


# --- the invariant -----------------------------------------------------------------------------

names = st.sampled_from(["AAPL", "MSFT", "NVDA", "TSLA", "BRK/B"])
symbols = st.lists(names, max_size=4, unique=True)


@st.composite
def worlds(draw: Any) -> tuple[list[KvRecord], list[KvRecord]]:
    """KV records, and what a flaky dual-writer already put in D1 (a subset, partly)."""
    records, present = [], []
    for day in draw(st.lists(st.integers(10, 20), unique=True, max_size=5)):
        run = draw(st.sampled_from([LATEST, "093000", "160000"]))
        job_type = draw(st.sampled_from(["analysis", "weekly"]))
        rec = record(
            f"2026-11-{day}",
            run,
            symbols=draw(symbols),
            job_type=job_type,
            report=job_type == "weekly",
        )
        records.append(rec)
        kept = draw(st.sampled_from(["none", "all", "part"]))
        if kept == "all":
            present.append(rec)
        elif kept == "part":
            present.append(dataclasses.replace(rec, symbols=rec.symbols[:1], report=None))
    return records, present


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(worlds())
def test_after_a_backfill_nothing_is_missing_and_a_second_inserts_nothing(
    tmp_path: Path, world: tuple[list[KvRecord], list[KvRecord]]
) -> None:
    records, present = world
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(DDL)
    apply(conn, list(build_plans(findings_of(conn, present), provenance=Provenance("20261129T120500Z-d0a1e5"))))
    apply(conn, plans_for(conn, records))
    assert [f for f in findings_of(conn, records) if f.category in BACKFILLED] == []
    assert apply(conn, plans_for(conn, records)) == 0


def test_metadata_is_canonical_json() -> None:
    text = RUN.metadata_for(record())
    assert json.loads(text)["kv2d1"]["run_id"] == RUN.run_id
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_floats_are_refused(value: float) -> None:
    from verifier.errors import BackfillError

    with pytest.raises(BackfillError):
        literal(value)
