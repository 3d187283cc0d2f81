"""Renderings of report documents: markdown tables, JUnit against its XSD, the HTML page in
headless Chromium, and text."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from reports.document import Summary, build_document
from reports.formats import render_html, render_junit, render_markdown, render_text_any
from reports.probe import LocalTimer, probe
from reports.render import OutputFormat, render
from reports.report_run import ReportOptions, ReportTools, run_report
from tests.reports.chromium import find_chromium, open_page
from tests.reports.datasets import World
from verifier.clock import RunClock
from verifier.model import Coverage, Window

XSD = Path(__file__).resolve().parents[1] / "data" / "junit-10.xsd"


@pytest.fixture(scope="module")
def rollback_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A rollback-worthy report whose history holds one earlier run (a defect fixed since)."""
    tmp = tmp_path_factory.mktemp("rollback")
    world = World.create(tmp)
    world.drop("intraday_report_2026-11-18")
    world.drop("analysis_2026-11-12")
    options = ReportOptions(probe_repeat=2, history_dir=tmp / "history")
    tools = ReportTools(timer=LocalTimer(world.d1))
    run_report(world.verification(), source=world.source, options=options, tools=tools)
    world.dual_write(world.record("analysis_2026-11-12"))
    world.null_symbol_fields("analysis_2026-11-19")
    world.duplicate("end_of_day_summary_2026-11-13")
    world.backfilled("analysis_2026-11-10")
    later = dataclasses.replace(world, now=world.now.replace(hour=16))
    return run_report(
        later.verification(), source=later.source, options=options, tools=tools
    ).document


@pytest.fixture(scope="module")
def probe_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = World.create(tmp_path_factory.mktemp("probe"))
    result = probe(world.d1, repeat=2, timer=LocalTimer(world.d1))
    return build_document(
        command="probe",
        source=world.source,
        window=Window(),
        coverage=Coverage(),
        findings=[],
        summary=Summary(),
        clock=RunClock.fixed(world.now),
        extra={"probe": result.to_json()},
    )


def test_the_render_hook_picks_up_every_format(rollback_doc: dict[str, Any]) -> None:
    assert render(rollback_doc, OutputFormat.HTML).startswith("<!DOCTYPE html>")
    assert render(rollback_doc, OutputFormat.JUNIT).startswith("<?xml")
    assert render(rollback_doc, OutputFormat.MARKDOWN).startswith("# kv2d1 report")
    assert render(rollback_doc, OutputFormat.TEXT).startswith("kv2d1 report")


# --- markdown --------------------------------------------------------------------------------


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table as rows of cell texts (header first), parsed by markdown-it when present."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the syntax check alone, when the parser is not installed
        return _tables_by_syntax(markdown)
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    found: list[list[list[str]]] = []
    row: list[str] = []
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            row.append(tokens[i + 1].content if tokens[i + 1].type == "inline" else "")
        elif token.type == "tr_close":
            found[-1].append(row)
    return found


def _tables_by_syntax(markdown: str) -> list[list[list[str]]]:
    """Header, separator, then rows: each line `| … |` with the same number of cells."""
    found: list[list[list[str]]] = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if i == 0 or not re.fullmatch(r"\|(---\|)+", line):
            continue
        width = line.count("---")
        body = [lines[i - 1]]
        for row in lines[i + 1 :]:
            if not row.startswith("| "):
                break
            body.append(row)
        cells = [
            [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in body
        ]
        assert all(len(r) == width for r in cells), cells
        found.append(cells)
    return found


def test_markdown_renders_github_tables(rollback_doc: dict[str, Any]) -> None:
    text = render_markdown(rollback_doc)
    assert text.splitlines()[0] == "# kv2d1 report — ⛔ ROLLBACK"
    found = tables(text)
    metrics = found[0]
    assert metrics[0] == ["metric", "value", "target", "rollback if", "status", "evidence"]
    assert [row[0] for row in metrics[1:]] == [
        "data completeness",
        "7-day coverage",
        "query performance",
        "write reliability",
        "KV read reduction",
        "dashboard load",
    ]
    assert all(len(row) == 6 for row in metrics)
    assert "field_mismatch: analysis/2026-11-19/latest/AAPL.confidence" in metrics[1][5]
    counts = found[1]
    assert ["field_mismatch", "error", "19"] in counts
    assert any(t[0][0] == "pattern" for t in found) and any(
        t[0][0] == "resolved finding" for t in found
    )


def test_markdown_escapes_pipes_in_cells() -> None:
    doc = {
        "command": "verify",
        "source": {},
        "window": {},
        "generated_at": "x",
        "summary": {"by_category": {"field_mismatch": 1}},
        "findings": [
            {
                "category": "field_mismatch",
                "severity": "error",
                "natural_key": "a|b",
                "kv_value": "x|y",
                "d1_value": None,
                "id": "1" * 16,
                "message": "m",
            }
        ],
    }
    [_, rows] = tables(render_markdown(doc))
    assert rows[1][0] == "a|b" and rows[1][4] == "x|y"


# --- JUnit -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def test_junit_validates_and_failures_carry_the_evidence(
    rollback_doc: dict[str, Any], junit_schema: xmlschema.XMLSchema
) -> None:
    xml = render_junit(rollback_doc)
    junit_schema.validate(xml)
    tree = junit_schema.to_dict(xml)
    metrics, findings = tree["testsuite"]
    cases = {case["@name"]: case for case in metrics["testcase"]}
    assert set(cases) == {m["name"] for m in rollback_doc["metrics"]}
    assert cases["data_completeness"]["failure"][0]["@type"] == "rollback_trigger"
    assert (
        "analysis/2026-11-19/latest/AAPL.confidence"
        in cases["data_completeness"]["failure"][0]["$"]
    )
    # The backfilled job's execution and each of its symbol results count (KV records, not
    # executions): below 95 %, the rollback trigger.
    assert cases["write_reliability"]["failure"][0]["@type"] == "rollback_trigger"
    assert "analysis_2026-11-10 (backfilled)" in cases["write_reliability"]["failure"][0]["$"]
    assert "skipped" in cases["kv_read_reduction"] and "failure" not in cases["query_p95"]
    by_category = {case["@name"]: case for case in findings["testcase"]}
    assert len(by_category) == 8
    assert "analysis/2026-11-19/latest/MSFT" in by_category["field_mismatch"]["failure"][0]["$"]
    assert "failure" not in by_category["orphan_in_d1"]
    assert tree["@failures"] == int(metrics["@failures"]) + int(findings["@failures"])


