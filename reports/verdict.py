"""The cutover verdict from the findings and the metrics: rollback, not ready, or ready — and why.

PRODUCT.md's table; no finding category and no metric is left out:

1. `rollback` when a rollback trigger fires: a metric's (write reliability < 95 %, D1 P95 >
   200 ms measured on D1) or inconsistent data in D1 (any `field_mismatch`, `duplicate_in_d1` or
   `invalid_d1_row` finding: D1 holds wrong or broken data);
2. else `not_ready` when any other finding of severity error exists (`missing_in_d1`,
   `expiring_soon`, `invalid_kv_payload`), a target is missed, a required metric is unknown, or
   nothing was compared;
3. else `ready`. Warnings (`orphan_in_d1`, `schedule_gap`) never block.

An unknown metric never counts as a pass: it only lets `ready` through when nobody required it.
Every reason is kept, the one that decided first (`Decision.decided_by`). Exit codes: 0 ready,
3 not ready, 4 rollback.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reports.metrics import Metric, MetricName, MetricStatus
from verifier.model import Category


class Verdict(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    ROLLBACK = "rollback"

    @property
    def exit_code(self) -> int:
        return {Verdict.READY: 0, Verdict.NOT_READY: 3, Verdict.ROLLBACK: 4}[self]


class ReasonKind(enum.StrEnum):
    ROLLBACK_TRIGGER = "rollback_trigger"
    INCONSISTENT_DATA = "inconsistent_data"
    ERROR_FINDINGS = "error_findings"
    NOTHING_COMPARED = "nothing_compared"
    TARGET_MISSED = "target_missed"
    REQUIRED_UNKNOWN = "required_unknown"


INCONSISTENT = (Category.FIELD_MISMATCH, Category.DUPLICATE_IN_D1, Category.INVALID_D1_ROW)
BLOCKING = (Category.MISSING_IN_D1, Category.EXPIRING_SOON, Category.INVALID_KV_PAYLOAD)


@dataclass(frozen=True)
class Reason:
    """One rule that holds the verdict back: a metric's, a count of findings, or nothing compared."""

    kind: ReasonKind
    metric: Metric | None = None
    text: str = ""

    def __str__(self) -> str:
        m = self.metric
        if m is None:
            return self.text
        if self.kind is ReasonKind.ROLLBACK_TRIGGER:
            return (
                f"{m.label}: rollback trigger fired — {m.rollback_threshold} — {m.evidence.summary}"
            )
        if self.kind is ReasonKind.TARGET_MISSED:
            return f"{m.label}: target {m.target} missed: {m.evidence.summary}"
        return f"{m.label} is required but unknown: {m.evidence.summary}"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: tuple[Reason, ...]

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def decided_by(self) -> str:
        """The rule that decided: the first reason's kind, or `all_clear` for `ready`."""
        return self.reasons[0].kind.value if self.reasons else "all_clear"

    def to_json(self) -> dict[str, Any]:
        return {"decided_by": self.decided_by, "reasons": [str(r) for r in self.reasons]}


def decide(
    metrics: Iterable[Metric],
    *,
    by_category: Mapping[str, int] | None = None,
    nothing_compared: str | None = None,
) -> Decision:
    """The verdict, with every reason behind it (rollback first, then what holds it back).

    `by_category` counts the run's findings; `nothing_compared` says why no record was compared
    (None: at least one was).
    """
    metrics = list(metrics)
    counts = by_category or {}
    rollback = [Reason(ReasonKind.ROLLBACK_TRIGGER, m) for m in metrics if m.evidence.rollback]
    if broken := _counted(counts, INCONSISTENT):
        rollback.append(Reason(ReasonKind.INCONSISTENT_DATA, text=(
            f"D1 holds wrong or broken data ({broken}): rollback trigger fired — "
            "data inconsistency detected"
        )))  # fmt: skip
    triggered = {r.metric.name for r in rollback if r.metric is not None}
    blocked = []
    if nothing_compared is not None:
        blocked.append(Reason(ReasonKind.NOTHING_COMPARED, text=f"nothing was compared: {nothing_compared}"))
    if errors := _counted(counts, BLOCKING):
        blocked.append(Reason(ReasonKind.ERROR_FINDINGS, text=f"findings of severity error: {errors}"))
    blocked += [
        Reason(ReasonKind.TARGET_MISSED, m)
        for m in metrics
        if m.status is MetricStatus.FAIL and m.name not in triggered
    ]
    blocked += [
        Reason(ReasonKind.REQUIRED_UNKNOWN, m)
        for m in metrics
        if m.required and m.status is MetricStatus.UNKNOWN
    ]
    if rollback:
        return Decision(Verdict.ROLLBACK, tuple(rollback + blocked))
    if blocked:
        return Decision(Verdict.NOT_READY, tuple(blocked))
    return Decision(Verdict.READY, ())


def _counted(counts: Mapping[str, int], categories: Iterable[Category]) -> str:
    """`field_mismatch 3, invalid_d1_row 1` for the categories that have findings ('' if none)."""
    return ", ".join(f"{c.value} {counts[c.value]}" for c in categories if counts.get(c.value))


def decide_document(doc: Mapping[str, Any]) -> Decision | None:
    """The decision behind a report document (None for documents without metrics)."""
    if "metrics" not in doc:
        return None
    known = {name.value for name in MetricName}
    summary = doc.get("summary") or {}
    consistency = doc.get("consistency") or {}
    return decide(
        (Metric.from_json(m) for m in doc["metrics"] if m.get("name") in known),
        by_category=summary.get("by_category") or {},
        nothing_compared=consistency.get("nothing_compared"),
    )
