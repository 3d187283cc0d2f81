"""The diff on hand-built records: identity, categories, stable ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.d1 import JOB_COLUMNS, build_d1_job, job_row, report_row, row_problems, symbol_row
from verifier.diff import DiffContext, diff_streams
from verifier.model import (
    LATEST,
    Category,
    Coverage,
    D1Job,
    Finding,
    JobKey,
    JobRecord,
    KvRecord,
    ReportRecord,
    SymbolResult,
)

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
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


def run_diff(kv: list[KvRecord], d1: list[D1Job]) -> list[Finding]:
    ctx = DiffContext(NOW, Coverage())
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
