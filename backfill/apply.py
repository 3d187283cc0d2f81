"""Applying a backfill plan to a `D1Source`: one transaction per job, a run ledger, resume, revert.

The ledger is one JSON-lines file per run (`<ledger dir>/<run id>.jsonl`):

| event | written | holds |
|---|---|---|
| `started` | before the first job (fsync) | run id, mode (`apply`/`sql-out`), target, window |
| `job` | before its transaction (fsync) | rows it will insert (natural keys), max ids, time |
| `done` | after the commit | the rows it did insert, with their row ids |
| `resumed` | when a killed run starts again | time |
| `finished` / `reverted` | at the end (fsync) | counts |

A run killed between a `job` line and its `done` line is reconciled when it resumes (or is
reverted): an execution is the run's when its `metadata` names the run id; a child row added to
an execution D1 already had is the run's when it has an intended natural key, an id above the
max id recorded before the transaction and a `created_at` close to the `job` line's time.

`KV2D1_KILL_AFTER_STATEMENTS=N` is a **test-only** hook: the process SIGKILLs itself once N
statements have been handed to `execute_batch` (counted across jobs, inside or between
transactions), so the kill-and-resume test can interrupt a run at any chosen point.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from backfill.plan import CHILD_KEY_COLUMN, ExecutionKey, JobPlan, Provenance, RowCounts
from verifier.errors import BackfillError
from verifier.model import Table
from verifier.sources import D1Source

KILL_ENV = "KV2D1_KILL_AFTER_STATEMENTS"
LEDGER_SUFFIX = ".jsonl"
RECONCILE_BEFORE = dt.timedelta(minutes=2)  # clock skew between us and D1's `datetime('now')`
RECONCILE_AFTER = dt.timedelta(minutes=15)  # a transaction may wait out a busy timeout first
REVERT_BATCH = 50
SQL_TIME = "%Y-%m-%d %H:%M:%S"  # the form of SQLite's datetime('now'), as in `created_at`
Progress = Callable[[str, int], None]


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique run id: UTC time and random hex (no `_` or `%`, safe in patterns)."""
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime(SQL_TIME)


# --- the ledger ----------------------------------------------------------------------------


class Ledger:
    """The JSON-lines record of one run; lines are appended, never rewritten."""

    def __init__(self, path: Path, run_id: str, *, last_seq: int = 0) -> None:
        self.path = path
        self.run_id = run_id
        self._seq = last_seq

    def next_seq(self) -> int:
        """Job numbers run on across a resumed run's segments, so `done` lines pair up."""
        self._seq += 1
        return self._seq

    @classmethod
    def resume(cls, run: LedgerRun) -> Ledger:
        last = max((int(e["seq"]) for e in run.events if e.get("event") == "job"), default=0)
        ledger = cls(run.path, run.run_id, last_seq=last)
        ledger.append({"event": "resumed", "at": _utc_now()}, sync=True)
        return ledger

    @classmethod
    def create(cls, directory: Path, run_id: str, started: dict[str, Any]) -> Ledger:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackfillError(
                f"cannot create the ledger directory {directory}: {exc.strerror}; "
                "choose another with --ledger-dir"
            ) from exc
        ledger = cls(directory / f"{run_id}{LEDGER_SUFFIX}", run_id)
        first = {"event": "started", "run_id": run_id, "at": _utc_now(), **started}
        ledger.append(first, sync=True)
        return ledger

    def append(self, event: dict[str, Any], *, sync: bool = False) -> None:
        """One line; `sync` makes it durable before what it announces happens."""
        line = json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
                out.flush()
                if sync:
                    os.fsync(out.fileno())
        except OSError as exc:
            raise BackfillError(f"cannot write the run ledger {self.path}: {exc.strerror}") from exc

    def finish(self, event: str = "finished", **info: Any) -> None:
        """The run's last line: `finished` (or `reverted`), durable."""
        self.append({"event": event, "at": _utc_now(), **info}, sync=True)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.path)


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a ledger file; a line cut short by a kill (the last one) is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BackfillError(f"cannot read the run ledger {path}: {exc.strerror}") from exc
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise BackfillError(f"run ledger {path} is damaged at line {number}") from exc
    return events


