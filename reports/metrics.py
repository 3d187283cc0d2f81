"""The plan's success metrics, each measured and held against its target and rollback threshold.

- data completeness: 100 %; rollback on an inconsistency (`field_mismatch`, `duplicate_in_d1`);
  from the verify run's coverage and findings.
- 7-day coverage: every scheduled job of the last 7 days in D1; per job type × day (NYSE calendar).
- query performance: P95 < 50 ms; rollback when P95 > 200 ms; from a probe run.
- write reliability: >= 99.9 %; rollback below 95 %; D1 executions without backfill provenance.
- KV read reduction: >= 30 %; Cloudflare's GraphQL analytics (remote only).
- dashboard load: < 2 s; timed GETs of the history endpoint.

A metric that cannot be measured is `unknown` with the reason; unknown is never a pass. The
evidence of a failing metric names the records behind it (KV keys, natural keys), the first N.
Measuring (D1 reads, HTTP) happens in `reports.report_run`; this module only judges. The
coverage grid behind the 7-day metric and the heatmap is `reports.coverage_grid` (re-exported).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reports.coverage_grid import GRID_DAYS as GRID_DAYS  # re-exported, as the rest below
from reports.coverage_grid import CellState as CellState
from reports.coverage_grid import CoverageGrid as CoverageGrid
from reports.coverage_grid import build_grid as build_grid
from reports.coverage_grid import grid_span as grid_span
from reports.coverage_grid import job_group as job_group
from reports.probe import ROLLBACK_MS, TARGET_MS, ProbeResult
from verifier.calendar import is_date
from verifier.d1 import run_of
from verifier.model import Category, Finding, Table

EVIDENCE_LIMIT = 10
WRITE_TARGET, WRITE_ROLLBACK = 99.9, 95.0
KV_REDUCTION_TARGET = 30.0
DASHBOARD_TARGET_S = 2.0
MISSING = frozenset({Category.MISSING_IN_D1, Category.EXPIRING_SOON})
INCONSISTENT = frozenset({Category.FIELD_MISMATCH, Category.DUPLICATE_IN_D1})


class MetricName(enum.StrEnum):
    DATA_COMPLETENESS = "data_completeness"
    SEVEN_DAY_COVERAGE = "seven_day_coverage"
    QUERY_P95 = "query_p95"
    WRITE_RELIABILITY = "write_reliability"
    KV_READ_REDUCTION = "kv_read_reduction"
    DASHBOARD_LOAD = "dashboard_load"


ALWAYS_REQUIRED = frozenset({MetricName.DATA_COMPLETENESS, MetricName.SEVEN_DAY_COVERAGE})


class MetricStatus(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Evidence:
    """Why a metric has its status: a sentence, the first records behind it, details."""

    summary: str
    records: tuple[str, ...] = ()
    total_records: int = 0
    rollback: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "records": list(self.records),
            "more_records": max(self.total_records - len(self.records), 0),
            "rollback_triggered": self.rollback,
            **self.detail,
        }


@dataclass(frozen=True)
class Metric:
    name: MetricName
    value: float | None
    unit: str | None
    target: str
    rollback_threshold: str | None
    status: MetricStatus
    evidence: Evidence
    required: bool = False

    @property
    def label(self) -> str:
        return SPECS[self.name].label

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name.value,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "rollback_threshold": self.rollback_threshold,
            "status": self.status.value,
            "evidence": self.evidence.to_json(),
            "required": self.required,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metric:
        """A metric back from a report document (renderers and history read documents)."""
        raw = data.get("evidence")
        ev = raw if isinstance(raw, dict) else {"summary": str(raw or "")}
        records = tuple(str(r) for r in ev.get("records", ()))
        evidence = Evidence(
            str(ev.get("summary", "")),
            records,
            len(records) + int(ev.get("more_records", 0)),
            bool(ev.get("rollback_triggered", False)),
        )
        value = data.get("value")
        return cls(
            MetricName(data["name"]),
            float(value) if isinstance(value, int | float) else None,
            data.get("unit"),
            str(data.get("target", "")),
            data.get("rollback_threshold"),
            MetricStatus(data["status"]),
            evidence,
            bool(data.get("required", False)),
        )


@dataclass(frozen=True)
class MetricSpec:
    label: str
    target: str
    rollback_threshold: str | None
    unit: str


SPECS: dict[MetricName, MetricSpec] = {
    MetricName.DATA_COMPLETENESS: MetricSpec(
        "data completeness", "100 %", "inconsistency (field_mismatch or duplicate_in_d1)", "%"
    ),
    MetricName.SEVEN_DAY_COVERAGE: MetricSpec(
        "7-day coverage", "every scheduled job of the last 7 days in D1", None, "%"
    ),
    MetricName.QUERY_P95: MetricSpec(
        "query performance", f"P95 < {TARGET_MS:g} ms", f"P95 > {ROLLBACK_MS:g} ms", "ms"
    ),
    MetricName.WRITE_RELIABILITY: MetricSpec(
        "write reliability", f">= {WRITE_TARGET:g} %", f"< {WRITE_ROLLBACK:g} %", "%"
    ),
    MetricName.KV_READ_REDUCTION: MetricSpec(
        "KV read reduction", f">= {KV_REDUCTION_TARGET:g} %", None, "%"
    ),
    MetricName.DASHBOARD_LOAD: MetricSpec(
        "dashboard load", f"< {DASHBOARD_TARGET_S:g} s", None, "s"
    ),
}


def make(name: MetricName, value: float | None, status: MetricStatus, evidence: Evidence) -> Metric:
    """A metric with its spec's target, rollback threshold and unit."""
    spec = SPECS[name]
    return Metric(name, value, spec.unit, spec.target, spec.rollback_threshold, status, evidence)


