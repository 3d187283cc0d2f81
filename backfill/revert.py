"""Reverting a backfill run: delete exactly the rows its ledger says it inserted.

`plan_revert` finds the run's rows in D1 (reconciling jobs the ledger has no `done` line for)
and blocks an execution that has gained rows the run did not insert, since deleting it would take
them along; `apply_revert` deletes children first, then each execution with its children in one
batch, guarded so that a child added since the check stops the delete instead of cascading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backfill.ledger import InsertedRow, Ledger, LedgerRun
from backfill.lookup import recover_unfinished
from backfill.plan import CHILD_KEY_COLUMN, Provenance, RowCounts
from verifier.errors import BackfillError
from verifier.model import Table
from verifier.sources import D1Source

REVERT_BATCH = 50


@dataclass(frozen=True)
class RevertExecution:
    row_id: int
    natural_key: str
    children: tuple[InsertedRow, ...]


@dataclass(frozen=True)
class RevertPlan:
    """What `--revert` deletes: the run's executions with their children, and the children it
    added to executions D1 already had. `blocked` lists executions that now have other children."""

    run_id: str
    executions: tuple[RevertExecution, ...]
    children: tuple[InsertedRow, ...]
    blocked: tuple[str, ...] = ()
    gone: int = 0
    unattributed: int = 0

    def counts(self) -> dict[str, int]:
        totals = {t.value: 0 for t in Table}
        totals[Table.JOB_EXECUTIONS] = len(self.executions)
        rows = {(r.table, r.rowid): r for r in self.children}
        rows.update({(c.table, c.rowid): c for e in self.executions for c in e.children})
        for table, _ in rows:  # a row may be listed twice (see `plan_revert`): count it once
            totals[table] += 1
        return totals


def run_rows(d1: D1Source, run: LedgerRun) -> list[InsertedRow]:
    """Every row the ledger says the run inserted (reconciling jobs without a `done` line)."""
    rows = [InsertedRow.from_json(r) for _, done in run.jobs() if done for r in done["rows"]]
    if run.mode == "apply":
        rows += [row for _, found in recover_unfinished(d1, run) for row in found]
    return rows


def _run_executions(d1: D1Source, run_id: str) -> list[tuple[int, str, str]]:
    """(id, natural key, KV key) of the executions whose metadata names this run."""
    sql = ("SELECT id, job_type, execution_date, execution_time, metadata FROM job_executions "
           "WHERE instr(metadata, ?) > 0 ORDER BY id")
    found = []
    for row_id, job_type, date, time_, metadata in d1.query(sql, (Provenance(run_id).marker,)):
        try:
            tag = json.loads(metadata).get("kv2d1") or {}
        except (ValueError, AttributeError):
            continue
        if tag.get("run_id") == run_id:
            found.append((int(row_id), f"{job_type}/{date}/{time_}", str(tag.get("kv_key"))))
    return found


def _children_of(d1: D1Source, execution_id: int) -> list[tuple[str, int, str]]:
    sql = ("SELECT 'analysis_results', id, symbol FROM analysis_results WHERE execution_id = ? "
           "UNION ALL SELECT 'report_snapshots', id, report_type FROM report_snapshots "
           "WHERE execution_id = ? ORDER BY 2")
    return [(str(t), int(i), str(k)) for t, i, k in d1.query(sql, (execution_id, execution_id))]


def _sql_out_children(
    children: list[tuple[str, int, str]], intended: set[tuple[str, str]]
) -> set[int]:
    """A --sql-out run has no row ids: its rows are the first child per intended key."""
    first: dict[tuple[str, str], int] = {}
    for table, rowid, key in children:
        if (table, key) in intended:
            first.setdefault((table, key), rowid)
    return set(first.values())


def plan_revert(d1: D1Source, run: LedgerRun) -> RevertPlan:
    """Find the run's rows in D1 and check that deleting them takes nothing else with them."""
    rows = run_rows(d1, run)
    ours = {(r.table, r.rowid) for r in rows}
    intended = _intended_children(run)
    executions, blocked = [], []
    for row_id, natural_key, kv_key in _run_executions(d1, run.run_id):
        children = _children_of(d1, row_id)
        if run.mode == "sql-out":
            firsts = _sql_out_children(children, intended.get(kv_key, set()))
            ours |= {(t, i) for t, i, _ in children if i in firsts}
        foreign = [(t, i) for t, i, _ in children if (t, i) not in ours]
        if foreign:
            blocked.append(f"execution {row_id} ({natural_key}) has rows the run did not insert: "
                           + ", ".join(f"{t} {i}" for t, i in foreign[:5]))
            continue
        mine = tuple(
            InsertedRow(t, f"{natural_key}/{k}", k, i, row_id, "new") for t, i, k in children
        )
        executions.append(RevertExecution(row_id, natural_key, mine))
    existing = [r for r in rows if r.parent == "existing" and r.table != Table.JOB_EXECUTIONS]
    present = [r for r in existing if _still_there(d1, r)]
    unattributed = 0
    if run.mode == "sql-out":  # no row ids: children of executions D1 had cannot be told apart
        unattributed = sum(len(e["rows"]) for e, _ in run.jobs() if not e.get("new_execution"))
    return RevertPlan(run.run_id, tuple(executions), tuple(present), tuple(blocked),
                      len(existing) - len(present), unattributed)