@dataclass(frozen=True)
class LedgerRun:
    """A run as its ledger tells it."""

    run_id: str
    path: Path
    events: tuple[dict[str, Any], ...]

    @property
    def started(self) -> dict[str, Any]:
        return self.events[0] if self.events and self.events[0].get("event") == "started" else {}

    @property
    def mode(self) -> str:
        return str(self.started.get("mode", "apply"))

    @property
    def target(self) -> str | None:
        return self.started.get("target")

    @property
    def state(self) -> str:
        kinds = {e.get("event") for e in self.events}
        return next((s for s in ("reverted", "finished") if s in kinds), "started")

    def jobs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Each `job` event with its `done` event (None when the run stopped in between)."""
        done = {e["seq"]: e for e in self.events if e.get("event") == "done"}
        for event in self.events:
            if event.get("event") == "job":
                yield event, done.get(event["seq"])


def load_run(directory: Path, run_id: str) -> LedgerRun:
    path = directory / f"{run_id}{LEDGER_SUFFIX}"
    if not path.is_file():
        raise BackfillError(
            f"no ledger for run {run_id} in {directory}: pass the --ledger-dir the run used"
        )
    return LedgerRun(run_id, path, tuple(read_events(path)))


def find_unfinished(directory: Path, target: str) -> LedgerRun | None:
    """The newest run on `target` that started applying and neither finished nor was reverted."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob(f"*{LEDGER_SUFFIX}"), reverse=True):
        first, last = _first_and_last(path)
        started = first.get("event") == "started" and first.get("mode") == "apply"
        ended = last.get("event") in ("finished", "reverted")
        if started and first.get("target") == target and not ended:
            return LedgerRun(path.stem, path, tuple(read_events(path)))
    return None


def _first_and_last(path: Path, tail: int = 65536) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ledger's first and last complete events, without reading a long ledger whole."""
    try:
        with path.open("rb") as handle:
            first_line = handle.readline()
            handle.seek(max(0, path.stat().st_size - tail))
            lines = handle.read().splitlines()
    except OSError as exc:
        raise BackfillError(f"cannot read the run ledger {path}: {exc.strerror}") from exc
    events = []
    for line in (first_line, *reversed(lines)):
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut short by a kill, or the middle of one
            continue
        if len(events) == 2:
            break
    first = events[0] if events else {}
    return first, events[-1] if len(events) > 1 else first


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


@dataclass(frozen=True)
class InsertedRow:
    """A row one run inserted, as the ledger records it."""

    table: str
    natural_key: str
    key: str | None
    rowid: int
    execution_id: int | None
    parent: str  # "new": the run inserted the execution too; "existing": D1 had it

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "natural_key": self.natural_key, "key": self.key,
            "rowid": self.rowid, "execution_id": self.execution_id, "parent": self.parent,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InsertedRow:
        return cls(d["table"], d["natural_key"], d.get("key"), int(d["rowid"]),
                   d.get("execution_id"), d.get("parent", "existing"))


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
        "at": _utc_now(), "max_ids": ids, "new_execution": plan.new_execution,
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


# --- finding inserted rows again ---------------------------------------------------------------


def lookup_rows(
    d1: D1Source,
    execution: ExecutionKey,
    wanted: list[tuple[str, str, str | None]],
    ids: dict[str, int],
    *,
    new_parent: bool,
    created_between: tuple[str, str] | None = None,
    marker: str | None = None,
) -> list[InsertedRow]:
    """The ids of rows with the wanted natural keys, inserted after `ids` were taken.

    Of several rows with one key, the first is ours: a guarded insert only adds a key that is
    absent. `marker` requires the execution's metadata to name the run; `created_between`
    bounds children's `created_at` (reconciling, when the commit is not known to have happened).
    """
    found: list[InsertedRow] = []
    parent = "new" if new_parent else "existing"
    for table, nk, _ in wanted:
        if table == Table.JOB_EXECUTIONS:
            exec_row = _lookup_execution(d1, execution, ids, marker)
            if exec_row is not None:
                found.append(InsertedRow(table, nk, None, exec_row, None, parent))
    for table in (Table.ANALYSIS_RESULTS, Table.REPORT_SNAPSHOTS):
        keys = {k: n for t, n, k in wanted if t == table and k is not None}
        if keys:
            rows = _lookup_children(d1, table, execution, ids[table], created_between)
            found += [InsertedRow(table, keys[k], k, rowid, eid, parent)
                      for k, rowid, eid in rows if k in keys]
    return found