def unknown(name: MetricName, reason: str) -> Metric:
    """A metric that could not be measured, with the reason (never a pass)."""
    return make(name, None, MetricStatus.UNKNOWN, Evidence(reason))


def _pass_if(ok: bool) -> MetricStatus:
    return MetricStatus.PASS if ok else MetricStatus.FAIL


def percent(part: int, whole: int) -> float:
    """`part / whole` in percent to 3 decimals, never rounded up to 100 when short of it."""
    value = round(100.0 * part / whole, 3)
    return min(value, 99.999) if part < whole else value


def first(names: Iterable[str], limit: int) -> tuple[tuple[str, ...], int]:
    """The first `limit` names and how many there are in all."""
    kept: list[str] = []
    total = 0
    for name in names:
        total += 1
        if len(kept) < limit:
            kept.append(name)
    return tuple(kept), total


def name_finding(f: Finding) -> str:
    """A finding as a record name: category, natural key (and field), KV key or D1 ids."""
    where = f.natural_key + (f".{f.field}" if f.field else "")
    if f.category is Category.DUPLICATE_IN_D1:
        where += f" (D1 ids {f.d1_value})"
    elif f.kv_key:
        where += f" (KV {f.kv_key})"
    return f"{f.category.value}: {where}"


def _job_key(f: Finding) -> str:
    return "/".join(f.natural_key.split("/")[:3])


# --- data completeness -----------------------------------------------------------------------


def data_completeness(
    findings: Sequence[Finding], records_matched: int, *, limit: int = EVIDENCE_LIMIT
) -> Metric:
    """Complete KV jobs (the execution, every symbol result and the report in D1) ÷ KV jobs.

    A KV job is one the diff compared (`records_matched`), one it found missing, or a KV key
    in the window whose payload could not be read. Any inconsistency fires the rollback trigger.
    """
    missing = [f for f in findings if f.category in MISSING]
    unreadable = [f for f in findings if f.category is Category.INVALID_KV_PAYLOAD]
    inconsistent = [f for f in findings if f.category in INCONSISTENT]
    missing_jobs = sum(1 for f in missing if f.table == Table.JOB_EXECUTIONS)
    partial = {_job_key(f) for f in missing if f.table != Table.JOB_EXECUTIONS}
    total = records_matched + missing_jobs + len(unreadable)
    if total == 0:
        return unknown(MetricName.DATA_COMPLETENESS, "no KV job in the window: nothing to compare")
    complete = records_matched - len(partial)
    summary = f"{complete} of {total} KV jobs are in D1 with all their symbol results and reports"
    if inconsistent:
        counts = ", ".join(
            f"{c.value} {sum(f.category is c for f in inconsistent)}"
            for c in sorted(INCONSISTENT)
            if any(f.category is c for f in inconsistent)
        )
        summary += f"; inconsistencies ({counts}) fire the rollback trigger"
    records, n = first((name_finding(f) for f in (*inconsistent, *missing, *unreadable)), limit)
    detail = {"jobs": total, "complete": complete, "inconsistencies": len(inconsistent)}
    evidence = Evidence(summary, records, n, bool(inconsistent), detail)
    status = _pass_if(complete == total and not inconsistent)
    return make(MetricName.DATA_COMPLETENESS, percent(complete, total), status, evidence)


