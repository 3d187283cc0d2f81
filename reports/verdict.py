"""The cutover verdict from the metrics: rollback, not ready, or ready — and why.

1. `rollback` when any rollback trigger fired: write reliability < 95 %, query P95 > 200 ms, or
   an inconsistency (a `field_mismatch` or `duplicate_in_d1` finding);
2. else `not_ready` when a target is missed, or a required metric is unknown;
3. else `ready`.

An unknown metric never counts as a pass: it only lets `ready` through when nobody required it.
Exit codes (PRODUCT.md): 0 ready, 3 not ready, 4 rollback.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reports.metrics import Metric, MetricName, MetricStatus


class Verdict(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    ROLLBACK = "rollback"

    @property
    def exit_code(self) -> int:
        return {Verdict.READY: 0, Verdict.NOT_READY: 3, Verdict.ROLLBACK: 4}[self]


class ReasonKind(enum.StrEnum):
    ROLLBACK_TRIGGER = "rollback_trigger"
    TARGET_MISSED = "target_missed"
    REQUIRED_UNKNOWN = "required_unknown"


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    metric: Metric

    def __str__(self) -> str:
        m = self.metric
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


def decide(metrics: Iterable[Metric]) -> Decision:
    """The verdict, with every reason behind it (rollback triggers first)."""
    metrics = list(metrics)
    rollback = [Reason(ReasonKind.ROLLBACK_TRIGGER, m) for m in metrics if m.evidence.rollback]
    triggered = {r.metric.name for r in rollback}
    missed = [
        Reason(ReasonKind.TARGET_MISSED, m)
        for m in metrics
        if m.status is MetricStatus.FAIL and m.name not in triggered
    ]
    unknown = [
        Reason(ReasonKind.REQUIRED_UNKNOWN, m)
        for m in metrics
        if m.required and m.status is MetricStatus.UNKNOWN
    ]
    if rollback:
        return Decision(Verdict.ROLLBACK, tuple(rollback + missed + unknown))
    if missed or unknown:
        return Decision(Verdict.NOT_READY, tuple(missed + unknown))
    return Decision(Verdict.READY, ())


def decide_document(doc: Mapping[str, Any]) -> Decision | None:
    """The decision behind a report document's metrics (None for documents without metrics)."""
    if "metrics" not in doc:
        return None
    known = {name.value for name in MetricName}
    return decide(Metric.from_json(m) for m in doc["metrics"] if m.get("name") in known)
