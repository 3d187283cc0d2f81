"""Applying a backfill plan to a `D1Source`: many jobs per request, a run ledger, resume, revert.

Jobs go to D1 in batches (`backfill.packing`): one `execute_batch_rows` per batch, that is one
request and one transaction, its rows packed into multi-row guarded inserts as full as D1's
limits allow. Per batch: the batch's `job` lines (fsync'd), the request, then a `done` line per
job. The request reads too, inside its transaction: the max ids first, then the inserts, then the
lookup of the rows they inserted (`backfill.lookup`), then the max ids again; those last are the
ids the next batch's `job` lines announce (a run reads the max ids on its own once, at the start).

The run ledger is `backfill.ledger`, finding rows again (and reconciling a killed run)
`backfill.lookup`, reverting a run `backfill.revert`. Their public names are re-exported here.

Test-only hooks, read from the environment:

- `KV2D1_KILL_AFTER_STATEMENTS=N`: the process SIGKILLs itself once N insert statements have
  been handed to the source (counted across batches, inside or between transactions; 0: before
  the first; a batch's reads are not counted), so the kill-and-resume test can interrupt a run
  at any chosen point;
- `KV2D1_BATCH_ROWS=N`: at most N rows per batch, so that a small run spans several batches.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

from backfill.ledger import (
    LEDGER_SUFFIX,
    SQL_TIME,
    InsertedRow,
    Ledger,
    LedgerRun,
    find_unfinished,
    load_run,
    new_run_id,
    read_events,
    utc_now,
)
from backfill.lookup import (
    MAX_IDS_SQL,
    AnnouncedJob,
    find_inserted,
    ids_of,
    lookup_statement,
    reconcile,
    reconcile_job,
    recover_unfinished,
    rows_inserted,
)
from backfill.packing import BatchLimits, iter_batches, pack_jobs
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
from verifier.sources import D1Source

__all__ = [
    "BATCH_ROWS_ENV",
    "KILL_ENV",
    "LEDGER_SUFFIX",
    "REVERT_BATCH",
    "SQL_TIME",
    "ApplyResult",
    "BatchLimits",
    "InsertedRow",
    "Ledger",
    "LedgerRun",
    "Progress",
    "RevertExecution",
    "RevertPlan",
    "StatementCounter",
    "announce",
    "apply_batch",
    "apply_plans",
    "apply_revert",
    "batch_limits_from_env",
    "blocked_message",
    "check_writable",
    "execute_between_reads",
    "find_inserted",
    "find_unfinished",
    "job_event",
    "load_run",
    "max_ids",
    "new_run_id",
    "plan_revert",
    "read_events",
    "reconcile",
    "reconcile_job",
    "recover_unfinished",
    "run_rows",
]

KILL_ENV = "KV2D1_KILL_AFTER_STATEMENTS"
BATCH_ROWS_ENV = "KV2D1_BATCH_ROWS"
Progress = Callable[[str, int], None]


# --- statements, the kill hook -------------------------------------------------------------


@dataclass
class StatementCounter:
    """Counts insert statements handed to the source; with `kill_after`, the test-only kill
    hook."""

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
    """A batch that counts each statement in `counted` (by index; default all) as the source
    takes it (and may die, for tests)."""

    def __init__(
        self,
        items: list[tuple[str, Sequence[Any]]],
        counter: StatementCounter,
        counted: range | None = None,
    ) -> None:
        self._items = items
        self._counter = counter
        self._counted = range(len(items)) if counted is None else counted

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> tuple[str, Sequence[Any]]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, Sequence[Any]]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._items[index]

    def __iter__(self) -> Iterator[tuple[str, Sequence[Any]]]:
        for index, item in enumerate(self._items):
            if index in self._counted:
                self._counter.before_send()
            yield item


def execute_between_reads(
    d1: D1Source,
    before: tuple[str, Sequence[Any]],
    statements: list[tuple[str, Sequence[Any]]],
    after: list[tuple[str, Sequence[Any]]],
    counter: StatementCounter,
) -> tuple[list[tuple[Any, ...]], list[int], list[list[tuple[Any, ...]]]]:
    """`statements` in one transaction, `before` read first and `after` last (not counted):
    the rows of `before`, the changes of `statements`, the rows of each of `after`."""
    items = [before, *statements, *after]
    results = d1.execute_batch_rows(
        _CountedBatch(items, counter, range(1, 1 + len(statements)))
    )
    counter.after_batch()
    end = 1 + len(statements)
    return results[0][1], [n for n, _ in results[1:end]], [rows for _, rows in results[end:]]


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


def batch_limits_from_env() -> BatchLimits:
    """The default limits, with `KV2D1_BATCH_ROWS` (test-only) lowering the rows per batch."""
    raw = os.environ.get(BATCH_ROWS_ENV, "").strip()
    limits = BatchLimits()
    return replace(limits, max_rows=int(raw)) if raw.isdigit() and int(raw) > 0 else limits


@dataclass
class ApplyResult:
    inserted: RowCounts = field(default_factory=RowCounts)
    jobs: int = 0
    statements: int = 0
    requests: int = 0
    seconds: float = 0.0


def max_ids(d1: D1Source) -> dict[str, int]:
    """The max id of each table, read on its own (one request)."""
    return ids_of(list(d1.query(MAX_IDS_SQL)))  # to the end: an open cursor holds a read lock


def job_event(
    seq: int, plan: JobPlan, ids: dict[str, int], *, batch: int | None = None
) -> dict[str, Any]:
    """The `job` line of a plan; `batch` is the seq of its batch's first job (default: its own)."""
    return {
        "event": "job", "seq": seq, "batch": seq if batch is None else batch,
        "job": str(plan.job_key), "kv_key": plan.kv_key, "at": utc_now(), "max_ids": ids,
        "new_execution": plan.new_execution, "execution": plan.rows[0].parent.to_json(),
        "rows": [{"table": r.table.value, "natural_key": r.natural_key, "key": r.child_key}
                 for r in plan.rows],
    }