# --- 7-day coverage --------------------------------------------------------------------------


def seven_day_coverage(
    grid: CoverageGrid | None, findings: Sequence[Finding], *, limit: int = EVIDENCE_LIMIT
) -> Metric:
    """Scheduled (day, job type) cells of the last 7 days that have the job in D1."""
    name = MetricName.SEVEN_DAY_COVERAGE
    if grid is None:
        return unknown(
            name, "the window ends after yesterday (ET) begins: no complete day to check"
        )
    expected = [
        (d, t)
        for d in grid.metric_days
        for t in grid.job_types
        if grid.cells[(d, t)] in (CellState.OK, CellState.DEFECT, CellState.MISSING)
    ]
    if not expected:
        return unknown(
            name, f"no job is scheduled on {grid.metric_days[0]} … {grid.metric_days[-1]}"
        )
    absent = [c for c in expected if grid.cells[c] is CellState.MISSING]
    kv_keys = {
        g: f.kv_key
        for f in findings
        if f.category in MISSING and f.table == Table.JOB_EXECUTIONS and (g := job_group(f))
    }
    names = (
        f"{t} {d}"
        + (
            f" (KV {kv_keys[(d, t)]} not in D1)"
            if kv_keys.get((d, t))
            else " (in neither KV nor D1)"
        )
        for d, t in absent
    )
    records, n = first(names, limit)
    present = len(expected) - len(absent)
    summary = (
        f"{present} of {len(expected)} scheduled jobs of {grid.metric_days[0]} … "
        f"{grid.metric_days[-1]} are in D1"
    )
    evidence = Evidence(summary, records, n, detail={"grid": grid.to_json()})
    return make(name, percent(present, len(expected)), _pass_if(not absent), evidence)


# --- query performance -----------------------------------------------------------------------


def query_performance(
    result: ProbeResult | None,
    *,
    reason: str = "",
    on_d1: bool = True,
    limit: int = EVIDENCE_LIMIT,
) -> Metric:
    """The probe's overall P95 against the plan's 50 ms target and 200 ms rollback trigger.

    Only a probe of D1 itself measures the plan's metric (`on_d1`: the REST API, or a timer that
    reports D1's own durations): the P95 of a local SQLite file stands in for nothing in D1, so
    it is `unknown`, with the figure kept in the evidence."""
    if result is None:
        return unknown(MetricName.QUERY_P95, reason or "no probe run")
    p95 = result.p95_ms
    if not on_d1 and result.d1 is None:
        summary = (
            f"not measured on D1: P95 {p95:.1f} ms of a local SQLite file says nothing about "
            "D1's; run the report with --remote to measure it"
        )
        evidence = Evidence(summary, detail={"probe": result.to_json(), "measured_on": "local"})
        return make(MetricName.QUERY_P95, None, MetricStatus.UNKNOWN, evidence)
    basis = "D1's own duration" if result.basis == "d1_duration" else "measured time"
    summary = (
        f"P95 {p95:.1f} ms ({basis}) over {result.repeat} rounds of "
        f"{len(result.queries)} plan queries"
    )
    if result.d1 is not None:
        summary += f"; REST round trip P95 {result.round_trip.p95:.1f} ms"
    failing = p95 >= TARGET_MS
    slow = result.slowest(limit) if failing else []
    records = tuple(f"{q.query.name}: P95 {(q.d1 or q.round_trip).p95:.1f} ms" for q in slow)
    evidence = Evidence(
        summary, records, len(records), p95 > ROLLBACK_MS, {"probe": result.to_json()}
    )
    return make(MetricName.QUERY_P95, round(p95, 3), _pass_if(not failing), evidence)


# --- write reliability -----------------------------------------------------------------------


@dataclass(frozen=True)
class WriteTally:
    """KV records (jobs, symbol results, reports) of the dual-write window: reached D1 by
    dual-write, backfilled, or still missing."""

    since: str
    dual_written: int
    backfilled: tuple[str, ...]
    missing: tuple[str, ...]
    by_table: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.dual_written + len(self.backfilled) + len(self.missing)


def backfill_provenance(metadata: Any) -> str | None:
    """The KV key a backfilled row came from (`{"kv2d1": {"tool": "kv2d1", "kv_key": …}}`)."""
    if not isinstance(metadata, str) or '"kv2d1"' not in metadata:
        return None
    try:
        data = json.loads(metadata)
    except ValueError:
        return None
    mark = data.get("kv2d1") if isinstance(data, dict) else None
    if not isinstance(mark, dict) or mark.get("tool") != "kv2d1":
        return None
    return str(mark.get("kv_key") or "?")


