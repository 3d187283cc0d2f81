"""The richer renderings of a report document: markdown, JUnit XML, one-file HTML, and text.

`EXTRA_RENDERERS` is what `reports.render` picks up. Each renderer reads the JSON document, so
a stored report renders exactly as a fresh one. `verify`, `report` and `probe` documents all
render; the metric, verdict, pattern and history sections appear when the document has them.

- markdown: GitHub-flavoured tables (the CLI also appends it to `$GITHUB_STEP_SUMMARY`);
- junit: one testcase per metric and per finding category; failures carry the evidence;
- html: one self-contained file (inline CSS, inline SVG, a few lines of inline JS, no network
  asset): verdict banner, metrics, a heatmap of coverage per job type × day, trends, patterns,
  and a findings table filterable by category;
- text: `report` and `probe` documents get their own sections; others render as before.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tabulate import tabulate

from reports.metrics import (
    DASHBOARD_TARGET_S,
    KV_REDUCTION_TARGET,
    SPECS,
    WRITE_ROLLBACK,
    WRITE_TARGET,
    MetricName,
)
from reports.probe import ROLLBACK_MS, TARGET_MS
from reports.render import OutputFormat
from reports.text import render_text
from reports.verdict import Decision, ReasonKind, decide_document

Doc = dict[str, Any]
MAX_ROWS_MARKDOWN = 20
MAX_ROWS_HTML = 2000
MAX_RECORDS = 10
VERDICT_LABEL = {"ready": "READY", "not_ready": "NOT READY", "rollback": "ROLLBACK"}
VERDICT_ICON = {"ready": "✅", "not_ready": "⚠️", "rollback": "⛔"}
STATUS_ICON = {"pass": "✅ pass", "fail": "❌ fail", "unknown": "❔ unknown"}
# (target, rollback threshold) drawn as lines on the trend charts
TREND_LINES: dict[str, tuple[float | None, float | None]] = {
    MetricName.DATA_COMPLETENESS: (100.0, None),
    MetricName.SEVEN_DAY_COVERAGE: (100.0, None),
    MetricName.QUERY_P95: (TARGET_MS, ROLLBACK_MS),
    MetricName.WRITE_RELIABILITY: (WRITE_TARGET, WRITE_ROLLBACK),
    MetricName.KV_READ_REDUCTION: (KV_REDUCTION_TARGET, None),
    MetricName.DASHBOARD_LOAD: (DASHBOARD_TARGET_S, None),
}
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- shared pieces ---------------------------------------------------------------------------


def label(metric: Mapping[str, Any]) -> str:
    try:
        return SPECS[MetricName(metric["name"])].label
    except ValueError:
        return str(metric["name"])


def shown_value(metric: Mapping[str, Any]) -> str:
    """A metric's value with its unit, or `unknown`."""
    value, unit = metric.get("value"), metric.get("unit") or ""
    if value is None:
        return "unknown"
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value} {unit}".strip()


