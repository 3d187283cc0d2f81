"""Backfill plans: the rows D1 lacks, as guarded inserts, built from the diff's findings.

A `JobPlan` holds one KV record's missing rows:

- a whole job (the diff's `job_executions` finding): the execution, its symbol results and its
  report snapshot;
- symbol results of an execution D1 already has (`analysis_results` findings);
- the report snapshot of an execution D1 already has (`report_snapshots` findings).

`backfill.packing` writes the rows of many jobs as multi-row inserts, several jobs to a batch.
Every row is inserted only when its natural key is absent (`INSERT … SELECT … WHERE NOT
EXISTS (…)`), so a rerun, a resumed run or a concurrent dual-write cannot duplicate a row; a
child finds its execution by the execution's natural key in a sub-select, never by a remembered
row id. Natural keys:

| row | natural key |
|---|---|
| per-run execution | `(job_type, execution_date, substr(execution_time, 1, 19))` |
| "latest" execution (daily KV key) | `(job_type, execution_date)`: any run of that date counts |
| symbol result | `(execution, symbol)` |
| report snapshot | `(execution, report_type)` |

The execution of a latest record's children is the latest of its date (`execution_time DESC,
id ASC`, the row verify compares); of a per-run record's, the first with its key (`id ASC`).
A record's repeated symbol is planned once, from its first result. `field_mismatch`,
`duplicate_in_d1` and orphans are reported, never fixed here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import pickle
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier import TOOL_NAME, __version__
from verifier.canonical import canonical_json
from verifier.d1 import execution_time_for, job_row, report_row, symbol_row
from verifier.model import LATEST, Category, Finding, JobKey, JobRecord, KvRecord, Table

BACKFILLED = frozenset({Category.MISSING_IN_D1, Category.EXPIRING_SOON})
_RUN_TIME = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # how `backfill.ledger.new_run_id` starts
RUN_TIME_CHARS = 19  # `YYYY-MM-DDTHH:MM:SS`: a per-run execution is identified to the second
CHILD_KEY_COLUMN = {Table.ANALYSIS_RESULTS: "symbol", Table.REPORT_SNAPSHOTS: "report_type"}


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with positional `?` parameters (plain `?` only: D1 binds text)."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who inserted a row: written into each backfilled execution's `metadata`."""

    run_id: str
    tool: str = TOOL_NAME
    version: str = __version__

    def metadata_for(self, record: KvRecord) -> str:
        """Canonical JSON naming this run and the KV value the execution came from."""
        return canonical_json(
            {
                "kv2d1": {
                    "tool": self.tool,
                    "version": self.version,
                    "run_id": self.run_id,
                    "kv_key": record.kv_key,
                    "kv_sha256": record.value_sha256,
                }
            }
        )

    @property
    def marker(self) -> str:
        """A substring every execution of this run has in its canonical `metadata`."""
        return canonical_json({"run_id": self.run_id})[1:-1]

    @property
    def stamp(self) -> str:
        """What this run's child rows (which have no `metadata`) carry at the end of their
        `created_at`: `.000` and nine digits of the run id's hash. No other writer's row has the
        digits (the dual-writing worker leaves `created_at` to its default). It is how the run's
        children are told from the worker's after a kill or a lost answer (`backfill.lookup`)."""
        digest = hashlib.sha256(self.run_id.encode("utf-8")).hexdigest()
        return f".000{int(digest[:12], 16) % 10**9:09d}"

    @property
    def created_at(self) -> str:
        """The `created_at` of this run's child rows: the run's start (the time its id carries,
        in the form of SQLite's `datetime('now')`) then `stamp`, so
        `2026-11-29 09:07:51.000482610473`. SQLite reads three digits of a fraction, so the
        value sorts and compares as the run's start to the second. It comes from the run's
        clock, not from D1's: a resumed run writes the same value, and no part reads the time."""
        match = _RUN_TIME.match(self.run_id)
        if match is None:
            raise ValueError(f"run id {self.run_id!r} does not start with its UTC time")
        started = dt.datetime.strptime(match.group(0), "%Y%m%dT%H%M%SZ")
        return f"{started:%Y-%m-%d %H:%M:%S}{self.stamp}"