# A backfilled child's `created_at` ends in its run's stamp: `.000` and nine digits
# (`backfill.plan.Provenance.stamp`); D1's own `datetime('now')` has no fraction.
_RUN_STAMP = re.compile(r"\.000[0-9]{9}$")

# table, execution id, date, job type, execution time, execution metadata, child key, created_at
WriteRow = tuple[Any, Any, Any, Any, Any, Any, Any, Any]


def _origin(table: str, metadata: Any, child: Any, created_at: Any) -> str | None:
    """None for a dual-written row, else the name of what the backfill made it from."""
    kv_key = backfill_provenance(metadata)
    if table == Table.JOB_EXECUTIONS.value:
        return kv_key
    if kv_key is None and not (isinstance(created_at, str) and _RUN_STAMP.search(created_at)):
        return None
    return f"{kv_key or table}/{child}"


def _missing_records(f: Finding) -> Iterator[tuple[str, str]]:
    """The KV records a missing finding stands for: a missing job is its execution and every
    symbol result and report it carries."""
    if f.table != Table.JOB_EXECUTIONS:
        yield str(f.table), f.natural_key
        return
    yield Table.JOB_EXECUTIONS.value, f.kv_key or f.natural_key
    if f.record is not None:
        base = f.kv_key or f.natural_key
        for s in f.record.symbols:
            yield Table.ANALYSIS_RESULTS.value, f"{base}/{s.symbol}"
        if f.record.report is not None:
            yield Table.REPORT_SNAPSHOTS.value, f"{base}/{f.record.report.report_type}"


def tally_writes(
    rows: Iterable[WriteRow], findings: Sequence[Finding], *, since: str | None = None
) -> WriteTally | None:
    """Count the window's KV records by how they reached D1; None when none was dual-written.

    A record is a D1 row of any of the three tables (an execution, a symbol result, a report
    snapshot; one row per natural key, duplicates once) or a `missing_in_d1` / `expiring_soon`
    finding. A row is backfilled when its execution's metadata or its own `created_at` carries
    kv2d1's provenance. The dual-write window starts at `since`, else at the first date of a
    dual-written execution. Orphans (no KV record) and their children are left out.
    """
    orphans = {
        f.row_id
        for f in findings
        if f.category is Category.ORPHAN_IN_D1 and f.table == Table.JOB_EXECUTIONS
    }
    by_key: dict[tuple[str, ...], tuple[str, str | None]] = {}  # natural key -> (table, origin)
    for table, exec_id, date, job_type, when, metadata, child, created_at in rows:
        if exec_id in orphans:
            continue
        key: tuple[str, ...] = (
            str(table), str(date), str(job_type), run_of(when) or f"?{when}", str(child)
        )
        origin = _origin(str(table), metadata, child, created_at)
        if origin is None or key not in by_key:
            by_key[key] = (str(table), origin)  # one dual-written row makes the record dual
    start = since or min(
        (k[1] for k, (t, o) in by_key.items() if o is None and t == Table.JOB_EXECUTIONS.value),
        default=None,
    )
    if start is None:
        return None
    counts: dict[str, Counter[str]] = {t.value: Counter() for t in Table}
    dual, backfilled = 0, []
    for record, (table, origin) in by_key.items():
        if record[1] < start:
            continue
        if origin is None:
            dual += 1
            counts[table]["dual_written"] += 1
        else:
            backfilled.append(origin)
            counts[table]["backfilled"] += 1
    missing = []
    for f in findings:
        if f.category in MISSING and f.table is not None and (g := job_group(f)) and g[0] >= start:
            for table, name in _missing_records(f):
                missing.append(name)
                counts[table]["missing"] += 1
    by_table = {t: dict(c) for t, c in counts.items()}
    return WriteTally(start, dual, tuple(sorted(backfilled)), tuple(missing), by_table)


