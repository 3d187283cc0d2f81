"""The JSON report document (`schema/report.schema.json`), built from a run's stream of findings."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verifier import __version__
from verifier.model import Category, Coverage, Finding, Severity, Window

SCHEMA_VERSION = "1.0"
SECRET_WORDS = ("token", "authorization", "api_key", "secret")


@dataclass
class Summary:
    """Counts per category and severity, computed from the stream of findings."""

    by_category: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)

    def add(self, f: Finding) -> None:
        self.by_category[f.category.value] += 1
        self.by_severity[f.severity.value] += 1

    @property
    def total(self) -> int:
        return sum(self.by_category.values())

    @property
    def errors(self) -> int:
        return self.by_severity[Severity.ERROR.value]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_category": {c.value: self.by_category[c.value] for c in Category},
            "by_severity": {s.value: self.by_severity[s.value] for s in Severity},
        }


def collect(findings: Iterable[Finding]) -> tuple[list[Finding], Summary]:
    """Consume the stream once: the findings (ordered by category, key) and their summary."""
    summary = Summary()
    kept = []
    for f in findings:
        summary.add(f)
        kept.append(f)
    order = {c: i for i, c in enumerate(Category)}
    kept.sort(key=lambda f: (order[f.category], f.natural_key, f.field or "", f.id))
    return kept, summary


SOURCE_KEYS = (
    "kind",
    "config",
    "env",
    "kv_binding",
    "kv_namespace_id",
    "d1_binding",
    "d1_database_id",
    "d1_database_name",
    "persist_to",
    "snapshot",
)


def clean_source(source: dict[str, Any]) -> dict[str, Any]:
    """The source block with every schema key present and nothing that looks like a secret."""
    block: dict[str, Any] = dict.fromkeys(SOURCE_KEYS)
    block.update(source)
    return {k: v for k, v in block.items() if not any(w in k.lower() for w in SECRET_WORDS)}


def build_document(
    *,
    command: str,
    source: dict[str, Any],
    window: Window,
    coverage: Coverage,
    findings: list[Finding],
    summary: Summary,
    generated_at: dt.datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "command": command,
        "generated_at": (generated_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "source": clean_source(source),
        "window": window.to_json(),
        "coverage": coverage.to_json(),
        "summary": summary.to_json(),
        "findings": [f.to_json() for f in findings],
    }
    doc.update(extra or {})
    return doc
