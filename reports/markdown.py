"""A report document as GitHub-flavoured markdown: verdict, metrics, findings, patterns, history.

The CLI also appends it to `$GITHUB_STEP_SUMMARY`. Cells escape `|`, `&` and `<`, so no HTML
from the data reaches the page; each findings category lists its first `MAX_ROWS_MARKDOWN`
findings and says how many more the JSON report has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reports.report_fields import (
    MAX_RECORDS,
    PROBE_HEADERS,
    VERDICT_LABEL,
    Doc,
    category_counts,
    evidence,
    history_line,
    label,
    no_findings_text,
    probe_rows,
    reasons,
    shorten,
    shown_value,
    source_text,
    window_text,
)

MAX_ROWS_MARKDOWN = 20
VERDICT_ICON = {"ready": "✅", "not_ready": "⚠️", "rollback": "⛔"}
STATUS_ICON = {"pass": "✅ pass", "fail": "❌ fail", "unknown": "❔ unknown"}


def md(value: Any) -> str:
    """A markdown table cell: pipes escaped, line breaks as <br>."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;")  # no HTML from the data
    return text.replace("|", "\\|").replace("\n", "<br>")


def md_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(doc: Doc) -> str:
    """GitHub-flavoured markdown: verdict, metrics, findings, patterns, history."""
    if doc.get("command") == "probe" and isinstance(doc.get("probe"), dict):
        probe = doc["probe"]
        return (
            f"# kv2d1 probe\n\n{md(source_text(doc))} · {probe['repeat']} rounds\n\n"
            + md_table(PROBE_HEADERS, probe_rows(probe))
            + "\n"
        )
    out = [_md_head(doc)]
    if doc.get("metrics"):
        out.append(
            "## Metrics\n\n"
            + md_table(
                ["metric", "value", "target", "rollback if", "status", "evidence"],
                [_md_metric(m) for m in doc["metrics"]],
            )
        )
    out.append(_md_findings(doc))
    if doc.get("patterns"):
        out.append(
            "## Patterns\n\n"
            + md_table(
                ["pattern", "count", "examples", "suggested cause / fix"],
                [
                    [
                        p["pattern"],
                        p["count"],
                        ", ".join(p["example_keys"][:3]),
                        p.get("suggestion") or "",
                    ]
                    for p in doc["patterns"]
                ],
            )
        )
    if doc.get("history"):
        out.append(_md_history(doc["history"]))
    return "\n\n".join(out) + "\n"


def _md_head(doc: Doc) -> str:
    verdict = doc.get("verdict")
    title = f"# kv2d1 {doc['command']}"
    if verdict:
        title += f" — {VERDICT_ICON.get(verdict, '')} {VERDICT_LABEL.get(verdict, verdict)}"
    meta = f"{md(source_text(doc))} · window {md(window_text(doc))} · {md(doc.get('generated_at'))}"
    lines = [title, "", meta]
    if why := reasons(doc):
        lines += ["", *(f"- {md(r)}" for r in why)]
    return "\n".join(lines)


def _md_metric(m: Mapping[str, Any]) -> list[str]:
    summary, records, more = evidence(m)
    detail = "\n".join([summary, *records[:MAX_RECORDS]] + ([f"… and {more} more"] if more else []))
    status = STATUS_ICON.get(m["status"], m["status"]) + (
        " (required)" if m.get("required") else ""
    )
    return [
        label(m),
        shown_value(m),
        m["target"],
        m.get("rollback_threshold") or "—",
        status,
        detail,
    ]


def _md_findings(doc: Doc) -> str:
    counts = category_counts(doc)
    if not counts:
        return f"## Findings\n\n{no_findings_text(doc)}"
    parts = [
        "## Findings\n\n"
        + md_table(["category", "severity", "count"], [[c, s, n] for c, n, s in counts])
    ]
    for category, n, _ in counts:
        items = [f for f in doc["findings"] if f["category"] == category][:MAX_ROWS_MARKDOWN]
        rows = [
            [
                f["natural_key"],
                f.get("kv_key"),
                f.get("table"),
                f.get("field"),
                shorten(f.get("kv_value")),
                shorten(f.get("d1_value")),
                f.get("status", ""),
                f["id"],
            ]
            for f in items
        ]
        more = f"\n\n… and {n - len(items)} more (see the JSON report)" if n > len(items) else ""
        parts.append(
            f"### {category} ({n})\n\n"
            + md_table(["key", "KV key", "table", "field", "KV", "D1", "status", "id"], rows)
            + more
        )
    return "\n\n".join(parts)


def _md_history(history: Mapping[str, Any]) -> str:
    text = "## History\n\n" + md(history_line(history))
    resolved = history.get("resolved") or []
    if resolved:
        text += "\n\n" + md_table(
            ["resolved finding", "category", "KV key", "id"],
            [
                [r.get("natural_key"), r.get("category"), r.get("kv_key"), r.get("id")]
                for r in resolved[:MAX_ROWS_MARKDOWN]
            ],
        )
    return text