def test_junit_of_verify_and_probe_documents_validates(
    probe_doc: dict[str, Any], junit_schema: xmlschema.XMLSchema
) -> None:
    junit_schema.validate(render_junit(probe_doc))
    verify = {**probe_doc, "command": "verify"}
    del verify["probe"]
    junit_schema.validate(render_junit(verify))


def test_control_characters_do_not_break_the_xml(junit_schema: xmlschema.XMLSchema) -> None:
    doc = {
        "command": "verify",
        "summary": {"by_category": {"field_mismatch": 1}},
        "findings": [
            {
                "category": "field_mismatch",
                "severity": "error",
                "natural_key": "k\x00\x1b",
                "id": "1" * 16,
                "message": "bad \x07 byte",
            }
        ],
    }
    junit_schema.validate(render_junit(doc))


# --- HTML ------------------------------------------------------------------------------------


def test_html_is_one_file_with_no_network_asset(rollback_doc: dict[str, Any]) -> None:
    page = render_html(rollback_doc)
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"<link\b|@import|url\(|<iframe|<img|fetch\(|XMLHttpRequest", page, re.I)
    assert page.count("<svg") == 6  # one trend chart per metric
    assert 'class="banner v-rollback"' in page and "c-missing" in page


def chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        message = "headless Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the HTML report test needs Chromium in CI: {message}")
        print(f"skipping: {message}", file=sys.stderr)
        pytest.skip(message)
    return path


def test_html_opens_in_headless_chromium(rollback_doc: dict[str, Any], tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    page = tmp_path / "report.html"
    page.write_text(render_html(rollback_doc), encoding="utf-8")
    visible = "document.querySelectorAll('#findings tbody tr:not([hidden])').length"
    run = open_page(
        chromium,
        page.as_uri() + "#category=duplicate_in_d1",
        [
            "document.documentElement.getAttribute('data-filter')",
            visible,
            "(function(){var s=document.getElementById('category-filter');s.value='field_mismatch';"
            "s.dispatchEvent(new Event('change'));return " + visible + ";})()",
            "document.getElementById('finding-count').textContent",
            "document.querySelectorAll('.heat td').length",
            "document.querySelector('.banner h1').textContent",
        ],
    )
    assert run.requests == [page.as_uri()]  # the page itself, nothing else
    assert run.console == [] and run.exceptions == [] and run.log_errors == []
    findings = rollback_doc["findings"]
    assert run.values == [
        "ready",
        1,
        sum(f["category"] == "field_mismatch" for f in findings),
        str(sum(f["category"] == "field_mismatch" for f in findings)),
        len(rollback_doc["metrics"][1]["evidence"]["grid"]["days"]) * 5,
        "ROLLBACK",
    ]


# --- text ------------------------------------------------------------------------------------


def test_text_of_a_report_and_of_a_probe(
    rollback_doc: dict[str, Any], probe_doc: dict[str, Any]
) -> None:
    text = render_text_any(rollback_doc)
    assert "Verdict: ROLLBACK" in text and text.count("Verdict:") == 1
    assert "data completeness: rollback trigger fired" in text
    assert "History since 2026-11-24T15:00:00+00:00: 20 new, 1 persisting, 1 resolved" in text
    probe_text = render_text_any(probe_doc)
    assert probe_text.startswith("kv2d1 probe") and "history?status=success" in probe_text
    assert "overall" in probe_text
    assert render_text_any({**probe_doc, "command": "verify"}).startswith("kv2d1 verify")


def test_the_syntax_check_agrees_with_the_parser(rollback_doc: dict[str, Any]) -> None:
    pytest.importorskip("markdown_it", reason="compares the fallback with markdown-it-py")
    text = render_markdown(rollback_doc)
    assert _tables_by_syntax(text) == tables(text)