def _lookup_execution(
    d1: D1Source, execution: ExecutionKey, ids: dict[str, int], marker: str | None
) -> int | None:
    match = execution.match()
    sql = f"SELECT id FROM job_executions WHERE {match.sql} AND id > ?"
    params: tuple[Any, ...] = (*match.params, ids[Table.JOB_EXECUTIONS])
    if marker is not None:
        sql += " AND instr(metadata, ?) > 0"
        params += (marker,)
    rows = list(d1.query(sql + " ORDER BY id LIMIT 1", params))
    return int(rows[0][0]) if rows else None


def _lookup_children(
    d1: D1Source,
    table: Table,
    execution: ExecutionKey,
    after_id: int,
    created_between: tuple[str, str] | None,
) -> list[tuple[str, int, int]]:
    """(key, id, execution id) of the first child per key under the execution, after an id."""
    parent = execution.id_select()
    key = CHILD_KEY_COLUMN[table]
    sql = (f"SELECT {key}, min(id), execution_id FROM {table} "
           f"WHERE execution_id = {parent.sql} AND id > ?")
    params: tuple[Any, ...] = (*parent.params, after_id)
    if created_between is not None:
        sql += " AND created_at BETWEEN ? AND ?"
        params += created_between
    rows = d1.query(sql + f" GROUP BY {key}", params)
    return [(str(k), int(i), int(e)) for k, i, e in rows]


def reconcile_job(d1: D1Source, event: dict[str, Any], run_id: str) -> list[InsertedRow]:
    """The rows a job whose `done` line is missing did insert (none if it never committed)."""
    execution = ExecutionKey(**event["execution"])
    wanted = [(r["table"], r["natural_key"], r.get("key")) for r in event["rows"]]
    ids = {t: int(v) for t, v in event["max_ids"].items()}
    marker = Provenance(run_id).marker
    if event.get("new_execution"):
        ours = lookup_rows(d1, execution, wanted, ids, new_parent=True, marker=marker)
        if any(r.table == Table.JOB_EXECUTIONS for r in ours):
            return ours
        wanted = [w for w in wanted if w[0] != Table.JOB_EXECUTIONS]
    at = dt.datetime.strptime(event["at"], SQL_TIME)
    window = ((at - RECONCILE_BEFORE).strftime(SQL_TIME), (at + RECONCILE_AFTER).strftime(SQL_TIME))
    return lookup_rows(d1, execution, wanted, ids, new_parent=False, created_between=window)


def reconcile(d1: D1Source, ledger: Ledger) -> int:
    """Write the `done` lines a killed run did not get to; the number of rows recovered."""
    run = LedgerRun(ledger.run_id, ledger.path, tuple(ledger.events()))
    recovered = 0
    for event, done in run.jobs():
        if done is None:
            rows = reconcile_job(d1, event, run.run_id)
            ledger.append({"event": "done", "seq": event["seq"], "reconciled": True,
                           "rows": [r.to_json() for r in rows]})
            recovered += len(rows)
    return recovered


# --- revert ----------------------------------------------------------------------------------


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
        for row in [*self.children, *(c for e in self.executions for c in e.children)]:
            totals[row.table] += 1
        return totals


def run_rows(d1: D1Source, run: LedgerRun) -> list[InsertedRow]:
    """Every row the ledger says the run inserted (reconciling jobs without a `done` line)."""
    rows: list[InsertedRow] = []
    for event, done in run.jobs():
        if done is not None:
            rows += [InsertedRow.from_json(r) for r in done["rows"]]
        elif run.mode == "apply":
            rows += reconcile_job(d1, event, run.run_id)
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
