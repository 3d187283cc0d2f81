"""What every renderer of a report document reads from it: labels, values, evidence, counts.

The renderers (`reports.markdown`, `reports.junit`, `reports.html` and the text of
`reports.formats`) all read the JSON document, never the objects it was built from, so these
helpers take plain mappings. A `verify`, `report` or `probe` document may lack any section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from reports.metrics import SPECS, MetricName
from reports.verdict import Decision, ReasonKind, decide_document

Doc = dict[str, Any]
MAX_RECORDS = 10
VERDICT_LABEL = {"ready": "READY", "not_ready": "NOT READY", "rollback": "ROLLBACK"}


def no_findings_text(doc: Mapping[str, Any]) -> str:
    """What a document without findings says: agreement, or that nothing was compared."""
    why = (doc.get("consistency") or {}).get("nothing_compared")
    if why:
        return f"Nothing to compare: {why}. Not consistent: verify exits 3."
    return "No findings: KV and D1 agree in this window."


def nothing_compared_text(doc: Mapping[str, Any]) -> str | None:
    """The note for a document that has findings (warnings only) but compared nothing."""
    why = (doc.get("consistency") or {}).get("nothing_compared")
    return f"Nothing compared: {why}." if why else None


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
    """Why the verdict is what it is: the report's own `decision`, else decided again from its
    metrics and findings (a document stored before the report recorded its decision)."""
    if isinstance(recorded := doc.get("decision"), dict):
        return [str(r) for r in recorded.get("reasons", ())]
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


def history_line(history: Mapping[str, Any]) -> str:
    prev = history.get("previous") or {}
    since = f" since {prev.get('generated_at')}" if prev else " (first stored report)"
    return (
        f"History{since}: {history.get('new', 0)} new, {history.get('persisting', 0)} "
        f"persisting, {history.get('resolved_count', 0)} resolved"
    )


def shorten(value: Any, width: int = 40) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
