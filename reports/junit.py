"""A report document as JUnit XML, for CI test-report viewers.

One testcase per metric (a failure carries the evidence; an unknown metric is skipped), one per
finding category (error categories fail, warnings pass with their list as output) and one per
probe query. Characters XML 1.0 cannot hold become U+FFFD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from reports.report_fields import (
    Doc,
    evidence,
    failure_kind,
    label,
    shown_value,
    source_text,
    window_text,
)

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


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