def _intended_children(run: LedgerRun) -> dict[str, set[tuple[str, str]]]:
    """The child keys each new execution was planned with, by the KV key it came from."""
    intended: dict[str, set[tuple[str, str]]] = {}
    for event, _ in run.jobs():
        if event.get("new_execution"):
            keys = {(r["table"], r["key"]) for r in event["rows"] if r.get("key")}
            intended.setdefault(event["kv_key"], set()).update(keys)
    return intended


def _still_there(d1: D1Source, row: InsertedRow) -> bool:
    key = CHILD_KEY_COLUMN[Table(row.table)]
    sql = f"SELECT 1 FROM {row.table} WHERE id = ? AND execution_id = ? AND {key} = ?"
    return bool(list(d1.query(sql, (row.rowid, row.execution_id, row.key))))


def _delete_child(row: InsertedRow) -> tuple[str, tuple[Any, ...]]:
    key = CHILD_KEY_COLUMN[Table(row.table)]
    return (f"DELETE FROM {row.table} WHERE id = ? AND execution_id = ? AND {key} = ?",
            (row.rowid, row.execution_id, row.key))


def _delete_execution(execution: RevertExecution, marker: str) -> tuple[str, tuple[Any, ...]]:
    # Guarded so that a child added since the check blocks the delete instead of cascading.
    sql = ("DELETE FROM job_executions WHERE id = ? AND instr(metadata, ?) > 0 "
           "AND NOT EXISTS (SELECT 1 FROM analysis_results WHERE execution_id = ?) "
           "AND NOT EXISTS (SELECT 1 FROM report_snapshots WHERE execution_id = ?)")
    i = execution.row_id
    return sql, (i, marker, i, i)


def apply_revert(d1: D1Source, plan: RevertPlan, *, ledger: Ledger) -> RowCounts:
    """Delete the run's rows: children first, each execution with its children in one batch."""
    if plan.blocked:
        raise BackfillError(blocked_message(plan))
    deleted = RowCounts()
    marker = Provenance(plan.run_id).marker
    for start in range(0, len(plan.children), REVERT_BATCH):
        chunk = plan.children[start : start + REVERT_BATCH]
        for row, n in zip(chunk, d1.execute_batch([_delete_child(r) for r in chunk]), strict=True):
            deleted.add(row.table, "-", n)
    for execution in plan.executions:
        statements = [_delete_child(c) for c in execution.children]
        statements.append(_delete_execution(execution, marker))
        changes = d1.execute_batch(statements)
        for row, n in zip(execution.children, changes[:-1], strict=True):
            deleted.add(row.table, "-", n)
        deleted.add(Table.JOB_EXECUTIONS, "-", changes[-1])
    ledger.finish("reverted", deleted=deleted.by_table())
    return deleted


def blocked_message(plan: RevertPlan) -> str:
    more = f" (and {len(plan.blocked) - 1} more)" if len(plan.blocked) > 1 else ""
    return (
        f"cannot revert run {plan.run_id}: {plan.blocked[0]}{more}; deleting the execution "
        "would take those rows with it. Move or delete them first, then revert again "
        "(nothing was deleted)"
    )
