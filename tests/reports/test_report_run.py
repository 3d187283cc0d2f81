"""`run_report` on worlds built to be ready, not ready and rollback-worthy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from reports.metrics import MetricName, MetricStatus
from reports.probe import LocalTimer, Sample
from reports.report_run import ReportOptions, ReportOutcome, ReportTools, run_report
from reports.verdict import Verdict
from tests.reports.datasets import World
from verifier.profile import schema_dir


@pytest.fixture(scope="module")
def report_schema() -> dict[str, Any]:
    return json.loads((schema_dir() / "report.schema.json").read_text(encoding="utf-8"))


def report(world: World, *, tools: ReportTools | None = None, **options: Any) -> ReportOutcome:
    options.setdefault("probe_repeat", 3)
    return run_report(
        world.verification(),
        source=world.source,
        options=ReportOptions(**options),
        tools=tools or ReportTools(timer=LocalTimer(world.d1)),
    )


def metric(outcome: ReportOutcome, name: MetricName) -> dict[str, Any]:
    [found] = [m for m in outcome.document["metrics"] if m["name"] == name]
    return found


def test_ready_world(tmp_path: Path, report_schema: dict[str, Any]) -> None:
    outcome = report(World.create(tmp_path))
    assert outcome.decision.verdict is Verdict.READY and outcome.exit_code == 0
    doc = outcome.document
    jsonschema.validate(doc, report_schema)
    statuses = {m["name"]: m["status"] for m in doc["metrics"]}
    assert statuses == {
        "data_completeness": "pass",
        "seven_day_coverage": "pass",
        "query_p95": "unknown",  # a local SQLite file is not D1
        "write_reliability": "pass",
        "kv_read_reduction": "unknown",
        "dashboard_load": "unknown",
    }
    p95 = metric(outcome, MetricName.QUERY_P95)["evidence"]
    assert p95["summary"].startswith("not measured on D1: P95 ") and p95["measured_on"] == "local"
    assert metric(outcome, MetricName.DATA_COMPLETENESS)["value"] == 100.0
    assert (
        "run the report with --remote"
        in metric(outcome, MetricName.KV_READ_REDUCTION)["evidence"]["summary"]
    )
    assert doc["verdict"] == "ready" and doc["findings"] == [] and doc["patterns"] == []


def test_not_ready_world_names_the_records(tmp_path: Path, report_schema: dict[str, Any]) -> None:
    world = World.create(tmp_path)
    world.drop("intraday_report_2026-11-18")  # in the last 7 days
    world.backfilled("pre_market_report_2026-11-12")  # its execution and its report snapshot
    outcome = report(world)
    assert outcome.decision.verdict is Verdict.NOT_READY and outcome.exit_code == 3
    jsonschema.validate(outcome.document, report_schema)
    completeness = metric(outcome, MetricName.DATA_COMPLETENESS)
    assert completeness["status"] == "fail" and completeness["value"] == pytest.approx(97.619)
    assert completeness["evidence"]["records"] == [
        "missing_in_d1: intraday/2026-11-18/latest (KV intraday_report_2026-11-18)"
    ]
    coverage = metric(outcome, MetricName.SEVEN_DAY_COVERAGE)
    assert coverage["evidence"]["records"] == [
        "intraday 2026-11-18 (KV intraday_report_2026-11-18 not in D1)"
    ]
    grid = coverage["evidence"]["grid"]
    assert grid["metric_days"] == [f"2026-11-{d}" for d in range(17, 24)]
    assert grid["cells"]["intraday"][grid["days"].index("2026-11-18")] == "missing"
    assert grid["cells"]["weekly"][grid["days"].index("2026-11-22")] == "ok"
    assert grid["cells"]["analysis"][grid["days"].index("2026-11-21")] == "none"  # a Saturday
    reliability = metric(outcome, MetricName.WRITE_RELIABILITY)
    assert reliability["status"] == "fail" and not reliability["evidence"]["rollback_triggered"]
    # KV records, not executions: 120 dual-written of 124 (2 backfilled, 2 missing).
    assert reliability["value"] == pytest.approx(100 * 120 / 124, abs=1e-3)
    assert reliability["evidence"]["records"] == [
        "pre_market_report_2026-11-12 (backfilled)",
        "pre_market_report_2026-11-12/pre-market (backfilled)",
        "intraday_report_2026-11-18 (not in D1)",
        "intraday_report_2026-11-18/intraday (not in D1)",
    ]
    assert reliability["evidence"]["by_table"]["report_snapshots"] == {
        "dual_written": 30, "backfilled": 1, "missing": 1,
    }  # fmt: skip
    assert [r.kind.value for r in outcome.decision.reasons] == [
        "error_findings", "target_missed", "target_missed", "target_missed",
    ]  # fmt: skip
    assert outcome.document["decision"]["decided_by"] == "error_findings"


def test_rollback_world(tmp_path: Path, report_schema: dict[str, Any]) -> None:
    world = World.create(tmp_path)
    world.null_symbol_fields("analysis_2026-11-19")
    world.duplicate("end_of_day_summary_2026-11-13")
    for key in ("analysis_2026-11-10", "analysis_2026-11-11", "pre_market_report_2026-11-10"):
        world.backfilled(key)
    outcome = report(world)
    assert outcome.decision.verdict is Verdict.ROLLBACK and outcome.exit_code == 4
    doc = outcome.document
    jsonschema.validate(doc, report_schema)
    completeness = metric(outcome, MetricName.DATA_COMPLETENESS)
    assert completeness["evidence"]["rollback_triggered"] is True
    records = completeness["evidence"]["records"]
    assert (
        "field_mismatch: analysis/2026-11-19/latest/AAPL.confidence (KV analysis_2026-11-19)"
        in records
    )
    assert completeness["evidence"]["more_records"] == 19 + 1 - len(
        records
    )  # TSLA has no reasoning
    reliability = metric(outcome, MetricName.WRITE_RELIABILITY)
    # Every record of the three backfilled jobs counts: 110 dual-written of 124.
    assert reliability["value"] == pytest.approx(100 * 110 / 124, abs=1e-2)
    assert reliability["evidence"]["rollback_triggered"] is True
    assert reliability["evidence"]["records"][:2] == [
        "analysis_2026-11-10 (backfilled)",
        "analysis_2026-11-10/AAPL (backfilled)",
    ]
    assert reliability["evidence"]["more_records"] == 14 - len(reliability["evidence"]["records"])
    triggers = [
        r.metric.name for r in outcome.decision.reasons if r.kind.value == "rollback_trigger"
    ]
    assert triggers == [MetricName.DATA_COMPLETENESS, MetricName.WRITE_RELIABILITY]
    assert "inconsistent_data" in [r.kind.value for r in outcome.decision.reasons]
    [adapter] = [
        p for p in doc["patterns"] if p["suggestion"] and "analysis[symbol]" in p["suggestion"]
    ]
    assert adapter["field"] == "sentiment, confidence, direction, reasoning"
    assert adapter["example_keys"][0] == "analysis/2026-11-19/latest/AAPL"


class SlowTimer:
    """A D1 whose every statement takes `ms`."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def run(self, sql: str, params: tuple[str, ...]) -> Sample:
        return Sample(self.ms + 1.0, self.ms)


