"""Applying a backfill plan to a `D1Source`: one transaction per job, a run ledger, resume, revert.

The run ledger (its events, resuming, reconciling a killed run) is `backfill.ledger`; reverting a
run is `backfill.revert`. Their public names are re-exported here (`__all__`).

`KV2D1_KILL_AFTER_STATEMENTS=N` is a **test-only** hook: the process SIGKILLs itself once N
statements have been handed to `execute_batch` (counted across jobs, inside or between
transactions), so the kill-and-resume test can interrupt a run at any chosen point.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from backfill.ledger import (
    LEDGER_SUFFIX,
    RECONCILE_AFTER,
    RECONCILE_BEFORE,
    SQL_TIME,
    InsertedRow,
    Ledger,
    LedgerRun,
    find_unfinished,
    load_run,
    lookup_rows,
    new_run_id,
    read_events,
    reconcile,
    reconcile_job,
    utc_now,
)
from backfill.plan import JobPlan, RowCounts
from backfill.revert import (
    REVERT_BATCH,
    RevertExecution,
    RevertPlan,
    apply_revert,
    blocked_message,
    plan_revert,
    run_rows,
)
from verifier.model import Table
from verifier.sources import D1Source

__all__ = [
    "KILL_ENV",
    "LEDGER_SUFFIX",
    "RECONCILE_AFTER",
    "RECONCILE_BEFORE",
    "REVERT_BATCH",
    "SQL_TIME",
    "ApplyResult",
    "InsertedRow",
    "Ledger",
    "LedgerRun",
    "Progress",
    "RevertExecution",
    "RevertPlan",
    "StatementCounter",
    "apply_job",
    "apply_plans",
    "apply_revert",
    "blocked_message",
    "check_writable",
    "execute",
    "find_unfinished",
    "job_event",
    "load_run",
    "lookup_rows",
    "max_ids",
    "new_run_id",
    "plan_revert",
    "read_events",
    "reconcile",
    "reconcile_job",
    "run_rows",
]

KILL_ENV = "KV2D1_KILL_AFTER_STATEMENTS"
Progress = Callable[[str, int], None]


# --- statements, the kill hook -------------------------------------------------------------


@dataclass
class StatementCounter:
    """Counts statements handed to `execute_batch`; with `kill_after`, the test-only kill hook."""

    kill_after: int | None = None
    sent: int = 0

    @classmethod
    def from_env(cls) -> StatementCounter:
        raw = os.environ.get(KILL_ENV, "").strip()
        return cls(int(raw) if raw.isdigit() else None)

    def before_send(self) -> None:
        self._die_if_due()
        self.sent += 1

    def after_batch(self) -> None:
        self._die_if_due()

    def _die_if_due(self) -> None:
        if self.kill_after is not None and self.sent >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


class _CountedBatch(Sequence[tuple[str, Sequence[Any]]]):
    """A batch that counts each statement as the source takes it (and may die, for tests)."""

    def __init__(self, items: list[tuple[str, Sequence[Any]]], counter: StatementCounter) -> None:
        self._items = items
        self._counter = counter

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> tuple[str, Sequence[Any]]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, Sequence[Any]]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._items[index]

    def __iter__(self) -> Iterator[tuple[str, Sequence[Any]]]:
        for item in self._items:
            self._counter.before_send()
            yield item


def execute(
    d1: D1Source, statements: list[tuple[str, Sequence[Any]]], counter: StatementCounter
) -> list[int]:
    changes = d1.execute_batch(_CountedBatch(statements, counter))
    counter.after_batch()
    return changes


def check_writable(d1: D1Source) -> None:
    """Take the write lock once, changing nothing, so a read-only or locked database fails
    with one clear error before any ledger line or row is written."""
    d1.execute_batch(
        [
            (
                "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
                "SELECT 'analysis', '1970-01-01', '1970-01-01T00:00:00.000Z', 'success' WHERE 0",
                (),
            )
        ]
    )


# --- applying --------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    inserted: RowCounts = field(default_factory=RowCounts)
    jobs: int = 0
    statements: int = 0
    seconds: float = 0.0


def max_ids(d1: D1Source) -> dict[str, int]:
    tables = [t.value for t in Table]
    sql = "SELECT " + ", ".join(f"(SELECT coalesce(max(id), 0) FROM {t})" for t in tables)
    rows = list(d1.query(sql))  # read to the end: an open cursor would hold a read lock
    return {t: int(v or 0) for t, v in zip(tables, rows[0] if rows else (0, 0, 0), strict=True)}


def job_event(seq: int, plan: JobPlan, ids: dict[str, int]) -> dict[str, Any]:
    execution = plan.rows[0].parent
    return {
        "event": "job", "seq": seq, "job": str(plan.job_key), "kv_key": plan.kv_key,
        "at": utc_now(), "max_ids": ids, "new_execution": plan.new_execution,
        "execution": {"job_type": execution.job_type, "execution_date": execution.execution_date,
                      "run_time": execution.run_time},
        "rows": [{"table": r.table.value, "natural_key": r.natural_key, "key": r.child_key}
                 for r in plan.rows],
    }


def apply_job(
    d1: D1Source, plan: JobPlan, *, ledger: Ledger, counter: StatementCounter
) -> list[InsertedRow]:
    """One job in one transaction, announced in the ledger before and recorded after."""
    ids = max_ids(d1)
    seq = ledger.next_seq()
    ledger.append(job_event(seq, plan, ids), sync=True)
    statements: list[tuple[str, Sequence[Any]]] = [(s.sql, s.params) for s in plan.statements()]
    changes = execute(d1, statements, counter)
    new_parent = plan.new_execution and changes[0] > 0
    inserted = [r for r, n in zip(plan.rows, changes, strict=True) if n]
    wanted = [(r.table.value, r.natural_key, r.child_key) for r in inserted]
    found = lookup_rows(d1, plan.rows[0].parent, wanted, ids, new_parent=new_parent)
    ledger.append({"event": "done", "seq": seq, "rows": [r.to_json() for r in found]})
    return found


def apply_plans(
    d1: D1Source,
    plans: Iterable[JobPlan],
    *,
    ledger: Ledger,
    counter: StatementCounter | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    counter = counter or StatementCounter.from_env()
    result = ApplyResult()
    started = time.perf_counter()
    for plan in plans:
        for row in apply_job(d1, plan, ledger=ledger, counter=counter):
            result.inserted.add(row.table, plan.job_type)
        result.jobs += 1
        result.statements += len(plan.rows)
        if progress:
            progress("backfill", result.jobs)
    result.seconds = time.perf_counter() - started
    return result

