"""The richer renderings of a report document: markdown, JUnit XML, one-file HTML, and text.

`EXTRA_RENDERERS` is what `reports.render` picks up. Each renderer reads the JSON document, so
a stored report renders exactly as a fresh one. `verify`, `report` and `probe` documents all
render; the metric, verdict, pattern and history sections appear when the document has them.

- markdown (`reports.markdown`): GitHub-flavoured tables (the CLI also appends it to
  `$GITHUB_STEP_SUMMARY`);
- junit (`reports.junit`): one testcase per metric and per finding category; failures carry
  the evidence;
- html (`reports.html`): one self-contained file (inline CSS, inline SVG, a few lines of inline
  JS, no network asset): verdict banner, metrics, a heatmap of coverage per job type × day,
  trends, patterns, and a findings table filterable by category;
- text (here): `report` and `probe` documents get their own sections; others render as before.

What the renderers share is in `reports.report_fields`. Their public names are re-exported here
(`__all__`), so callers that import them from `reports.formats` keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from reports.html import (
    CELL_TEXT,
    CSS,
    JS,
    MAX_ROWS_HTML,
    TREND_LINES,
    e,
    render_html,
    trend_svg,
)
from reports.junit import render_junit
from reports.markdown import (
    MAX_ROWS_MARKDOWN,
    STATUS_ICON,
    VERDICT_ICON,
    md,
    md_table,
    render_markdown,
)
from reports.render import OutputFormat
from reports.report_fields import (
    MAX_RECORDS,
    PROBE_HEADERS,
    VERDICT_LABEL,
    Doc,
    category_counts,
    evidence,
    failure_kind,
    grid_of,
    history_line,
    label,
    probe_of,
    probe_rows,
    reasons,
    shown_value,
    source_text,
    triggered,
    window_text,
)
from reports.text import render_text

__all__ = [
    "CELL_TEXT",
    "CSS",
    "EXTRA_RENDERERS",
    "JS",
    "MAX_RECORDS",
    "MAX_ROWS_HTML",
    "MAX_ROWS_MARKDOWN",
    "PROBE_HEADERS",
    "STATUS_ICON",
    "TREND_LINES",
    "VERDICT_ICON",
    "VERDICT_LABEL",
    "Doc",
    "category_counts",
    "e",
    "evidence",
    "failure_kind",
    "grid_of",
    "label",
    "md",
    "md_table",
    "probe_of",
    "probe_rows",
    "reasons",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_text_any",
    "shown_value",
    "source_text",
    "trend_svg",
    "triggered",
    "window_text",
]


def render_text_any(doc: Doc) -> str:
    """Text for any document: report and probe documents get their own sections."""
    if doc.get("command") == "probe" and isinstance(doc.get("probe"), dict):
        return _probe_text(doc)
    if doc.get("command") != "report":
        return render_text(doc)
    verdict = doc.get("verdict", "")
    lines = [
        f"kv2d1 report · {source_text(doc)} · window {window_text(doc)}",
        "",
        f"Verdict: {VERDICT_LABEL.get(verdict, verdict)}",
    ]
    lines += [f"  - {r}" for r in reasons(doc)]
    lines += ["", _metrics_text(doc)]
    base = render_text({k: v for k, v in doc.items() if k != "verdict"})
    lines += ["", base.split("\n", 1)[1].strip("\n")]  # its header line repeats ours
    if doc.get("patterns"):
        rows = [[p["count"], p["pattern"], p.get("suggestion") or ""] for p in doc["patterns"]]
        lines += [
            "",
            tabulate(
                rows,
                headers=["count", "pattern", "suggested cause / fix"],
                maxcolwidths=[None, 60, 60],
            ),
        ]
    if doc.get("history"):
        lines += ["", history_line(doc["history"])]
    return "\n".join(lines) + "\n"


def _metrics_text(doc: Doc) -> str:
    rows = []
    for m in doc.get("metrics", []):
        summary, records, more = evidence(m)
        detail = summary + "".join(f"\n  {r}" for r in records[:MAX_RECORDS])
        detail += f"\n  … and {more} more" if more else ""
        required = " (required)" if m.get("required") else ""
        rows.append(
            [
                label(m),
                shown_value(m),
                m["target"],
                m.get("rollback_threshold") or "—",
                m["status"] + required,
                detail,
            ]
        )
    headers = ["metric", "value", "target", "rollback if", "status", "evidence"]
    return tabulate(rows, headers=headers, maxcolwidths=[18, 12, 22, 22, 18, 70])


def _probe_text(doc: Doc) -> str:
    probe = doc["probe"]
    basis = "D1's own duration" if probe.get("basis") == "d1_duration" else "measured time"
    head = (
        f"kv2d1 probe · {source_text(doc)} · {probe['repeat']} rounds · target P95 < "
        f"{probe['target_ms']:g} ms, rollback > {probe['rollback_ms']:g} ms ({basis})"
    )
    return head + "\n\n" + tabulate(probe_rows(probe), headers=PROBE_HEADERS) + "\n"


EXTRA_RENDERERS: dict[OutputFormat, Callable[[dict[str, Any]], str]] = {
    OutputFormat.TEXT: render_text_any,
    OutputFormat.MARKDOWN: render_markdown,
    OutputFormat.JUNIT: render_junit,
    OutputFormat.HTML: render_html,
}
