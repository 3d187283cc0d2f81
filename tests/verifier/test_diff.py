"""The diff on hand-built records: identity, categories, stable ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.packing import job_statements
from backfill.plan import ExecutionKey, Provenance, build_plans
from tests.payload_examples import kv_value, shape_a, shape_b, shape_g
from verifier.d1 import (
    JOB_COLUMNS,
    build_d1_job,
    iter_d1_jobs,
    job_row,
    report_row,
    row_problems,
    symbol_row,
)
from verifier.diff import DiffContext, diff_streams
from verifier.model import (
    LATEST,
    Category,
    Coverage,
    D1Job,
    Finding,
    JobKey,
    JobRecord,
    KvEntry,
    KvRecord,
    ReportRecord,
    SymbolResult,
    Window,
)
from verifier.normalise import normalise_entry
from verifier.parallel import merge_coverage
from verifier.profile import load_profile
from verifier.sources.local import LocalD1

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
DDL = (Path(__file__).resolve().parents[2] / "schema" / "scheduled-jobs.sql").read_text()
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "TSLA", "NVDA")


def to_d1(record: KvRecord, row_id: int) -> D1Job:
    """The D1 rows a correct dual-writer would have written for a record."""
    row = job_row(record.job, metadata=None)
    job_tuple = (row_id, *(row[c] for c in JOB_COLUMNS[1:]))
    symbols = [
        (row_id, row_id * 100 + i, *symbol_row(s).values()) for i, s in enumerate(record.symbols)
    ]
    reports = []
    if record.report is not None:
        r = report_row(record.report)
        reports.append(
            (
                row_id,
                row_id * 100 + 99,
                r["report_type"],
                r["report_date"],
                r["content"],
                r["summary"],
                r["high_confidence_count"],
            )
        )
    return build_d1_job(job_tuple, symbols, reports)


def run_diff(kv: list[KvRecord], d1: list[D1Job], ctx: DiffContext | None = None) -> list[Finding]:
    ctx = ctx or DiffContext(NOW, Coverage())
    for r in kv:  # as Verification does while it spools KV
        first = ctx.kv_first_date.get(r.job.key.job_type, "9999")
        ctx.kv_first_date[r.job.key.job_type] = min(first, r.job.key.execution_date)
    kv_sorted = sorted(kv, key=lambda r: (r.job.key, r.kv_key))
    d1_sorted = sorted(
        d1, key=lambda j: (j.job.key.execution_date, j.job.key.job_type, j.job.execution_time or "")
    )
    return list(diff_streams(kv_sorted, d1_sorted, ctx))


symbol_results = st.builds(
    SymbolResult,
    symbol=st.sampled_from(SYMBOLS),
    sentiment=st.sampled_from(["bullish", "bearish", "neutral", None]),
    confidence=st.none() | st.floats(0, 1),
    direction=st.sampled_from(["up", "down", "neutral", None]),
    reasoning=st.none() | st.text(max_size=20),
    signals=st.none() | st.just('[{"recommendation":"BUY"}]'),
    news_count=st.none() | st.integers(1, 40),
)


@st.composite
def analysis_records(draw: Any) -> KvRecord:
    day = draw(st.integers(1, 25))
    run = draw(st.sampled_from([LATEST, "083000", "120000"]))
    symbols = draw(st.lists(symbol_results, max_size=5, unique_by=lambda s: s.symbol))
    date = f"2026-11-{day:02d}"
    job = JobRecord(
        key=JobKey(date, "analysis", run),
        execution_time=None,
        status=draw(st.sampled_from(["success", "partial", "failure"])),
        duration_ms=draw(st.none() | st.integers(1, 10**6)),
        symbols_processed=len(symbols),
        symbols_successful=len(symbols),
        symbols_failed=0,
    )
    key = f"analysis_{date}" + ("" if run == LATEST else f"_{run}")
    return KvRecord(key, "B", job, tuple(sorted(symbols, key=lambda s: s.symbol)))


def unique_jobs(records: list[KvRecord]) -> list[KvRecord]:
    by_key: dict[tuple[str, str], KvRecord] = {}
    for r in records:  # one record per (date, type): daily and per-run keys of one day interact
        by_key.setdefault((r.job.key.execution_date, r.job.key.job_type), r)
    return list(by_key.values())


@settings(max_examples=60, deadline=None)
@given(st.lists(analysis_records(), max_size=12))
def test_identical_sides_have_no_findings(records: list[KvRecord]) -> None:
    records = unique_jobs(records)
    d1 = [to_d1(r, i + 1) for i, r in enumerate(records)]
    assert run_diff(records, d1) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(analysis_records(), min_size=2, max_size=10), st.randoms(use_true_random=False))
def test_finding_ids_do_not_depend_on_order_or_run(records: list[KvRecord], rnd: Any) -> None:
    records = unique_jobs(records)
    d1 = [to_d1(r, i + 1) for i, r in enumerate(records[1:])]  # the first record is missing
    first = run_diff(records, d1)
    shuffled = records[:]
    rnd.shuffle(shuffled)
    second = run_diff(shuffled, list(reversed(d1)))
    assert sorted(f.id for f in first) == sorted(f.id for f in second)
    assert any(f.category in (Category.MISSING_IN_D1, Category.EXPIRING_SOON) for f in first)


def _record(date: str = "2026-11-16", run: str = LATEST, **job: Any) -> KvRecord:
    symbols = (
        SymbolResult("AAPL", "bullish", 0.82, "up", "beat", None, None, 12),
        SymbolResult("MSFT", "bearish", 0.64, "down", None, None, None, 2),
    )
    record = JobRecord(
        JobKey(date, "analysis", run),
        status="success",
        symbols_processed=2,
        symbols_successful=2,
        symbols_failed=0,
        **job,
    )
    key = f"analysis_{date}" + ("" if run == LATEST else f"_{run}")
    return KvRecord(key, "B", record, symbols)


def test_each_category_from_one_defect() -> None:
    kept = _record("2026-11-16")
    missing = _record("2026-11-17")
    changed = _record("2026-11-18")
    d1 = [to_d1(kept, 1), to_d1(kept, 2)]  # duplicated
    bad = dataclasses.replace(changed.symbols[0], confidence=0.5)
    d1.append(to_d1(dataclasses.replace(changed, symbols=(bad, changed.symbols[1])), 3))
    orphan = _record("2026-11-19")
    d1.append(to_d1(orphan, 4))
    findings = run_diff([kept, missing, changed], d1)
    got = {(f.category, f.natural_key, f.field) for f in findings}
    assert got == {
        (Category.DUPLICATE_IN_D1, "analysis/2026-11-16/000000", None),  # D1's key: its run time
        (Category.MISSING_IN_D1, "analysis/2026-11-17/latest", None),
        (Category.FIELD_MISMATCH, "analysis/2026-11-18/latest/AAPL", "confidence"),
        (Category.ORPHAN_IN_D1, "analysis/2026-11-19/000000", None),
    }


def test_expiring_key_missing_in_d1_is_expiring_soon() -> None:
    record = dataclasses.replace(
        _record(), expiration=int((NOW + dt.timedelta(hours=5)).timestamp())
    )
    [f] = run_diff([record], [])
    assert f.category is Category.EXPIRING_SOON
    assert f.record is record


def test_daily_key_matches_the_latest_run_and_per_run_keys_fold_it() -> None:
    run1 = _record(run="083000", execution_time="2026-11-16T13:30:00.000Z")
    run2 = _record(run="120000", execution_time="2026-11-16T17:00:00.000Z")
    daily = _record()
    d1 = [to_d1(run1, 1), to_d1(run2, 2)]
    assert run_diff([run1, run2, daily], d1) == []
    assert run_diff([daily], d1) == []  # earlier runs are not orphans of a daily key


def test_report_content_compares_canonically() -> None:
    report = ReportRecord("weekly", "2026-11-15", '{"a":1,"b":[1,2]}', None, None)
    job = JobRecord(JobKey("2026-11-15", "weekly", LATEST), status="success")
    record = KvRecord("weekly_2026-11-15", "W", job, (), report)
    d1 = to_d1(record, 1)
    spaced = dataclasses.replace(
        d1.reports[0], report=dataclasses.replace(report, content='{ "b": [1, 2], "a": 1 }')
    )
    findings = run_diff([record], [dataclasses.replace(d1, reports=(spaced,))])
    assert findings == []
    other = dataclasses.replace(
        spaced, report=dataclasses.replace(report, content='{"a":2,"b":[1,2]}')
    )
    [f] = run_diff([record], [dataclasses.replace(d1, reports=(other,))])
    assert (f.category, f.field) == (Category.FIELD_MISMATCH, "content")
    assert "values changed" in f.message


def test_d1_json_is_checked_in_place_unless_kv_holds_the_same_text() -> None:
    record = dataclasses.replace(
        _record(),
        symbols=(SymbolResult("AAPL", "bullish", 0.82, "up", None, '[{"a":1}]', None, 12),),
        job=dataclasses.replace(_record().job, symbols_processed=1, symbols_successful=1),
    )
    good = to_d1(record, 7)
    row = (7, "analysis", "2026-11-16", good.job.execution_time, "bogus", -5, 1, 1, 0, None, "{no")
    symbol = (7, 700, "AAPL", "bullish", 0.82, "up", None, '[{"a":1}]', "{not json", 12)
    broken = build_d1_job(row, [symbol], [])
    assert broken.problems and broken.json_texts  # the JSON waits for the diff
    invalid = [
        (f.table, f.field)
        for f in run_diff([record], [broken])
        if f.category is Category.INVALID_D1_ROW
    ]
    # the order a row's checks run in: status, duration, metadata; then the symbol's columns
    assert invalid == [
        ("job_executions", "status"),
        ("job_executions", "duration_ms"),
        ("job_executions", "metadata"),
        ("analysis_results", "technical_data"),
    ]
    assert row_problems(good, ()) == ()  # valid JSON, parsed when KV does not hold it
    assert row_problems(broken, {"{not json"})[-1].field == "metadata"  # "known" is trusted


# --- the daily key is last-writer-wins (reference §7.3) --------------------------------------


def _runs_of_the_day() -> tuple[KvRecord, KvRecord]:
    run1 = dataclasses.replace(
        _record(run="093000", execution_time="2026-11-16T14:30:00.000Z"), value_sha256="a1" * 32
    )
    run2 = dataclasses.replace(
        _record(run="120000", execution_time="2026-11-16T17:00:00.000Z"), value_sha256="b2" * 32
    )
    return run1, run2


def _manual_daily(execution_time: str = "2026-11-16T20:30:00.000Z") -> KvRecord:
    """The daily key as a manual run at 15:30 ET left it: a run no per-run key holds."""
    daily = _record(execution_time=execution_time)
    later = dataclasses.replace(daily.symbols[0], confidence=0.91, reasoning="raised guidance")
    return dataclasses.replace(daily, symbols=(later, daily.symbols[1]), value_sha256="c3" * 32)


def test_a_later_manual_run_in_the_daily_key_is_missing_when_d1_lacks_it() -> None:
    run1, run2 = _runs_of_the_day()
    daily = _manual_daily()
    [f] = run_diff([run1, run2, daily], [to_d1(run1, 1), to_d1(run2, 2)])
    assert (f.category, f.natural_key, f.kv_key) == (
        Category.MISSING_IN_D1,
        "analysis/2026-11-16/153000",  # the run its payload says, not "latest"
        "analysis_2026-11-16",
    )
    assert f.record is not None and f.record.kv_key == "analysis_2026-11-16"
    assert f.record.symbols == daily.symbols
    # keyed by its second, so backfill's guard is not the date the per-run rows already hold
    assert ExecutionKey.of(f.record.job).run_time == "2026-11-16T20:30:00"


def test_a_daily_key_holding_a_per_run_keys_run_is_folded_into_it() -> None:
    run1, run2 = _runs_of_the_day()
    d1 = [to_d1(run1, 1), to_d1(run2, 2)]
    same_value = dataclasses.replace(
        run2, kv_key="analysis_2026-11-16", job=dataclasses.replace(run2.job, key=_latest(run2))
    )
    assert run_diff([run1, run2, same_value], d1) == []
    # other bytes (another stamp field), the same instant to the second: the same run
    same_instant = dataclasses.replace(
        _manual_daily("2026-11-16T17:00:00.734Z"), value_sha256="d4" * 32
    )
    assert run_diff([run1, run2, same_instant], d1) == []


def test_a_later_manual_run_d1_holds_is_matched_with_it() -> None:
    run1, run2 = _runs_of_the_day()
    daily = _manual_daily()
    manual = dataclasses.replace(
        daily, job=dataclasses.replace(daily.job, key=JobKey("2026-11-16", "analysis", "153000"))
    )
    d1 = [to_d1(run1, 1), to_d1(run2, 2), to_d1(manual, 3)]
    assert run_diff([run1, run2, daily], d1) == []
    changed = dataclasses.replace(manual, symbols=run2.symbols)  # D1 kept another run's values
    found = run_diff([run1, run2, daily], [to_d1(run1, 1), to_d1(run2, 2), to_d1(changed, 3)])
    assert {(f.category, f.natural_key, f.field) for f in found} == {
        (Category.FIELD_MISMATCH, "analysis/2026-11-16/latest/AAPL", "confidence"),
        (Category.FIELD_MISMATCH, "analysis/2026-11-16/latest/AAPL", "reasoning"),
    }


def test_a_later_manual_run_is_backfilled_and_then_matched(tmp_path: Path) -> None:
    path = tmp_path / "d1.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(DDL)
    d1 = LocalD1(path, readonly=False)
    run1, run2 = _runs_of_the_day()

    def findings(records: list[KvRecord]) -> list[Finding]:
        ctx = DiffContext(NOW, Coverage(), kv_first_date={"analysis": "2026-11-01"})
        kv = sorted(records, key=lambda r: (r.job.key, r.kv_key))
        return list(diff_streams(kv, iter_d1_jobs(d1, Window()), ctx))

    def backfill(found: list[Finding]) -> None:
        plans = build_plans(found, provenance=Provenance("20261129T120000Z-0a0b0c"))
        d1.execute_batch([(s.sql, s.params) for p in plans for s in job_statements(p)])

    backfill(findings([run1, run2]))  # the cron runs, as the dual-writer left them
    kv = [run1, run2, _manual_daily()]
    [missing] = findings(kv)
    assert missing.category is Category.MISSING_IN_D1
    backfill([missing])
    assert findings(kv) == []
    rows = d1.query("SELECT execution_time FROM job_executions ORDER BY execution_time", [])
    assert [r[0][:19] for r in rows] == [
        "2026-11-16T14:30:00",
        "2026-11-16T17:00:00",
        "2026-11-16T20:30:00",
    ]


def _latest(record: KvRecord) -> JobKey:
    return dataclasses.replace(record.job.key, run=LATEST)


# --- what is compared is what the profile maps (PRODUCT.md) -----------------------------------


def _normalised(key: str, payload: object) -> KvRecord:
    profile = load_profile()
    match = profile.match(key)
    assert match is not None
    record = normalise_entry(KvEntry(key, kv_value(payload)), match, profile)
    assert isinstance(record, KvRecord), record
    return record


def _with_job(d1: D1Job, **fields: Any) -> D1Job:
    return dataclasses.replace(d1, job=dataclasses.replace(d1.job, **fields))


def _with_symbols(d1: D1Job, **fields: Any) -> D1Job:
    symbols = tuple(
        dataclasses.replace(s, result=dataclasses.replace(s.result, **fields)) for s in d1.symbols
    )
    return dataclasses.replace(d1, symbols=symbols)


def test_a_field_the_payload_does_not_carry_is_not_compared() -> None:
    g = shape_g()
    del g["symbols_analyzed"]
    record = _normalised("pre_market_report_2026-11-16", g)
    assert {"symbols_processed", "symbols_successful", "symbols_failed"} <= record.job.absent
    d1 = _with_job(to_d1(record, 1), symbols_processed=5, symbols_successful=5, symbols_failed=0,
                   duration_ms=71234, error_message="TSLA: no news")  # fmt: skip
    assert run_diff([record], [d1]) == []


def test_a_field_the_payload_carries_as_null_is_compared() -> None:
    b = shape_b()
    b["pre_market_analysis"]["execution_time_ms"] = None
    b["trading_signals"]["AAPL"]["sentiment_layers"][0]["detailed_analysis"]["articles_analyzed"] = None
    record = _normalised("analysis_2026-11-16", b)
    aapl = next(s for s in record.symbols if s.symbol == "AAPL")
    assert "duration_ms" not in record.job.absent and "news_count" not in aapl.absent
    d1 = to_d1(record, 1)
    d1 = _with_job(d1, duration_ms=48211)
    d1 = dataclasses.replace(d1, symbols=tuple(
        dataclasses.replace(s, result=dataclasses.replace(s.result, news_count=9))
        if s.result.symbol == "AAPL" else s
        for s in d1.symbols
    ))  # fmt: skip
    found = {(f.category, f.natural_key, f.field, f.kv_value, f.d1_value)
             for f in run_diff([record], [d1])}  # fmt: skip
    assert found == {
        (Category.FIELD_MISMATCH, "analysis/2026-11-16/latest", "duration_ms", None, 48211),
        (Category.FIELD_MISMATCH, "analysis/2026-11-16/latest/AAPL", "news_count", None, 9),
    }


def test_a_symbol_field_the_shape_has_no_path_for_is_not_compared() -> None:
    record = _normalised("analysis_2026-11-16", shape_a())  # shape A has no direction
    assert all("direction" in s.absent for s in record.symbols)
    assert run_diff([record], [_with_symbols(to_d1(record, 1), direction="bullish")]) == []


def test_a_never_written_column_null_in_d1_is_counted_not_reported() -> None:
    record = _normalised("analysis_2026-11-16", shape_b())  # signals derived from trading_signals
    assert any(s.signals for s in record.symbols) and any(s.news_count for s in record.symbols)
    d1 = _with_symbols(to_d1(record, 1), signals=None, technical_data=None, news_count=None)
    ctx = DiffContext(NOW, Coverage())
    assert run_diff([record], [d1], ctx) == []
    unwritten = ctx.coverage.unwritten_nulls
    assert unwritten == {
        "analysis_results.signals": sum(1 for s in record.symbols if s.signals is not None),
        "analysis_results.news_count": sum(1 for s in record.symbols if s.news_count),
    }
    assert ctx.coverage.to_json()["unwritten_nulls"] == unwritten
    # where D1 holds a value it is compared
    [f, *_] = run_diff([record], [_with_symbols(to_d1(record, 1), signals='[{"x":1}]')])
    assert (f.category, f.field) == (Category.FIELD_MISMATCH, "signals")


def test_nothing_counted_leaves_the_coverage_document_as_it_was() -> None:
    record = _record()
    ctx = DiffContext(NOW, Coverage())
    assert run_diff([record], [to_d1(record, 1)], ctx) == []
    assert "unwritten_nulls" not in ctx.coverage.to_json()


def test_a_mapped_column_null_in_d1_stays_a_field_mismatch() -> None:
    record = _record()
    nulls = dict(sentiment=None, confidence=None, direction=None, reasoning=None)
    d1 = _with_job(_with_symbols(to_d1(record, 1), **nulls), symbols_successful=None)
    ctx = DiffContext(NOW, Coverage())
    got = {(f.category, f.natural_key, f.field) for f in run_diff([record], [d1], ctx)}
    mismatch, key = Category.FIELD_MISMATCH, "analysis/2026-11-16/latest"
    assert got == {(mismatch, key, "symbols_successful")} | {
        (mismatch, f"{key}/AAPL", name) for name in nulls
    } | {(mismatch, f"{key}/MSFT", name) for name in nulls if name != "reasoning"}  # fmt: skip
    assert ctx.coverage.unwritten_nulls == {}
    report = _normalised("pre_market_report_2026-11-16", shape_g())
    d1 = to_d1(report, 2)
    no_content = dataclasses.replace(
        d1.reports[0], report=dataclasses.replace(d1.reports[0].report, content=None)
    )
    [f] = run_diff([report], [dataclasses.replace(d1, reports=(no_content,))])
    assert (f.category, f.field) == (Category.FIELD_MISMATCH, "content")


def test_unwritten_counts_of_two_processes_add_up() -> None:
    one = Coverage(unwritten_nulls={"analysis_results.signals": 2})
    other = Coverage(
        unwritten_nulls={"analysis_results.signals": 3, "analysis_results.news_count": 1}
    )
    merge_coverage(one, other)
    assert one.unwritten_nulls == {"analysis_results.signals": 5, "analysis_results.news_count": 1}
    merge_coverage(empty := Coverage(), Coverage())
    assert "unwritten_nulls" not in empty.to_json()