@dataclass(frozen=True)
class BatchResult:
    rows: list[list[InsertedRow]]  # per job, in the batch's order
    statements: int
    max_ids: dict[str, int]  # when the batch committed: what the next batch announces


def announce(
    ledger: Ledger, jobs: Sequence[JobPlan], ids: dict[str, int], statements: int
) -> list[dict[str, Any]]:
    """Write (and fsync) a batch's `batch` line and its jobs' `job` lines; the `job` events."""
    seqs = [ledger.next_seq() for _ in jobs]
    events = [job_event(s, plan, ids, batch=seqs[0]) for s, plan in zip(seqs, jobs, strict=True)]
    batch = {"event": "batch", "batch": seqs[0], "jobs": len(jobs), "at": utc_now(),
             "rows": sum(len(p.rows) for p in jobs), "statements": statements}
    ledger.append_many([batch, *events], sync=True)
    return events


def apply_batch(
    d1: D1Source,
    jobs: Sequence[JobPlan],
    *,
    ledger: Ledger,
    counter: StatementCounter,
    limits: BatchLimits | None = None,
    ids: Mapping[str, int] | None = None,
) -> BatchResult:
    """Jobs in one request (one transaction), announced in the ledger before, recorded after.

    `ids` are the max ids to announce, read before the batch (by default, now, on their own);
    the batch reads them again in its transaction, and only that read decides its rows.
    """
    statements = pack_jobs(jobs, (limits or BatchLimits()).statement)
    events = announce(ledger, jobs, max_ids(d1) if ids is None else dict(ids), len(statements))
    announced = [AnnouncedJob.of(e) for e in events]
    before, _, (lookup, after) = execute_between_reads(
        d1, (MAX_IDS_SQL, ()), [(s.statement.sql, s.statement.params) for s in statements],
        [lookup_statement(announced, ledger.run_id), (MAX_IDS_SQL, ())], counter,
    )
    found = rows_inserted(announced, lookup, ids_of(before), ledger.run_id)
    done = [{"event": "done", "seq": j.seq, "rows": [r.to_json() for r in found[j.seq]]}
            for j in announced]
    ledger.append_many(done)
    return BatchResult([found[j.seq] for j in announced], len(statements), ids_of(after))


def apply_plans(
    d1: D1Source,
    plans: Iterable[JobPlan],
    *,
    ledger: Ledger,
    counter: StatementCounter | None = None,
    limits: BatchLimits | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    counter = counter or StatementCounter.from_env()
    limits = limits or batch_limits_from_env()
    result = ApplyResult()
    started = time.perf_counter()
    ids: dict[str, int] | None = None  # read when the first batch is ready
    for jobs in iter_batches(plans, limits):
        batch = apply_batch(d1, jobs, ledger=ledger, counter=counter, limits=limits, ids=ids)
        ids = batch.max_ids
        for plan, rows in zip(jobs, batch.rows, strict=True):
            for row in rows:
                result.inserted.add(row.table, plan.job_type)
        result.jobs += len(jobs)
        result.statements += batch.statements
        result.requests += 1
        if progress:
            progress("backfill", result.jobs)
    result.seconds = time.perf_counter() - started
    return result
