"""`--history DIR`: findings new / persisting / resolved across runs, metric trends."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from reports.history import compare, load_history, store, stored_reports, track
from reports.report_run import ReportOptions, ReportTools, run_report
from tests.reports.datasets import World


def test_a_fixed_defect_is_resolved_and_the_others_persist(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    world.drop("intraday_report_2026-11-18")
    world.drop("analysis_2026-11-12")
    world.set_symbol("analysis_2026-11-20", "AAPL", sentiment="bearish")
    history = tmp_path / "history"
    options = ReportOptions(probe_repeat=0, history_dir=history)

    first = run_report(
        world.verification(), source=world.source, options=options, tools=ReportTools()
    )
    assert first.history_file is not None and first.history_file.parent == history
    assert {f["status"] for f in first.document["findings"]} == {"new"}
    assert first.document["history"]["previous"] is None

    world.dual_write(world.record("analysis_2026-11-12"))  # fixed: the job reaches D1
    later = dataclasses.replace(world, now=world.now.replace(hour=16))
    second = run_report(
        later.verification(), source=later.source, options=options, tools=ReportTools()
    )
    block = second.document["history"]
    assert block["previous"]["file"] == first.history_file.name
    assert block["previous"]["verdict"] == "rollback"  # the sentiment mismatch
    assert [r["kv_key"] for r in block["resolved"]] == ["analysis_2026-11-12"]
    assert block["resolved"][0]["category"] == "missing_in_d1"
    status = {f["natural_key"]: f["status"] for f in second.document["findings"]}
    assert status == {
        "intraday/2026-11-18/latest": "persisting",
        "analysis/2026-11-20/latest/AAPL": "persisting",
    }
    assert (block["new"], block["persisting"], block["resolved_count"]) == (0, 2, 1)
    trend = block["trends"]["data_completeness"]
    assert [p["value"] for p in trend] == [
        first.document["metrics"][0]["value"],
        second.document["metrics"][0]["value"],
    ]
    assert trend[0]["value"] < trend[1]["value"]
    assert [p.name for p in stored_reports(history)] == [
        first.history_file.name,
        second.history_file.name,
    ]


def test_reports_of_the_same_second_keep_their_order(tmp_path: Path) -> None:
    doc = {"generated_at": "2026-11-24T15:00:00+00:00", "findings": [], "metrics": []}
    paths = [store({**doc, "n": i}, tmp_path) for i in range(3)]
    assert [p.name for p in paths] == [f"report-20261124T150000Z-00{i}.json" for i in (1, 2, 3)]
    assert [h.document["n"] for h in load_history(tmp_path)] == [0, 1, 2]


def test_an_unreadable_stored_report_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "report-20261101T000000Z-001.json").write_text("{not json", encoding="utf-8")
    doc = {
        "generated_at": "2026-11-24T15:00:00+00:00",
        "findings": [{"id": "a" * 16, "category": "missing_in_d1"}],
        "metrics": [],
    }
    path = track(doc, tmp_path)
    assert doc["findings"][0]["status"] == "new" and doc["history"]["runs"] == 1
    assert json.loads(path.read_text(encoding="utf-8"))["history"]["new"] == 1


def test_compare_without_history_marks_everything_new() -> None:
    doc = {
        "findings": [{"id": "1" * 16}],
        "metrics": [{"name": "query_p95", "value": 3.0, "status": "pass"}],
    }
    block = compare(doc, [])
    assert doc["findings"][0]["status"] == "new"
    assert block["trends"] == {
        "query_p95": [{"generated_at": None, "value": 3.0, "status": "pass"}]
    }