def evidence(metric: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """The evidence's summary, named records and how many more there are."""
    ev = metric.get("evidence")
    if not isinstance(ev, dict):
        return str(ev or ""), [], 0
    records = [str(r) for r in ev.get("records", [])]
    return str(ev.get("summary", "")), records, int(ev.get("more_records", 0))


def triggered(metric: Mapping[str, Any]) -> bool:
    ev = metric.get("evidence")
    return isinstance(ev, dict) and bool(ev.get("rollback_triggered"))


def failure_kind(metric: Mapping[str, Any]) -> str | None:
    """Why a metric blocks the cutover (as `ReasonKind` names it), or None."""
    if triggered(metric):
        return ReasonKind.ROLLBACK_TRIGGER.value
    if metric["status"] == "fail":
        return ReasonKind.TARGET_MISSED.value
    if metric["status"] == "unknown" and metric.get("required"):
        return ReasonKind.REQUIRED_UNKNOWN.value
    return None


def reasons(doc: Doc) -> list[str]:
    decision: Decision | None = decide_document(doc)
    return [str(r) for r in decision.reasons] if decision else []


def window_text(doc: Doc) -> str:
    window = doc.get("window") or {}
    return f"{window.get('since') or 'first'} → {window.get('until') or 'last'}"


def source_text(doc: Doc) -> str:
    src = doc.get("source") or {}
    return f"{src.get('kind')} · KV {src.get('kv_binding')} → D1 {src.get('d1_binding')}"


def grid_of(doc: Doc) -> Mapping[str, Any] | None:
    for metric in doc.get("metrics", []):
        ev = metric.get("evidence")
        if metric.get("name") == MetricName.SEVEN_DAY_COVERAGE and isinstance(ev, dict):
            grid = ev.get("grid")
            return grid if isinstance(grid, dict) else None
    return None


def probe_of(doc: Doc) -> Mapping[str, Any] | None:
    if isinstance(doc.get("probe"), dict):
        return dict(doc["probe"])
    for metric in doc.get("metrics", []):
        ev = metric.get("evidence")
        if isinstance(ev, dict) and isinstance(ev.get("probe"), dict):
            return dict(ev["probe"])
    return None


def category_counts(doc: Doc) -> list[tuple[str, int, str]]:
    """(category, count, severity) of the categories with findings, in the report's order."""
    severity = {f["category"]: f["severity"] for f in doc.get("findings", [])}
    counts = (doc.get("summary") or {}).get("by_category") or Counter(
        f["category"] for f in doc.get("findings", [])
    )
    return [(c, n, severity.get(c, "")) for c, n in counts.items() if n]


def _ms(stats: Mapping[str, Any] | None, key: str) -> str:
    return "—" if not stats else f"{stats[key]:.2f}"


def probe_rows(probe: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for q in [*probe["queries"], {"name": "overall", **probe["overall"]}]:
        rt, d1 = q["round_trip"], q.get("d1")
        rows.append(
            [
                q["name"],
                _ms(rt, "p50_ms"),
                _ms(rt, "p95_ms"),
                _ms(rt, "max_ms"),
                _ms(d1, "p50_ms"),
                _ms(d1, "p95_ms"),
                _ms(d1, "max_ms"),
            ]
        )
    return rows


PROBE_HEADERS = ["query", "P50 ms", "P95 ms", "max ms", "D1 P50", "D1 P95", "D1 max"]


# --- text ------------------------------------------------------------------------------------


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
        lines += ["", _history_line(doc["history"])]
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


def _history_line(history: Mapping[str, Any]) -> str:
    prev = history.get("previous") or {}
    since = f" since {prev.get('generated_at')}" if prev else " (first stored report)"
    return (
        f"History{since}: {history.get('new', 0)} new, {history.get('persisting', 0)} "
        f"persisting, {history.get('resolved_count', 0)} resolved"
    )


def _probe_text(doc: Doc) -> str:
    probe = doc["probe"]
    basis = "D1's own duration" if probe.get("basis") == "d1_duration" else "measured time"
    head = (
        f"kv2d1 probe · {source_text(doc)} · {probe['repeat']} rounds · target P95 < "
        f"{probe['target_ms']:g} ms, rollback > {probe['rollback_ms']:g} ms ({basis})"
    )
    return head + "\n\n" + tabulate(probe_rows(probe), headers=PROBE_HEADERS) + "\n"


# --- markdown --------------------------------------------------------------------------------


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
        return "## Findings\n\nNo findings: KV and D1 agree in this window."
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
                _short(f.get("kv_value")),
                _short(f.get("d1_value")),
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
    text = "## History\n\n" + md(_history_line(history))
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


def _short(value: Any, width: int = 40) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --- JUnit XML -------------------------------------------------------------------------------


def _xml_text(value: Any) -> str:
    return _XML_BAD.sub("\ufffd", "" if value is None else str(value))


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attrs.items()})
    if text is not None:
        node.text = _xml_text(text)
    return node


def render_junit(doc: Doc) -> str:
    """JUnit XML: a suite of metrics (failures and skips carry the evidence), a suite of
    finding categories (error categories fail, warnings pass with their list as output)."""
    root = ET.Element("testsuites", name=f"kv2d1 {doc['command']}")
    suites = []
    if doc.get("metrics"):
        suites.append(_junit_metrics(root, doc))
    if isinstance(doc.get("probe"), dict):
        suites.append(_junit_probe(root, doc))
    suites.append(_junit_findings(root, doc))
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(root: ET.Element, name: str, doc: Doc) -> ET.Element:
    suite = _el(root, "testsuite", name=name, timestamp=str(doc.get("generated_at", ""))[:19])
    props = _el(suite, "properties")
    for key, value in (
        ("verdict", doc.get("verdict")),
        ("window", window_text(doc)),
        ("source", source_text(doc)),
        ("tool_version", doc.get("tool_version")),
    ):
        if value:
            _el(props, "property", name=key, value=value)
    return suite