@pytest.mark.parametrize(
    ("ms", "verdict", "status"),
    [
        (10.0, Verdict.READY, "pass"),
        (20.0, Verdict.NOT_READY, "fail"),
        (70.0, Verdict.ROLLBACK, "fail"),
    ],
)
def test_query_p95_target_and_rollback(
    tmp_path: Path, ms: float, verdict: Verdict, status: str
) -> None:
    outcome = report(World.create(tmp_path), tools=ReportTools(timer=SlowTimer(ms)))
    p95 = metric(outcome, MetricName.QUERY_P95)
    assert (p95["status"], p95["value"]) == (status, pytest.approx(ms * 3))  # detail: 3 statements
    assert outcome.decision.verdict is verdict
    if status == "fail":
        assert p95["evidence"]["records"][0].startswith("detail/")  # the slowest query named


def test_unknown_metrics_never_pass_and_block_when_required(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    off = report(world, probe_repeat=0)
    p95 = metric(off, MetricName.QUERY_P95)
    assert p95["status"] == "unknown" and "--probe-repeat 0" in p95["evidence"]["summary"]
    assert off.decision.verdict is Verdict.READY
    required = report(world, probe_repeat=0, require=frozenset({MetricName.QUERY_P95}))
    assert required.decision.verdict is Verdict.NOT_READY and required.exit_code == 3
    assert [str(r) for r in required.decision.reasons] == [
        "query performance is required but unknown: not measured: the probe is off (--probe-repeat 0)"
    ]
    snapshot = report(world, tools=ReportTools(timer=None))
    assert "snapshot" in metric(snapshot, MetricName.QUERY_P95)["evidence"]["summary"]


def test_dashboard_load_is_timed_with_httpx(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if "broken" in request.url.path:
            return httpx.Response(500, json={"success": False})
        return httpx.Response(200, json={"success": True, "count": 0, "jobs": []})

    world = World.create(tmp_path)
    tools = ReportTools(
        timer=LocalTimer(world.d1), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    url = "https://worker.test/api/v1/jobs/history?limit=20&token=s3cret"
    ok = report(world, tools=tools, dashboard_url=url)
    load = metric(ok, MetricName.DASHBOARD_LOAD)
    assert load["status"] == "pass" and len(load["evidence"]["seconds"]) == 3 and len(seen) == 3
    assert "s3cret" not in json.dumps(ok.document)
    bad = report(world, tools=tools, dashboard_url="https://worker.test/broken/history")
    failed = metric(bad, MetricName.DASHBOARD_LOAD)
    assert failed["status"] == "fail" and "HTTP 500" in failed["evidence"]["summary"]
    assert failed["evidence"]["records"] == ["https://worker.test/broken/history"]
    assert bad.decision.verdict is Verdict.NOT_READY


def test_dual_write_window_starts_at_the_first_dual_written_row(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    for key in sorted(k for k in world.kv.entries if k.endswith(("2026-11-10", "2026-11-11"))):
        world.backfilled(key)  # dual-write began on 11-12
    outcome = report(world)
    reliability = metric(outcome, MetricName.WRITE_RELIABILITY)
    assert reliability["status"] == "pass"
    assert reliability["evidence"]["dual_write_since"] == "2026-11-12"
    forced = report(world, dual_write_since="2026-11-10")
    assert metric(forced, MetricName.WRITE_RELIABILITY)["evidence"]["rollback_triggered"] is True


def test_all_backfilled_leaves_write_reliability_unknown(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    for key in world.kv.entries:
        world.backfilled(key)
    reliability = metric(report(world), MetricName.WRITE_RELIABILITY)
    assert reliability["status"] == MetricStatus.UNKNOWN
    assert "--dual-write-since" in reliability["evidence"]["summary"]


def iter_metric_names(outcome: ReportOutcome) -> Iterator[str]:
    yield from (m["name"] for m in outcome.document["metrics"])


def test_metrics_come_in_the_plans_order(tmp_path: Path) -> None:
    assert list(iter_metric_names(report(World.create(tmp_path), probe_repeat=0))) == [
        m.value for m in MetricName
    ]