def write_reliability(tally: WriteTally | None, *, limit: int = EVIDENCE_LIMIT) -> Metric:
    """KV records that reached D1 by dual-write ÷ all KV records of the dual-write window (the
    backfilled ones missed it, and are named in the evidence)."""
    name = MetricName.WRITE_RELIABILITY
    if tally is None:
        return unknown(
            name,
            "no execution in D1 without backfill provenance: dual-write has not "
            "started in this window (give --dual-write-since DATE to measure from a date)",
        )
    if tally.total == 0:
        return unknown(
            name, f"no KV record since {tally.since}, the start of the dual-write window"
        )
    value = percent(tally.dual_written, tally.total)
    names = (
        *(f"{k} (backfilled)" for k in tally.backfilled),
        *(f"{k} (not in D1)" for k in tally.missing),
    )
    records, n = first(names, limit)
    summary = (
        f"{tally.dual_written} of {tally.total} KV records (jobs, symbol results, reports) since "
        f"{tally.since} reached D1 by dual-write; {len(tally.backfilled)} backfilled, "
        f"{len(tally.missing)} still missing"
    )
    detail = {
        "dual_write_since": tally.since,
        "dual_written": tally.dual_written,
        "backfilled": len(tally.backfilled),
        "missing": len(tally.missing),
        "by_table": tally.by_table,
    }
    evidence = Evidence(summary, records, n, value < WRITE_ROLLBACK, detail)
    return make(name, value, _pass_if(value >= WRITE_TARGET), evidence)


# --- KV read reduction (Cloudflare GraphQL analytics) ----------------------------------------


@dataclass(frozen=True)
class DateRange:
    """`SINCE..UNTIL`, both inclusive business dates."""

    since: str
    until: str

    @classmethod
    def parse(cls, text: str) -> DateRange:
        since, sep, until = text.partition("..")
        if not sep or not is_date(since) or not is_date(until) or since > until:
            raise ValueError(f"{text!r} is not a date range; use YYYY-MM-DD..YYYY-MM-DD")
        return cls(since, until)

    @property
    def days(self) -> int:
        return (dt.date.fromisoformat(self.until) - dt.date.fromisoformat(self.since)).days + 1

    def __str__(self) -> str:
        return f"{self.since}..{self.until}"


@dataclass(frozen=True)
class KvReads:
    range: DateRange
    reads: int

    @property
    def per_day(self) -> float:
        return self.reads / self.range.days


def kv_read_reduction(
    baseline: KvReads | None, current: KvReads | None, *, reason: str = ""
) -> Metric:
    """Drop in KV reads per day from the baseline window to the current one."""
    name = MetricName.KV_READ_REDUCTION
    if baseline is None or current is None:
        return unknown(name, reason or "no KV analytics")
    if baseline.reads == 0:
        return unknown(
            name, f"no KV reads in the baseline window {baseline.range}: nothing to reduce"
        )
    value = round(100.0 * (1 - current.per_day / baseline.per_day), 3)
    windows = tuple(
        f"{label} {r.range}: {r.reads} reads ({r.per_day:.1f}/day)"
        for label, r in (("baseline", baseline), ("current", current))
    )
    summary = f"KV reads per day {value:+.1f} % lower in {current.range} than in {baseline.range}"
    status = _pass_if(value >= KV_REDUCTION_TARGET)
    evidence = Evidence(
        summary,
        windows if status is MetricStatus.FAIL else (),
        2,
        detail={
            "baseline": {"range": str(baseline.range), "reads": baseline.reads},
            "current": {"range": str(current.range), "reads": current.reads},
        },
    )
    return make(name, value, status, evidence)


# --- dashboard load --------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardTiming:
    url: str
    seconds: tuple[float, ...]
    statuses: tuple[int, ...]
    error: str | None = None


def dashboard_load(timing: DashboardTiming | None) -> Metric:
    """Median time to GET the history endpoint; any error or non-2xx answer fails it."""
    name = MetricName.DASHBOARD_LOAD
    if timing is None:
        return unknown(name, "not measured: give --dashboard-url URL (the history endpoint)")
    bad = [s for s in timing.statuses if not 200 <= s < 300]
    if timing.error or bad or not timing.seconds:
        why = timing.error or (f"HTTP {bad[0]}" if bad else "no answer")
        evidence = Evidence(
            f"GET {timing.url} failed: {why}",
            (timing.url,),
            1,
            detail={"seconds": list(timing.seconds), "statuses": list(timing.statuses)},
        )
        value = max(timing.seconds) if timing.seconds else None
        return make(name, value, MetricStatus.FAIL, evidence)
    value = round(statistics.median(timing.seconds), 3)
    summary = (
        f"GET {timing.url}: median {value:.3f} s of {len(timing.seconds)} "
        f"({', '.join(f'{s:.3f}' for s in timing.seconds)} s)"
    )
    ok = value < DASHBOARD_TARGET_S
    evidence = Evidence(
        summary,
        () if ok else (timing.url,),
        0 if ok else 1,
        detail={
            "seconds": [round(s, 4) for s in timing.seconds],
            "statuses": list(timing.statuses),
        },
    )
    return make(name, value, _pass_if(ok), evidence)