@dataclass(frozen=True, slots=True)
class ExecutionKey:
    """The natural key of an execution; `run_time` is None for a "latest" (daily-key) record."""

    job_type: str
    execution_date: str
    run_time: str | None

    @classmethod
    def of(cls, job: JobRecord) -> ExecutionKey:
        run_time = None if job.key.run == LATEST else execution_time_for(job)[:RUN_TIME_CHARS]
        return cls(job.key.job_type, job.key.execution_date, run_time)

    def to_json(self) -> dict[str, Any]:
        return {"job_type": self.job_type, "execution_date": self.execution_date,
                "run_time": self.run_time}


@dataclass(frozen=True, slots=True)
class RowInsert:
    """One row to insert: an execution (`child_key` None) or a child of `parent`."""

    table: Table
    natural_key: str
    parent: ExecutionKey
    columns: tuple[str, ...]
    values: tuple[Any, ...]
    child_key: str | None = None
    stamp: str | None = None  # a child's `created_at` (`Provenance.created_at`)

    def to_json(self) -> dict[str, Any]:
        values = dict(zip(self.columns, self.values, strict=True))
        return {"table": self.table.value, "natural_key": self.natural_key, **values}


@dataclass(frozen=True, slots=True)
class JobPlan:
    """One KV record's missing rows, the execution first; applied in a batch of jobs (one
    transaction) by `backfill.apply`."""

    seq: int
    kv_key: str
    job_key: JobKey
    rows: tuple[RowInsert, ...]
    urgent: bool = False
    expiration: int | None = None

    @property
    def job_type(self) -> str:
        return self.job_key.job_type

    @property
    def new_execution(self) -> bool:
        """Whether the plan inserts the execution itself (else its children join one D1 has)."""
        return bool(self.rows) and self.rows[0].child_key is None

    def order(self) -> tuple[int, float, int]:
        """Urgent jobs first, soonest expiry first; then the diff's natural-key order."""
        expires = float(self.expiration) if self.expiration is not None else math.inf
        return (0 if self.urgent else 1, expires if self.urgent else 0.0, self.seq)


# --- findings → plans ------------------------------------------------------------------------


def execution_row(record: KvRecord, provenance: Provenance) -> RowInsert:
    values = job_row(record.job, metadata=provenance.metadata_for(record))
    return RowInsert(
        Table.JOB_EXECUTIONS, str(record.job.key), ExecutionKey.of(record.job),
        tuple(values), tuple(values.values()),
    )


def symbol_rows(
    record: KvRecord, symbols: Iterable[str] | None = None, *, stamp: str | None = None
) -> list[RowInsert]:
    """Rows for the record's symbol results (all, or those named), first of repeated symbols."""
    wanted = None if symbols is None else set(symbols)
    rows: dict[str, RowInsert] = {}
    for result in record.symbols:
        if result.symbol in rows or (wanted is not None and result.symbol not in wanted):
            continue
        values = symbol_row(result)
        rows[result.symbol] = RowInsert(
            Table.ANALYSIS_RESULTS, f"{record.job.key}/{result.symbol}",
            ExecutionKey.of(record.job), tuple(values), tuple(values.values()),
            child_key=result.symbol, stamp=stamp,
        )
    return list(rows.values())


def report_rows(record: KvRecord, *, stamp: str | None = None) -> list[RowInsert]:
    if record.report is None:
        return []
    values = report_row(record.report)
    return [
        RowInsert(
            Table.REPORT_SNAPSHOTS, f"{record.job.key}/report:{record.report.report_type}",
            ExecutionKey.of(record.job), tuple(values), tuple(values.values()),
            child_key=record.report.report_type, stamp=stamp,
        )
    ]


def _symbol_of(finding: Finding, record: KvRecord) -> str:
    """The symbol of a symbol-level finding: its natural key is `{job key}/{symbol}`."""
    return finding.natural_key[len(str(record.job.key)) + 1 :]


