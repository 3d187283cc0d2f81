"""Plain-text rendering for the terminal: summary, coverage, then findings grouped by category."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from tabulate import tabulate

from reports.report_fields import no_findings_text, nothing_compared_text

MAX_PER_CATEGORY = 20


def _cell(value: Any, width: int = 48) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_text(doc: dict[str, Any], *, max_per_category: int = MAX_PER_CATEGORY) -> str:
    lines = [_header(doc), "", _coverage(doc["coverage"]), "", _summary(doc["summary"])]
    if doc.get("verdict"):
        lines += ["", f"Verdict: {doc['verdict'].upper()}"]
        lines += [f"  - {reason}" for reason in (doc.get("decision") or {}).get("reasons", ())]
    findings = doc["findings"]
    for category, group in groupby(findings, key=lambda f: f["category"]):
        items = list(group)
        lines += ["", f"{category} ({len(items)})"]
        rows = [_finding_row(f) for f in items[:max_per_category]]
        lines.append(tabulate(rows, headers=["key", "field", "KV", "D1", "what", "id"]))
        if len(items) > max_per_category:
            lines.append(f"… and {len(items) - max_per_category} more (use --format json for all)")
    if not findings:
        lines += ["", no_findings_text(doc)]
    elif note := nothing_compared_text(doc):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _header(doc: dict[str, Any]) -> str:
    src = doc["source"]
    window = doc["window"]
    span = f"{window.get('since') or 'first'} → {window.get('until') or 'last'}"
    return (
        f"kv2d1 {doc['command']} · {src.get('kind')} · KV {src.get('kv_binding')} → "
        f"D1 {src.get('d1_binding')} · window {span}"
    )


def _coverage(cov: dict[str, Any]) -> str:
    rows = [
        ["KV keys listed", cov["keys_listed"]],
        ["  matched a pattern, in window", cov["keys_matched"]],
        ["  outside the window", cov["keys_outside_window"]],
        ["  skipped by pattern", cov["keys_skipped_by_pattern"]],
        [
            "KV records (jobs / symbol results / reports)",
            f"{cov['kv_records']} / {cov['kv_symbol_results']} / {cov['kv_reports']}",
        ],
        [
            "D1 rows (executions / symbol results / reports)",
            f"{cov['d1_executions']} / {cov['d1_symbol_results']} / {cov['d1_reports']}",
        ],
        ["KV records matched in D1", cov["records_matched"]],
    ]
    rules = ", ".join(f"{k} {v}" for k, v in cov.get("equal_by_rule", {}).items())
    if rules:
        rows.append(["equal by rule", rules])
    return tabulate(rows, headers=["coverage", ""], tablefmt="simple")


def _summary(summary: dict[str, Any]) -> str:
    rows = [[c, n] for c, n in summary["by_category"].items() if n]
    rows.append(["total", summary["total"]])
    return tabulate(rows, headers=["findings", "count"], tablefmt="simple")


def _finding_row(f: dict[str, Any]) -> list[str]:
    key = f["kv_key"] if f["category"] == "invalid_kv_payload" else f["natural_key"]
    field = f"{f['table']}.{f['field']}" if f.get("field") else f.get("table")
    return [
        _cell(key, 44),
        _cell(field, 28),
        _cell(f.get("kv_value"), 20),
        _cell(f.get("d1_value"), 20),
        _cell(f.get("message"), 60),
        f["id"],
    ]
