"""Findings that share a cause, grouped, with the cause named where it is recognisable.

A group is (category, table, field, payload shape, value pattern). The value pattern says how
the two values of a `field_mismatch` differ:

| pattern | the two values | likely cause |
|---|---|---|
| `d1_null` | KV has a value, D1 NULL | a field the dual-writer does not map |
| `zero_as_null` | KV 0, D1 NULL | the adapter's `x \\|\\| null` |
| `kv_null` | KV NULL, D1 a value | D1 written from another source |
| `offset_±Nh` | instants N whole hours apart | time zone (±1 h daylight saving, ±4/5 h New York vs UTC) |
| `offset_±1d` | dates a day apart | business date taken in UTC instead of New York |
| `json_key_order` | the same JSON, keys in another order | text comparison of a JSON column |
| `string_vs_number` | `"3"` vs `3` | a number stored as text |
| `percent_vs_fraction` | `82` vs `0.82` | percent written where a fraction belongs |
| `case_only` | `Bullish` vs `bullish` | a value's case |

When sentiment, confidence, direction and reasoning are all NULL in D1 for the symbols of one
shape, the groups merge into one: the plan adapter's `(analysis as any)[symbol]?.…` bug
(per-symbol data is at `trading_signals[symbol]` or `sentiment_signals[symbol]`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from verifier.calendar import is_date, parse_instant
from verifier.canonical import canonical_json, stable_id
from verifier.model import SEVERITY_OF, Category, Finding, Table

EXAMPLES = 5
ADAPTER_FIELDS = ("sentiment", "confidence", "direction", "reasoning")
GroupKey = tuple[str, str | None, str | None, str | None, str]
_NOT_JSON = object()

CATEGORY_ADVICE = {
    Category.MISSING_IN_D1: "not written to D1 by the dual-writer: run `kv2d1 backfill`",
    Category.EXPIRING_SOON: "backfill now: the KV key expires within 48 h and the record is then lost",
    Category.ORPHAN_IN_D1: "a D1 row whose KV key should still exist: written by a D1-only path, "
    "or the KV key was deleted early",
    Category.DUPLICATE_IN_D1: "the same job inserted twice (a retried write, or a dual-write plus "
    "a backfill without a natural-key guard): keep the first row, delete the others after review",
    Category.INVALID_KV_PAYLOAD: "a payload that matches no known shape: describe it in the profile "
    "(a JSON Schema under schema/kv/) or fix the writer",
    Category.INVALID_D1_ROW: "a D1 row that breaks the schema's rules: fix the writer's types",
    Category.SCHEDULE_GAP: "the job did not run that day, or neither store kept its result",
}
PATTERN_ADVICE = {
    "d1_null": "the dual-writer does not map this field to D1",
    "zero_as_null": "the adapter's `x || null` turned a 0 into NULL: write `x ?? null`",
    "kv_null": "D1 holds a value KV never had: D1 was written from another source",
    "json_key_order": "JSON compared as text: the same document with keys in another order",
    "string_vs_number": "a number stored as text (or the reverse): bind numbers as numbers",
    "percent_vs_fraction": "percent (0–100) written where a fraction (0–1) belongs: divide by 100",
    "case_only": "the same value in another case: normalise the case when writing",
}
ADAPTER_BUG = (
    "the plan adapter's `(analysis as any)[symbol]?.…` bug: per-symbol data lives at "
    "`trading_signals[symbol]` (shapes B, D, E) or `sentiment_signals[symbol]` (A), never at "
    "`analysis[symbol]`; fix the mapping, then correct these rows (backfill never overwrites)"
)


@dataclass(frozen=True)
class Pattern:
    """Findings that share a cause: how many, a few example keys, and a suggested fix. A
    pattern without a category is `info`: something the run counted that is not a finding."""

    category: Category | None
    table: str | None
    field: str | None
    shape: str | None
    signature: str
    count: int
    records: int
    example_keys: tuple[str, ...]
    description: str
    suggestion: str | None

    @property
    def id(self) -> str:
        category = self.category.value if self.category else "info"
        return stable_id("pattern", category, self.table, self.field, self.shape, self.signature)

    @property
    def severity(self) -> str:
        return SEVERITY_OF[self.category].value if self.category else "info"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category.value if self.category else None,
            "severity": self.severity,
            "table": self.table,
            "field": self.field,
            "shape": self.shape,
            "pattern": self.description,
            "count": self.count,
            "example_keys": list(self.example_keys),
            "suggestion": self.suggestion,
        }


# --- how two values differ -------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _offset(kv: Any, d1: Any) -> str | None:
    """`offset_+4h` for instants whole hours apart, `offset_-1d` for dates a day apart."""
    if not isinstance(kv, str) or not isinstance(d1, str):
        return None
    if is_date(kv) and is_date(d1):
        days = (dt.date.fromisoformat(d1) - dt.date.fromisoformat(kv)).days
        return f"offset_{days:+d}d" if abs(days) == 1 else None
    a, b = parse_instant(kv), parse_instant(d1)
    if a is None or b is None or a == b:
        return None
    seconds = (b - a).total_seconds()
    return (
        f"offset_{int(seconds // 3600):+d}h"
        if seconds % 3600 == 0 and abs(seconds) <= 86400
        else None
    )


def _same_json(kv: Any, d1: Any) -> bool:
    if not isinstance(kv, str) or not isinstance(d1, str) or kv == d1:
        return False
    try:
        return canonical_json(json.loads(kv)) == canonical_json(json.loads(d1))
    except ValueError:
        return False


def _numeric_pattern(kv: Any, d1: Any) -> str | None:
    a, b = _number(kv), _number(d1)
    if (a is None) != (b is None):
        text, number = (kv, b) if a is None else (d1, a)
        try:
            return "string_vs_number" if isinstance(text, str) and float(text) == number else None
        except ValueError:
            return None
    if a is None or b is None or a == b:
        return None
    if abs(a - b * 100) <= 1e-6 * max(abs(a), 1) or abs(b - a * 100) <= 1e-6 * max(abs(b), 1):
        return "percent_vs_fraction"
    return "number_differs"


def _parse_json(value: Any) -> Any:
    if not isinstance(value, str) or value[:1] not in ("{", "["):
        return _NOT_JSON
    try:
        return json.loads(value)
    except ValueError:  # not JSON, or a preview cut short
        return _NOT_JSON


def _leaf_pairs(kv: Any, d1: Any) -> Iterator[tuple[Any, Any]] | None:
    """The differing leaves of two JSON values of one structure (None when it differs)."""
    if isinstance(kv, dict) and isinstance(d1, dict):
        if kv.keys() != d1.keys():
            return None
        parts = [_leaf_pairs(kv[k], d1[k]) for k in kv]
    elif isinstance(kv, list) and isinstance(d1, list):
        if len(kv) != len(d1):
            return None
        parts = [_leaf_pairs(a, b) for a, b in zip(kv, d1, strict=True)]
    else:
        return iter([(kv, d1)] if kv != d1 else [])
    if any(p is None for p in parts):
        return None
    return (pair for p in parts if p is not None for pair in p)


def _json_pattern(kv: Any, d1: Any) -> str | None:
    """One pattern shared by every differing leaf of two JSON documents, e.g. `offset_+4h`."""
    a, b = _parse_json(kv), _parse_json(d1)
    if a is _NOT_JSON or b is _NOT_JSON:
        return None
    pairs = _leaf_pairs(a, b)
    kinds = {value_pattern(x, y) for x, y in pairs} if pairs is not None else set()
    return kinds.pop() if len(kinds) == 1 else None


def value_pattern(kv: Any, d1: Any) -> str:
    """How a KV value and a D1 value differ, as one of the module's pattern names."""
    if d1 is None:
        return "zero_as_null" if kv == 0 else "d1_null"
    if kv is None:
        return "kv_null"
    if (shift := _offset(kv, d1)) is not None:
        return shift
    if _same_json(kv, d1):
        return "json_key_order"
    if (inside := _json_pattern(kv, d1)) is not None:
        return inside
    if (numeric := _numeric_pattern(kv, d1)) is not None:
        return numeric
    if isinstance(kv, str) and isinstance(d1, str) and kv.casefold() == d1.casefold():
        return "case_only"
    return "text_differs" if isinstance(kv, str) and isinstance(d1, str) else "value_differs"


