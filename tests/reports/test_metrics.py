"""Metric judgements and the verdict on hand-made measurements."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from backfill.plan import Provenance
from reports.metrics import (
    DashboardTiming,
    DateRange,
    Evidence,
    KvReads,
    Metric,
    MetricName,
    MetricStatus,
    backfill_provenance,
    dashboard_load,
    grid_span,
    kv_read_reduction,
    make,
    percent,
    tally_writes,
    unknown,
    write_reliability,
)
from reports.report_run import safe_url
from reports.verdict import ReasonKind, Verdict, decide, decide_document
from verifier.diff import finding
from verifier.model import Category, Table, Window

NOW = dt.datetime(2026, 11, 24, 15, tzinfo=dt.UTC)


def test_percent_is_never_rounded_up_to_100() -> None:
    assert percent(99_999_999, 100_000_000) == 99.999
    assert percent(3, 3) == 100.0 and percent(1, 3) == 33.333


def test_date_ranges() -> None:
    assert DateRange.parse("2026-11-01..2026-11-07").days == 7
    for bad in ("2026-11-01", "2026-11-07..2026-11-01", "x..y"):
        with pytest.raises(ValueError, match=re.escape("YYYY-MM-DD..YYYY-MM-DD")):
            DateRange.parse(bad)


def test_grid_span_ends_yesterday_in_new_york() -> None:
    assert grid_span(Window("2026-11-10", "2026-12-31"), NOW) == ("2026-11-10", "2026-11-23")
    late = dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)  # still the 23rd in New York
    assert grid_span(Window(None, None), late, days=3) == ("2026-11-20", "2026-11-22")
    assert grid_span(Window("2026-11-24", None), NOW) is None


def test_backfill_provenance() -> None:
    mark = '{"kv2d1":{"kv_key":"analysis_2026-11-10","run_id":"r","tool":"kv2d1"}}'
    assert backfill_provenance(mark) == "analysis_2026-11-10"
    assert backfill_provenance('{"trigger":"scheduled"}') is None
    assert backfill_provenance('{"kv2d1":{"tool":"other"}}') is None
    assert backfill_provenance('not json, mentions "kv2d1"') is None
    assert backfill_provenance(None) is None


def test_write_tally_counts_each_job_once_and_skips_orphans() -> None:
    mark = '{"kv2d1":{"kv_key":"k2","tool":"kv2d1"}}'
    je = "job_executions"
    rows = [
        (je, 1, "2026-11-09", "analysis", "2026-11-09T13:30:00Z", mark, None, None),  # before
        (je, 2, "2026-11-10", "analysis", "2026-11-10T13:30:00Z", None, None, None),
        (je, 3, "2026-11-10", "analysis", "2026-11-10T13:30:00Z", None, None, None),  # duplicate
        (je, 4, "2026-11-11", "analysis", "2026-11-11T13:30:00Z", mark, None, None),
        (je, 5, "2026-11-12", "weekly", "2026-11-12T13:30:00Z", None, None, None),  # an orphan
    ]
    orphan = finding(
        Category.ORPHAN_IN_D1,
        "weekly/2026-11-12/083000",
        "orphan",
        id_parts=(Table.JOB_EXECUTIONS,),
        table=Table.JOB_EXECUTIONS,
        row_id=5,
    )
    missing = finding(
        Category.MISSING_IN_D1,
        "analysis/2026-11-12/latest",
        "missing",
        id_parts=(Table.JOB_EXECUTIONS,),
        table=Table.JOB_EXECUTIONS,
        kv_key="analysis_2026-11-12",
    )
    tally = tally_writes(rows, [orphan, missing])
    assert tally is not None
    assert (tally.since, tally.dual_written, tally.backfilled, tally.missing) == (
        "2026-11-10",
        1,
        ("k2",),
        ("analysis_2026-11-12",),
    )
    metric = write_reliability(tally)
    assert metric.value == pytest.approx(33.333) and metric.evidence.rollback
    assert metric.evidence.records == ("k2 (backfilled)", "analysis_2026-11-12 (not in D1)")
    assert tally_writes(rows[:1], []) is None


def test_write_reliability_counts_kv_records_not_executions() -> None:
    """A dual-written execution whose report snapshot had to be backfilled: one of its three
    records missed the dual-write (PRODUCT.md measures KV records)."""
    when, run = "2026-11-10T13:30:00Z", "20261129T120000Z-abcdef"
    stamped = "2026-11-29 12:00:00.000482610473"  # a backfill run's created_at
    rows = [
        ("job_executions", 2, "2026-11-10", "analysis", when, None, None, None),
        ("analysis_results", 2, "2026-11-10", "analysis", when, None, "AAPL", "2026-11-10 13:30:02"),
        ("report_snapshots", 2, "2026-11-10", "analysis", when, None, "pre_market", stamped),
    ]
    tally = tally_writes(rows, [])
    assert tally is not None and (tally.dual_written, tally.total) == (2, 3)
    assert tally.backfilled == ("report_snapshots/pre_market",)
    assert tally.by_table["report_snapshots"] == {"backfilled": 1}
    metric = write_reliability(tally)
    assert metric.value == pytest.approx(66.667) and metric.evidence.rollback
    assert "2 of 3 KV records (jobs, symbol results, reports)" in metric.evidence.summary
    assert Provenance(run).created_at == stamped.replace(".000482610473", Provenance(run).stamp)


def test_kv_read_reduction_compares_reads_per_day() -> None:
    base = KvReads(DateRange("2026-11-01", "2026-11-10"), 1000)  # 100/day
    now = KvReads(DateRange("2026-11-15", "2026-11-19"), 400)  # 80/day
    metric = kv_read_reduction(base, now)
    assert metric.value == pytest.approx(20.0) and metric.status is MetricStatus.FAIL
    assert metric.evidence.records[0] == "baseline 2026-11-01..2026-11-10: 1000 reads (100.0/day)"
    assert kv_read_reduction(base, KvReads(now.range, 100)).status is MetricStatus.PASS
    assert kv_read_reduction(None, None, reason="local").evidence.summary == "local"
    empty = kv_read_reduction(KvReads(base.range, 0), now)
    assert empty.status is MetricStatus.UNKNOWN


def test_dashboard_load() -> None:
    fast = dashboard_load(DashboardTiming("https://w.test/h", (0.3, 0.2, 0.9), (200, 200, 200)))
    assert (fast.status, fast.value) == (MetricStatus.PASS, 0.3)
    slow = dashboard_load(DashboardTiming("https://w.test/h", (2.5, 2.1, 3.0), (200, 200, 200)))
    assert slow.status is MetricStatus.FAIL and slow.evidence.records == ("https://w.test/h",)
    down = dashboard_load(DashboardTiming("https://w.test/h", (), (), "ConnectError"))
    assert down.status is MetricStatus.FAIL and "ConnectError" in down.evidence.summary


def test_safe_url_hides_credentials() -> None:
    url = "https://user:pw@w.test:8443/api/v1/jobs/history?limit=20&api_key=abc&Token=x"
    assert (
        safe_url(url)
        == "https://w.test:8443/api/v1/jobs/history?limit=20&api_key=redacted&Token=redacted"
    )


def passing(name: MetricName, **kw: object) -> Metric:
    return dataclasses.replace(make(name, 100.0, MetricStatus.PASS, Evidence("ok")), **kw)


def test_verdict_order_of_reasons() -> None:
    ok = [passing(n) for n in MetricName]
    assert decide(ok).verdict is Verdict.READY and decide(ok).exit_code == 0
    missed = dataclasses.replace(ok[0], status=MetricStatus.FAIL, evidence=Evidence("short"))
    assert decide([missed, *ok[1:]]).verdict is Verdict.NOT_READY
    trigger = dataclasses.replace(
        ok[3], status=MetricStatus.FAIL, evidence=Evidence("80 %", rollback=True)
    )
    decision = decide([missed, ok[1], ok[2], trigger, ok[4], ok[5]])
    assert decision.verdict is Verdict.ROLLBACK and decision.exit_code == 4
    assert [(r.kind, r.metric.name) for r in decision.reasons] == [
        (ReasonKind.ROLLBACK_TRIGGER, MetricName.WRITE_RELIABILITY),
        (ReasonKind.TARGET_MISSED, MetricName.DATA_COMPLETENESS),
    ]
    lazy = unknown(MetricName.KV_READ_REDUCTION, "local mode")
    assert decide([*ok[:4], lazy, ok[5]]).verdict is Verdict.READY
    required = dataclasses.replace(lazy, required=True)
    decision = decide([*ok[:4], required, ok[5]])
    assert decision.verdict is Verdict.NOT_READY and decision.exit_code == 3
    assert str(decision.reasons[0]) == "KV read reduction is required but unknown: local mode"


def test_decide_document_reads_json_metrics_and_ignores_unknown_names() -> None:
    metrics = [passing(n).to_json() for n in MetricName]
    metrics[2]["status"] = "fail"
    metrics[2]["evidence"]["rollback_triggered"] = True
    doc = {"metrics": [*metrics, {"name": "future_metric", "status": "fail"}]}
    decision = decide_document(doc)
    assert decision is not None and decision.verdict is Verdict.ROLLBACK
    assert decide_document({"findings": []}) is None
