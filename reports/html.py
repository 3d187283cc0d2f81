"""A report document as one self-contained HTML page: nothing is fetched from the network.

Inline CSS, inline SVG and a few lines of inline JS: verdict banner, metrics, a heatmap of
coverage per job type × day, trend charts, probe latency, patterns, history, and a findings
table filterable by category (the filter also reads `#category=NAME` from the URL). Every value
from the document goes through `e()` (HTML-escaped); at most `MAX_ROWS_HTML` rows per table.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from typing import Any

from reports.metrics import (
    DASHBOARD_TARGET_S,
    KV_REDUCTION_TARGET,
    WRITE_ROLLBACK,
    WRITE_TARGET,
    MetricName,
)
from reports.probe import ROLLBACK_MS, TARGET_MS
from reports.report_fields import (
    PROBE_HEADERS,
    VERDICT_LABEL,
    Doc,
    category_counts,
    evidence,
    grid_of,
    history_line,
    label,
    no_findings_text,
    probe_of,
    probe_rows,
    reasons,
    shorten,
    shown_value,
    source_text,
    triggered,
    window_text,
)

MAX_ROWS_HTML = 2000
# (target, rollback threshold) drawn as lines on the trend charts
TREND_LINES: dict[str, tuple[float | None, float | None]] = {
    MetricName.DATA_COMPLETENESS: (100.0, None),
    MetricName.SEVEN_DAY_COVERAGE: (100.0, None),
    MetricName.QUERY_P95: (TARGET_MS, ROLLBACK_MS),
    MetricName.WRITE_RELIABILITY: (WRITE_TARGET, WRITE_ROLLBACK),
    MetricName.KV_READ_REDUCTION: (KV_REDUCTION_TARGET, None),
    MetricName.DASHBOARD_LOAD: (DASHBOARD_TARGET_S, None),
}

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
        f'<section id="history"><h2>History</h2><p>{e(history_line(history))}</p>{table}</section>'
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
        f"<td>{e(f.get('field'))}</td><td class=mono>{e(shorten(f.get('kv_value')))}</td>"
        f'<td class=mono>{e(shorten(f.get("d1_value")))}</td><td class="st-{e(f.get("status", ""))}">{e(f.get("status", ""))}</td>'
        f"<td>{e(f['message'])}</td></tr>"
        for f in findings[:MAX_ROWS_HTML]
    )
    more = (
        f'<p class="mute">Showing the first {MAX_ROWS_HTML} of {len(findings)}; the JSON report has all.</p>'
        if len(findings) > MAX_ROWS_HTML
        else ""
    )
    empty = "" if findings else f"<p>{e(no_findings_text(doc))}</p>"
    return (
        '<section id="findings-section"><h2>Findings</h2><div class="filters"><label>Category '
        f'<select id="category-filter">{options}</select></label><label>Search '
        '<input id="finding-search" type="search" placeholder="key, field, message"></label>'
        f'<span class="mute"><span id="finding-count">{len(findings)}</span> shown</span></div>{more}{empty}'
        '<table id="findings"><thead><tr><th>category</th><th>key</th><th>KV key</th><th>table</th>'
        "<th>field</th><th>KV</th><th>D1</th><th>status</th><th>message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )
