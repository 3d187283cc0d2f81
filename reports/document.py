"""The JSON report document (`schema/report.schema.json`), built from a run's stream of findings."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verifier import __version__
from verifier.clock import RunClock, iso
from verifier.model import Category, Coverage, Finding, Severity, Window
from verifier.sources.snapshot import KEY_COLUMNS, redacted

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


@dataclass(frozen=True)
class Consistency:
    """Verify's answer (PRODUCT.md): consistent only when at least one record was compared and
    no finding has severity error."""

    errors: int
    nothing_compared: str | None  # why no record was compared; None when one was

    @classmethod
    def of(cls, coverage: Coverage, summary: Summary) -> Consistency:
        return cls(summary.errors, nothing_compared(coverage, summary))

    @property
    def consistent(self) -> bool:
        return self.errors == 0 and self.nothing_compared is None

    def to_json(self) -> dict[str, Any]:
        return {"consistent": self.consistent, "nothing_compared": self.nothing_compared}


def nothing_compared(coverage: Coverage, summary: Summary) -> str | None:
    """Why the run compared no KV record with D1 (None when it compared one): KV empty or every
    key expired, no key the profile knows, no key in the window."""
    if coverage.kv_records or summary.by_category[Category.INVALID_KV_PAYLOAD.value]:
        return None
    if coverage.keys_listed == 0:
        return "KV lists no live key (the namespace is empty, or every key has expired)"
    if coverage.keys_matched == 0 and coverage.keys_outside_window == 0:
        return (
            f"the profile matched none of the {coverage.keys_listed:,} keys KV lists "
            "(check --profile and --kv-binding)"
        )
    if coverage.keys_matched == 0:
        return (
            f"none of the {coverage.keys_outside_window:,} keys the profile matched is in the "
            "window (check --since / --until)"
        )
    return f"the {coverage.keys_matched:,} matched keys hold no KV record of the window"


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
    clock: RunClock,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: `generated_at` is when the run started, `as_of` the instant that judged
    liveness and urgency (and where it came from: the clock, `--as-of`, a snapshot's capture)."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "command": command,
        "generated_at": iso(clock.started),
        "as_of": clock.to_json(),
        "source": clean_source(source),
        "window": window.to_json(),
        "coverage": coverage.to_json(),
        "summary": summary.to_json(),
        "findings": [f.to_json() for f in findings],
    }
    doc.update(extra or {})
    return doc


# --- redaction (`--redact`): values become salted hashes, keys stay --------------------------

REDACTED_FIELDS = ("kv_value", "d1_value")
KEPT_ROW_FIELDS = KEY_COLUMNS | {"table", "natural_key"}


def _hash_value(value: Any, salt: str) -> Any:
    """A value as `sha256:<16 hex>`; None stays None (a missing value is not a secret)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return redacted(text, salt)


def _redact_finding(finding: dict[str, Any], salt: str) -> dict[str, Any]:
    """Both values hashed, and every spelling of them in the message replaced by the hash."""
    out = dict(finding)
    message = str(out.get("message") or "")
    for name in REDACTED_FIELDS:
        value = out.get(name)
        if value is None:
            continue
        out[name] = _hash_value(value, salt)
        for spelling in {str(value), json.dumps(value, default=str), repr(value)}:
            if len(spelling) >= 2:
                message = message.replace(spelling, out[name])
    if "message" in out:
        out["message"] = message
    return out


def _redact_evidence(node: Any, salt: str) -> Any:
    """Evidence with every `kv_value` / `d1_value` / `value(s)` it carries hashed."""
    if isinstance(node, dict):
        return {
            k: _hash_value(v, salt)
            if k in (*REDACTED_FIELDS, "value", "values") and not isinstance(v, int | float)
            else _redact_evidence(v, salt)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_redact_evidence(v, salt) for v in node]
    return node


def _redact_row(row: dict[str, Any], salt: str) -> dict[str, Any]:
    """A planned row with every text cell outside the keys hashed."""
    return {
        k: _hash_value(v, salt) if isinstance(v, str) and k not in KEPT_ROW_FIELDS else v
        for k, v in row.items()
    }


def redact_document(doc: dict[str, Any], salt: str) -> dict[str, Any]:
    """The document with KV/D1 values as salted hashes, marked `redacted: true`.

    Findings keep their ids, keys, fields and rules (so they can still be triaged); their
    values, the values in metrics' evidence and a backfill's first rows become hashes.
    """
    out = dict(doc)
    out["findings"] = [_redact_finding(f, salt) for f in doc.get("findings", [])]
    if "metrics" in doc:
        out["metrics"] = [
            {**m, "evidence": _redact_evidence(m.get("evidence"), salt)} for m in doc["metrics"]
        ]
    backfill = doc.get("backfill")
    if isinstance(backfill, dict) and isinstance(backfill.get("first_rows"), list):
        rows = [_redact_row(r, salt) if isinstance(r, dict) else r for r in backfill["first_rows"]]
        out["backfill"] = {**backfill, "first_rows": rows}
    out["redacted"] = True
    return out