def job_plan(
    seq: int, record: KvRecord, findings: list[Finding], provenance: Provenance
) -> JobPlan:
    """The rows one record's missing findings call for."""
    tables = {f.table for f in findings}
    stamp = provenance.created_at
    if Table.JOB_EXECUTIONS in tables:
        rows = [
            execution_row(record, provenance),
            *symbol_rows(record, stamp=stamp),
            *report_rows(record, stamp=stamp),
        ]
    else:
        named = [_symbol_of(f, record) for f in findings if f.table == Table.ANALYSIS_RESULTS]
        rows = symbol_rows(record, named, stamp=stamp) if named else []
        rows += report_rows(record, stamp=stamp) if Table.REPORT_SNAPSHOTS in tables else []
    urgent = any(f.category == Category.EXPIRING_SOON for f in findings)
    return JobPlan(seq, record.kv_key, record.job.key, tuple(rows), urgent, record.expiration)


def build_plans(findings: Iterable[Finding], *, provenance: Provenance) -> Iterator[JobPlan]:
    """Job plans from a stream of findings, in the stream's order.

    The diff yields one (date, job type) group at a time, so findings are buffered per group
    only: memory stays bounded by the largest group, not by the namespace.
    """
    group: tuple[str, str] | None = None
    pending: dict[str, tuple[KvRecord, list[Finding]]] = {}
    seq = 0
    for f in findings:
        if f.category not in BACKFILLED or f.record is None:
            continue
        key = f.record.job.key
        if (key.execution_date, key.job_type) != group:
            for record, found in pending.values():
                seq += 1
                yield job_plan(seq, record, found, provenance)
            group, pending = (key.execution_date, key.job_type), {}
        pending.setdefault(f.record.kv_key, (f.record, []))[1].append(f)
    for record, found in pending.values():
        seq += 1
        yield job_plan(seq, record, found, provenance)


# --- counting and spooling ---------------------------------------------------------------------


@dataclass
class RowCounts:
    """Rows per table and job type (mutable while a run streams)."""

    by_table_job: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, table: str, job_type: str, n: int = 1) -> None:
        if n:
            self.by_table_job[(table, job_type)] += n

    def add_plan(self, plan: JobPlan) -> None:
        for row in plan.rows:
            self.add(row.table, plan.job_type)

    @property
    def total(self) -> int:
        return sum(self.by_table_job.values())

    def by_table(self) -> dict[str, int]:
        totals = {t.value: 0 for t in Table}
        for (table, _), n in self.by_table_job.items():
            totals[table] += n
        return totals

    def to_json(self) -> dict[str, Any]:
        nested: dict[str, dict[str, int]] = {t.value: {} for t in Table}
        for (table, job_type), n in sorted(self.by_table_job.items()):
            nested[table][job_type] = n
        return {"total": self.total, "by_table": self.by_table(), "by_table_and_job_type": nested}


class PlanSpool:
    """Job plans on disk, read back in apply order (urgent first), so memory stays bounded."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kv2d1-plan-", dir=directory)
        self._db = sqlite3.connect(Path(self._dir.name) / "plan.sqlite")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE plan (urgency INTEGER, expires REAL, seq INTEGER, job BLOB)")
        self.counts = RowCounts()
        self.jobs = 0
        self.urgent_jobs = 0

    def add(self, plan: JobPlan) -> None:
        if not plan.rows:
            return
        urgency, expires, seq = plan.order()
        expires_or_null = expires if math.isfinite(expires) else None
        blob = pickle.dumps(plan, protocol=5)
        row = (urgency, expires_or_null, seq, blob)
        self._db.execute("INSERT INTO plan VALUES (?, ?, ?, ?)", row)
        self.counts.add_plan(plan)
        self.jobs += 1
        self.urgent_jobs += plan.urgent

    def __iter__(self) -> Iterator[JobPlan]:
        cursor = self._db.execute(
            "SELECT job FROM plan ORDER BY urgency, expires IS NULL, expires, seq"
        )
        for (blob,) in cursor:
            yield pickle.loads(blob)

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def __enter__(self) -> PlanSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