def _advice(category: Category, signature: str) -> str | None:
    if category is not Category.FIELD_MISMATCH:
        return CATEGORY_ADVICE.get(category)
    if signature.startswith("offset_"):
        hours = signature.removeprefix("offset_")
        if hours.endswith("d"):
            return "business date taken from the UTC date: use the America/New_York date"
        if abs(int(hours[:-1])) in (4, 5):
            return "time zone: New York time stored as UTC (EDT −4 h, EST −5 h) or the reverse"
        if abs(int(hours[:-1])) == 1:
            return "time zone: a daylight-saving hour (EDT vs EST) applied on one side only"
        return "a fixed whole-hour shift: a time zone applied on one side only"
    return PATTERN_ADVICE.get(signature)


# --- grouping --------------------------------------------------------------------------------


@dataclass
class _Group:
    count: int = 0
    examples: list[str] = field(default_factory=list)
    kv_keys: set[str] = field(default_factory=set)


def _signature(f: Finding) -> str:
    if f.category is Category.FIELD_MISMATCH:
        return value_pattern(f.kv_value, f.d1_value)
    return "any"


def _example(f: Finding) -> str:
    return f.kv_key if f.kv_key and f.category is not Category.FIELD_MISMATCH else f.natural_key


def group_findings(
    findings: Iterable[Finding], *, examples: int = EXAMPLES
) -> dict[GroupKey, _Group]:
    groups: dict[GroupKey, _Group] = {}
    for f in findings:
        key = (f.category.value, f.table, f.field, f.shape, _signature(f))
        group = groups.setdefault(key, _Group())
        group.count += 1
        if f.kv_key:
            group.kv_keys.add(f.kv_key)
        if len(group.examples) < examples:
            group.examples.append(_example(f))
    return groups