def _finish(suite: ET.Element, cases: int, failures: int, skipped: int) -> ET.Element:
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    return suite


def _junit_metrics(root: ET.Element, doc: Doc) -> ET.Element:
    suite = _suite(root, "kv2d1.metrics", doc)
    failures = skipped = 0
    for m in doc["metrics"]:
        case = _el(suite, "testcase", classname="kv2d1.metrics", name=m["name"], time="0")
        summary, records, more = evidence(m)
        body = "\n".join(
            [
                f"{label(m)}: {shown_value(m)} (target {m['target']}, rollback if "
                f"{m.get('rollback_threshold') or '—'})",
                summary,
                *records,
            ]
            + ([f"… and {more} more"] if more else [])
        )
        if (kind := failure_kind(m)) is not None:
            failures += 1
            _el(case, "failure", body, message=f"{label(m)} {shown_value(m)}: {summary}", type=kind)
        elif m["status"] == "unknown":
            skipped += 1
            _el(case, "skipped", message=f"unknown: {summary}")
        else:
            _el(case, "system-out", body)
    return _finish(suite, len(doc["metrics"]), failures, skipped)


def _junit_findings(root: ET.Element, doc: Doc) -> ET.Element:
    suite = _suite(root, "kv2d1.findings", doc)
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for f in doc.get("findings", []):
        by_category.setdefault(f["category"], []).append(f)
    categories = list((doc.get("summary") or {}).get("by_category") or by_category)
    failures = 0
    for category in categories:
        items = by_category.get(category, [])
        case = _el(suite, "testcase", classname="kv2d1.findings", name=category, time="0")
        if not items:
            continue
        listing = "\n".join(
            f"{f['natural_key']} [{f.get('kv_key') or f.get('table') or ''}] "
            f"{f['message']} (id {f['id']})"
            for f in items
        )
        if items[0]["severity"] == "error":
            failures += 1
            _el(
                case, "failure", listing, message=f"{len(items)} {category} findings", type=category
            )
        else:
            _el(case, "system-out", listing)
    return _finish(suite, len(categories), failures, 0)


def _junit_probe(root: ET.Element, doc: Doc) -> ET.Element:
    suite = _suite(root, "kv2d1.probe", doc)
    probe = doc["probe"]
    failures = 0
    for q in probe["queries"]:
        stats = q.get("d1") or q["round_trip"]
        case = _el(
            suite,
            "testcase",
            classname="kv2d1.probe",
            name=q["name"],
            time=f"{stats['p50_ms'] / 1000:.6f}",
        )
        text = f"P50 {stats['p50_ms']:.2f} ms, P95 {stats['p95_ms']:.2f} ms, max {stats['max_ms']:.2f} ms"
        if stats["p95_ms"] >= probe["target_ms"]:
            failures += 1
            _el(
                case, "failure", text, message=f"P95 {stats['p95_ms']:.1f} ms", type="target_missed"
            )
        _el(case, "system-out", "; ".join(q["sql"]) + "\n" + text)
    return _finish(suite, len(probe["queries"]), failures, 0)


