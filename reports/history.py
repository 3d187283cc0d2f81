"""Report history: each report kept as a timestamped JSON file; findings tracked across runs.

`--history DIR` keeps `report-YYYYMMDDTHHMMSSZ-NNN.json` files (the suffix orders reports made in
the same second). The next report marks each finding `new` or `persisting` against the last
stored report (finding ids are stable across runs), lists the findings that were `resolved`
since, and gives each metric's trend over the stored runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.errors import Kv2d1Error
from verifier.files import OutputError, write_text

PREFIX = "report-"
TREND_RUNS = 30
RESOLVED_FIELDS = (
    "id",
    "category",
    "severity",
    "natural_key",
    "kv_key",
    "table",
    "field",
    "message",
)


@dataclass(frozen=True)
class StoredReport:
    path: Path
    document: Mapping[str, Any]


def stored_reports(directory: Path) -> list[Path]:
    """The stored reports, oldest first (names sort in time order)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{PREFIX}*.json") if p.is_file())


def _load(path: Path) -> Mapping[str, Any] | None:
    """A stored report, or None when it is unreadable (a history never blocks a report)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("findings"), list) else None


def load_history(directory: Path, *, runs: int = TREND_RUNS) -> list[StoredReport]:
    """The last `runs` readable stored reports, oldest first."""
    loaded = []
    for path in stored_reports(directory)[-runs:]:
        doc = _load(path)
        if doc is not None:
            loaded.append(StoredReport(path, doc))
    return loaded


def compare(doc: dict[str, Any], history: list[StoredReport]) -> dict[str, Any]:
    """Mark the document's findings new/persisting and build its `history` block (in place)."""
    previous = history[-1] if history else None
    before = {f["id"]: f for f in previous.document["findings"]} if previous else {}
    now_ids = set()
    for f in doc["findings"]:
        f["status"] = "persisting" if f["id"] in before else "new"
        now_ids.add(f["id"])
    resolved = [
        {k: f.get(k) for k in RESOLVED_FIELDS} for fid, f in before.items() if fid not in now_ids
    ]
    block = {
        "previous": _describe(previous) if previous else None,
        "runs": len(history) + 1,
        "new": sum(1 for f in doc["findings"] if f["status"] == "new"),
        "persisting": sum(1 for f in doc["findings"] if f["status"] == "persisting"),
        "resolved_count": len(resolved),
        "resolved": resolved,
        "trends": trends([*(h.document for h in history), doc]),
    }
    doc["history"] = block
    return block


def _describe(report: StoredReport) -> dict[str, Any]:
    doc = report.document
    return {
        "file": report.path.name,
        "generated_at": doc.get("generated_at"),
        "verdict": doc.get("verdict"),
    }


def trends(documents: list[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each metric's value and status run by run (oldest first)."""
    series: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        for metric in doc.get("metrics", ()):
            if isinstance(metric, dict) and "name" in metric:
                series.setdefault(metric["name"], []).append(
                    {
                        "generated_at": doc.get("generated_at"),
                        "value": metric.get("value"),
                        "status": metric.get("status"),
                    }
                )
    return series


def store(doc: Mapping[str, Any], directory: Path) -> Path:
    """Write the document as the newest stored report; its path."""
    stamp = _stamp(str(doc.get("generated_at", "")))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        taken = {p.name for p in directory.glob(f"{PREFIX}{stamp}-*.json")}
        n = 1
        while f"{PREFIX}{stamp}-{n:03d}.json" in taken:
            n += 1
        path = directory / f"{PREFIX}{stamp}-{n:03d}.json"
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"
        redacted = bool((doc.get("source") or {}).get("redacted"))
        write_text(path, text, private=not redacted, what="the report history file")
    except OutputError as exc:
        raise Kv2d1Error(f"{exc}; check --history points to a writable directory") from exc
    except OSError as exc:
        raise Kv2d1Error(
            f"cannot write the report history in {directory}: {exc.strerror}; "
            "check --history points to a writable directory"
        ) from exc
    return path


def _stamp(generated_at: str) -> str:
    """The file name stamp of a report: its `generated_at` (every document has one)."""
    try:
        when = dt.datetime.fromisoformat(generated_at.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"a report's generated_at is not a date-time: {generated_at!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def track(doc: dict[str, Any], directory: Path) -> Path:
    """Compare with the stored reports, then store this one (the `--history DIR` step)."""
    compare(doc, load_history(directory))
    return store(doc, directory)