def find_patterns(
    findings: Iterable[Finding],
    *,
    shapes: Mapping[str, int] | None = None,
    unwritten_nulls: Mapping[str, int] | None = None,
    examples: int = EXAMPLES,
) -> list[Pattern]:
    """The patterns among findings, largest first; `shapes` (KV records per shape) lets a
    description say "every shape-A payload". `unwritten_nulls` (coverage: NULLs in columns the
    plan's adapter never writes) become one `info` pattern per column."""
    groups = group_findings(findings, examples=examples)
    patterns = _adapter_bugs(groups, shapes or {})
    patterns += [_pattern(key, g, shapes or {}) for key, g in groups.items()]
    patterns += unwritten_patterns(unwritten_nulls or {})
    return sorted(patterns, key=lambda p: (
        p.category is None, -p.count, p.category.value if p.category else "", p.table or "",
        p.field or "",
    ))  # fmt: skip


def unwritten_patterns(unwritten_nulls: Mapping[str, int]) -> list[Pattern]:
    """One `info` pattern per never-written column: shown once, never a finding (PRODUCT.md)."""
    patterns = []
    for column, rows in sorted(unwritten_nulls.items()):
        table, _, name = column.partition(".")
        description = (
            f"never written by the adapter: {rows} rows of {column} are NULL in D1 where KV "
            "has a value (the plan's adapter does not map this column; not compared)"
        )
        patterns.append(
            Pattern(None, table, name, None, "never_written", rows, rows, (), description, None)
        )
    return patterns


def _pattern(key: GroupKey, group: _Group, shapes: Mapping[str, int]) -> Pattern:
    category, table, field_name, shape, signature = key
    cat = Category(category)
    description = _describe(cat, table, field_name, shape, signature, group, shapes)
    return Pattern(
        cat,
        table,
        field_name,
        shape,
        signature,
        group.count,
        len(group.kv_keys),
        tuple(group.examples),
        description,
        _advice(cat, signature),
    )


def _scope(shape: str | None, group: _Group, shapes: Mapping[str, int]) -> str:
    if shape is None:
        return ""
    total = shapes.get(shape, 0)
    if total and len(group.kv_keys) >= total:
        return f" for every shape-{shape} payload"
    n = len(group.kv_keys)
    return f" in {n} shape-{shape} payload{'s' if n != 1 else ''}" if n else f" (shape {shape})"


def _describe(
    category: Category,
    table: str | None,
    field_name: str | None,
    shape: str | None,
    signature: str,
    group: _Group,
    shapes: Mapping[str, int],
) -> str:
    scope = _scope(shape, group, shapes)
    where = f"{table}.{field_name}" if table and field_name else (table or field_name or "")
    if category is not Category.FIELD_MISMATCH:
        return f"{category.value} {where}{scope} ({group.count})".replace("  ", " ")
    how = {
        "d1_null": "NULL in D1",
        "zero_as_null": "0 in KV, NULL in D1",
        "kv_null": "NULL in KV only",
        "json_key_order": "same JSON, keys in another order",
        "case_only": "differs only in case",
        "string_vs_number": "text on one side, a number on the other",
        "percent_vs_fraction": "percent on one side, fraction on the other",
    }.get(signature, signature.replace("_", " "))
    return f"{field_name} {how}{scope} ({group.count} {table or 'records'})"


def _adapter_bugs(groups: dict[GroupKey, _Group], shapes: Mapping[str, int]) -> list[Pattern]:
    """Merge the per-field `d1_null` groups of analysis_results into one adapter-bug pattern per
    shape when at least three of the four per-symbol fields are NULL in D1 (shape A has no
    direction, so its direction is NULL on both sides and never a finding)."""
    merged = []
    mismatch, table = Category.FIELD_MISMATCH.value, Table.ANALYSIS_RESULTS.value
    for shape in sorted({k[3] for k in groups if k[0] == mismatch and k[1] == table}, key=str):
        keys = [(mismatch, table, f, shape, "d1_null") for f in ADAPTER_FIELDS]
        present = [k for k in keys if k in groups]
        if len(present) < 3:
            continue
        parts = [groups.pop(k) for k in present]
        biggest = max(parts, key=lambda g: g.count)
        fields = ", ".join(k[2] or "" for k in present)
        scope = _scope(shape, biggest, shapes)
        description = f"{fields} all NULL in D1{scope} ({biggest.count} symbol results)"
        merged.append(
            Pattern(
                Category.FIELD_MISMATCH,
                table,
                fields,
                shape,
                "adapter_symbol_bug",
                sum(g.count for g in parts),
                len(biggest.kv_keys),
                tuple(biggest.examples),
                description,
                ADAPTER_BUG,
            )
        )
    return merged