# --- HTML ------------------------------------------------------------------------------------

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--unk:#6e7781;--bg:#fff;--fg:#1f2328;--mute:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:0 20px 40px}h2{margin:28px 0 10px;font-size:18px}
.banner{padding:18px 24px;color:#fff}.banner h1{margin:0;font-size:28px;letter-spacing:.02em}.banner p{margin:4px 0}
.v-ready{background:var(--ok)}.v-not_ready{background:var(--warn)}.v-rollback{background:var(--bad)}.v-none{background:#424a53}
.banner ul{margin:8px 0 0;padding-left:20px}.meta{opacity:.9;font-size:13px}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.key{white-space:nowrap}td.num{text-align:right;white-space:nowrap}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.s-pass{background:var(--ok)}.s-fail{background:var(--bad)}.s-unknown{background:var(--unk)}.s-trigger{background:#82071e}
details summary{cursor:pointer;color:var(--mute)}details ul{margin:4px 0;padding-left:18px}
.heat{width:auto}.heat td,.heat th{border:1px solid #fff;padding:0;text-align:center;font-size:11px}.heat th.row{text-align:right;padding:0 8px;white-space:nowrap;background:none}
.heat td{width:22px;height:22px}.heat th.day{background:none;font-weight:400;color:var(--mute);width:22px}.heat .recent{outline:2px solid #0969da;outline-offset:-2px}
.c-ok{background:#2da44e}.c-defect{background:#bf8700}.c-missing{background:#cf222e}.c-extra{background:#8fd1a0}.c-none{background:#eaeef2}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-2px}
.trends{display:flex;flex-wrap:wrap;gap:16px}.trend{border:1px solid var(--line);border-radius:6px;padding:8px 10px;width:360px}
.trend h3{margin:0 0 4px;font-size:13px}.trend svg{display:block}.mute{color:var(--mute)}
.filters{display:flex;gap:12px;align-items:center;margin:6px 0}select,input{font:inherit;padding:3px 6px}
tr.sev-error td:first-child{border-left:3px solid var(--bad)}tr.sev-warning td:first-child{border-left:3px solid var(--warn)}
.st-new{color:var(--bad);font-weight:600}.st-persisting{color:var(--mute)}
footer{color:var(--mute);font-size:12px;margin-top:30px}
"""

JS = """
(function () {
  var select = document.getElementById('category-filter');
  var search = document.getElementById('finding-search');
  var count = document.getElementById('finding-count');
  if (!select) { return; }
  var rows = Array.prototype.slice.call(document.querySelectorAll('#findings tbody tr'));
  function apply() {
    var category = select.value, text = search.value.toLowerCase(), shown = 0;
    rows.forEach(function (row) {
      var ok = (!category || row.getAttribute('data-category') === category) &&
               (!text || row.textContent.toLowerCase().indexOf(text) >= 0);
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = String(shown);
  }
  var wanted = /category=([a-z0-9_]+)/.exec(window.location.hash);
  if (wanted) { select.value = wanted[1]; }
  select.addEventListener('change', apply);
  search.addEventListener('input', apply);
  apply();
  document.documentElement.setAttribute('data-filter', 'ready');
})();
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(doc: Doc) -> str:
    """One self-contained page: no stylesheet, script, font or image is fetched."""
    verdict = doc.get("verdict")
    title = f"kv2d1 {doc['command']}" + (
        f" — {VERDICT_LABEL.get(verdict, verdict)}" if verdict else ""
    )
    body = [_html_banner(doc), "<main>"]
    if doc.get("metrics"):
        body.append(_html_metrics(doc))
    if (grid := grid_of(doc)) is not None:
        body.append(_html_heatmap(grid))
    if doc.get("metrics"):
        body.append(_html_trends(doc))
    if (probe := probe_of(doc)) is not None:
        body.append(_html_probe(probe))
    if doc.get("patterns"):
        body.append(_html_patterns(doc["patterns"]))
    if doc.get("history"):
        body.append(_html_history(doc["history"]))
    if doc.get("command") != "probe":
        body.append(_html_findings(doc))
    body.append(
        f"<footer>kv2d1 {e(doc.get('tool_version'))} · schema {e(doc.get('schema_version'))}"
        f" · generated {e(doc.get('generated_at'))}</footer></main>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{JS}</script>\n</body></html>\n"
    )


def _html_banner(doc: Doc) -> str:
    verdict = doc.get("verdict")
    heading = VERDICT_LABEL.get(verdict, verdict) if verdict else f"kv2d1 {doc['command']}"
    why = "".join(f"<li>{e(r)}</li>" for r in reasons(doc))
    why_html = (
        f"<ul>{why}</ul>"
        if why
        else ("<p>Every target met; no rollback trigger fired.</p>" if verdict == "ready" else "")
    )
    return (
        f'<header class="banner v-{e(verdict or "none")}"><h1>{e(heading)}</h1>{why_html}'
        f'<p class="meta">kv2d1 {e(doc["command"])} · {e(source_text(doc))} · window '
        f"{e(window_text(doc))} · {e(doc.get('generated_at'))}</p></header>"
    )


def _records(n: int) -> str:
    return f"{n} record{'s' if n != 1 else ''}"


def _badge(status: str, text: str | None = None) -> str:
    return f'<span class="badge s-{e(status)}">{e(text or status)}</span>'


def _html_metrics(doc: Doc) -> str:
    rows = []
    for m in doc["metrics"]:
        summary, records, more = evidence(m)
        trigger = triggered(m)
        status = _badge(m["status"]) + (
            " " + _badge("trigger", "rollback trigger") if trigger else ""
        )
        status += ' <span class="mute">required</span>' if m.get("required") else ""
        listed = "".join(f"<li class=mono>{e(r)}</li>" for r in records)
        listed += f"<li>… and {more} more (see the JSON report)</li>" if more else ""
        named = (
            f"<details><summary>{_records(len(records) + more)}</summary><ul>{listed}</ul></details>"
            if records
            else ""
        )
        rows.append(
            f'<tr id="metric-{e(m["name"])}"><td>{e(label(m))}</td><td class=num>{e(shown_value(m))}</td>'
            f"<td>{e(m['target'])}</td><td>{e(m.get('rollback_threshold') or '—')}</td>"
            f"<td>{status}</td><td>{e(summary)}{named}</td></tr>"
        )
    return (
        '<section id="metrics"><h2>Metrics</h2><table><thead><tr><th>metric</th><th>value</th>'
        "<th>target</th><th>rollback if</th><th>status</th><th>evidence</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


CELL_TEXT = {
    "ok": "in D1",
    "defect": "in D1, with errors",
    "missing": "scheduled, not in D1",
    "extra": "in D1, not scheduled",
    "none": "not scheduled",
}


def _html_heatmap(grid: Mapping[str, Any]) -> str:
    days, recent = grid["days"], set(grid.get("metric_days", []))
    head = "".join(
        f'<th class="day" title="{e(d)}">{e(d[8:])}<br>{"MTWTFSS"[dt.date.fromisoformat(d).weekday()]}</th>'
        for d in days
    )
    rows = []
    for job_type in grid["job_types"]:
        cells = "".join(
            f'<td class="c-{e(state)}{" recent" if day in recent else ""}" '
            f'title="{e(job_type)} {e(day)}: {e(CELL_TEXT.get(state, state))}"></td>'
            for day, state in zip(days, grid["cells"][job_type], strict=True)
        )
        rows.append(f'<tr><th class="row">{e(job_type)}</th>{cells}</tr>')
    legend = "".join(f'<span class="c-{k}"></span>{e(v)}' for k, v in CELL_TEXT.items())
    span = f"{days[0]} … {days[-1]}" if days else ""
    return (
        f'<section id="coverage"><h2>Coverage per job type × day</h2><p class="mute">{e(span)};'
        " the outlined days are the 7-day coverage metric's.</p>"
        f'<table class="heat"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}'
        f'</tbody></table><p class="legend mute">{legend}</p></section>'
    )


def _html_trends(doc: Doc) -> str:
    series = (doc.get("history") or {}).get("trends") or {
        m["name"]: [
            {
                "generated_at": doc.get("generated_at"),
                "value": m.get("value"),
                "status": m["status"],
            }
        ]
        for m in doc["metrics"]
    }
    charts = []
    for m in doc["metrics"]:
        points = series.get(m["name"], [])
        charts.append(
            f'<div class="trend"><h3>{e(label(m))}</h3>{trend_svg(m["name"], points)}'
            f'<p class="mute">{len(points)} run{"s" if len(points) != 1 else ""}</p></div>'
        )
    note = (
        ""
        if doc.get("history")
        else (
            '<p class="mute">One run so far: keep reports with <code>--history DIR</code> to see trends.</p>'
        )
    )
    return f'<section id="trends"><h2>Trends</h2>{note}<div class="trends">{"".join(charts)}</div></section>'


def trend_svg(
    name: str, points: list[Mapping[str, Any]], *, width: int = 340, height: int = 90
) -> str:
    """An inline SVG line of a metric's values over runs, with its target (and rollback) line."""
    values = [
        (i, float(p["value"]))
        for i, p in enumerate(points)
        if isinstance(p.get("value"), int | float)
    ]
    target, rollback = TREND_LINES.get(name, (None, None))
    if not values:
        return f'<svg width="{width}" height="{height}" role="img" aria-label="no values"><text x="8" y="50" fill="#6e7781">no measured value yet</text></svg>'
    ys = [v for _, v in values] + [t for t in (target, rollback) if t is not None]
    low, high = min(ys), max(ys)
    pad = (high - low) * 0.1 or max(abs(high) * 0.1, 1.0)
    low, high = low - pad, high + pad
    span_x = max(len(points) - 1, 1)

    def xy(i: float, v: float) -> tuple[float, float]:
        return 30 + (width - 40) * i / span_x, 8 + (height - 22) * (high - v) / (high - low)

    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{e(name)} over {len(points)} runs">'
    ]
    for value, color, dash in ((target, "#1a7f37", "4 3"), (rollback, "#cf222e", "2 2")):
        if value is not None:
            _, y = xy(0, value)
            parts.append(
                f'<line x1="30" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
                f'stroke-dasharray="{dash}"/><text x="2" y="{y + 4:.1f}" font-size="9" fill="{color}">{value:g}</text>'
            )
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in values))
    parts.append(f'<polyline points="{coords}" fill="none" stroke="#0969da" stroke-width="2"/>')
    for (i, v), p in zip(values, (points[i] for i, _ in values), strict=True):
        x, y = xy(i, v)
        color = {"pass": "#1a7f37", "fail": "#cf222e"}.get(str(p.get("status")), "#6e7781")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"><title>{e(p.get("generated_at"))}: '
            f"{v:g}</title></circle>"
        )
    return "".join(parts) + "</svg>"


def _html_probe(probe: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in PROBE_HEADERS)
    rows = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i else ''}>{e(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in probe_rows(probe)
    )
    return (
        f'<section id="probe"><h2>Query latency</h2><p class="mute">{e(probe["repeat"])} rounds of the '
        f"plan's read queries; target P95 &lt; {e(probe['target_ms'])} ms, rollback above "
        f"{e(probe['rollback_ms'])} ms.</p><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _html_patterns(patterns: list[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{e(p['pattern'])}</td><td class=num>{e(p['count'])}</td>"
        f"<td class=mono>{'<br>'.join(e(k) for k in p['example_keys'][:5])}</td><td>{e(p.get('suggestion') or '')}</td></tr>"
        for p in patterns
    )
    return (
        '<section id="patterns"><h2>Patterns</h2><table><thead><tr><th>pattern</th><th>count</th>'
        f"<th>examples</th><th>suggested cause / fix</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _html_history(history: Mapping[str, Any]) -> str:
    resolved = history.get("resolved") or []
    rows = "".join(
        f"<tr><td class=mono>{e(r.get('natural_key'))}</td><td>{e(r.get('category'))}</td>"
        f"<td class=mono>{e(r.get('kv_key'))}</td><td class=mono>{e(r.get('id'))}</td></tr>"
        for r in resolved[:MAX_ROWS_HTML]
    )
    table = (
        (
            f"<h3>Resolved since the last report ({len(resolved)})</h3><table><thead><tr><th>finding</th>"
            f"<th>category</th><th>KV key</th><th>id</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        if resolved
        else ""
    )
    return (
        f'<section id="history"><h2>History</h2><p>{e(_history_line(history))}</p>{table}</section>'
    )


def _html_findings(doc: Doc) -> str:
    findings = doc.get("findings", [])
    counts = category_counts(doc)
    options = f'<option value="">all categories ({len(findings)})</option>' + "".join(
        f'<option value="{e(c)}">{e(c)} ({n})</option>' for c, n, _ in counts
    )
    rows = "".join(
        f'<tr class="sev-{e(f["severity"])}" data-category="{e(f["category"])}"><td>{e(f["category"])}</td>'
        f"<td class='mono key'>{e(f['natural_key'])}</td><td class='mono key'>{e(f.get('kv_key'))}</td><td>{e(f.get('table'))}</td>"
        f"<td>{e(f.get('field'))}</td><td class=mono>{e(_short(f.get('kv_value')))}</td>"
        f'<td class=mono>{e(_short(f.get("d1_value")))}</td><td class="st-{e(f.get("status", ""))}">{e(f.get("status", ""))}</td>'
        f"<td>{e(f['message'])}</td></tr>"
        for f in findings[:MAX_ROWS_HTML]
    )
    more = (
        f'<p class="mute">Showing the first {MAX_ROWS_HTML} of {len(findings)}; the JSON report has all.</p>'
        if len(findings) > MAX_ROWS_HTML
        else ""
    )
    empty = "" if findings else "<p>No findings: KV and D1 agree in this window.</p>"
    return (
        '<section id="findings-section"><h2>Findings</h2><div class="filters"><label>Category '
        f'<select id="category-filter">{options}</select></label><label>Search '
        '<input id="finding-search" type="search" placeholder="key, field, message"></label>'
        f'<span class="mute"><span id="finding-count">{len(findings)}</span> shown</span></div>{more}{empty}'
        '<table id="findings"><thead><tr><th>category</th><th>key</th><th>KV key</th><th>table</th>'
        "<th>field</th><th>KV</th><th>D1</th><th>status</th><th>message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


EXTRA_RENDERERS: dict[OutputFormat, Callable[[dict[str, Any]], str]] = {
    OutputFormat.TEXT: render_text_any,
    OutputFormat.MARKDOWN: render_markdown,
    OutputFormat.JUNIT: render_junit,
    OutputFormat.HTML: render_html,
}
