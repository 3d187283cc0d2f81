"""Packing a backfill into few, full D1 statements and requests.

D1 allows at most 100 bound parameters and 100,000 bytes of SQL per statement, and a request (a
batch: one transaction) must finish within 30 s. A statement here inserts many rows of one
table, each row one tuple of a `VALUES` list and each still guarded by its own natural key:

    INSERT INTO analysis_results (execution_id, symbol, …, created_at)
    WITH v(job_type, execution_date, run_time, symbol, …) AS (VALUES
      (?, ?, ?, ?, …),
      (?, ?, NULL, ?, …))
    SELECT je.id, v.symbol, …, '2026-11-29 09:07:51.000482610473' FROM v
    JOIN job_executions AS je ON je.id = CASE WHEN v.run_time IS NULL
        THEN (SELECT pe.id FROM job_executions AS pe WHERE pe.job_type = v.job_type AND …
              ORDER BY pe.execution_time DESC, pe.id LIMIT 1)
        ELSE (SELECT pe.id FROM job_executions AS pe WHERE pe.job_type = v.job_type AND …
              AND substr(pe.execution_time, 1, 19) = v.run_time ORDER BY pe.id LIMIT 1)
      END
    WHERE NOT EXISTS (SELECT 1 FROM analysis_results AS c
                      WHERE c.execution_id = je.id AND c.symbol = v.symbol)

A child's `run_time` is NULL for a latest record (its execution: the latest of the date); its
`created_at` is the run's start and ends in its stamp (`Provenance.created_at`: how the run's
children are told from a concurrent writer's after a kill). An
execution's tuple ends in a literal `per_run` flag: its key is its own `execution_time` to the
second, or its date alone. NULL values are written as `NULL`, not bound. (`INSERT … WITH`,
not `WITH … INSERT`: a statement that starts with INSERT reports its row count in Python.)

What keeps the meaning of one guarded insert per row, one job after another:

- SQLite evaluates every `NOT EXISTS` of an `INSERT … SELECT` before it inserts any of the rows
  (the SELECT reads the table it writes, so it is buffered): two rows that could have one
  natural key never share a statement; the second starts the next one, which sees the first.
- A batch inserts all its executions, then all symbol results, then all reports, each in job
  order. Only a child whose execution an execution of a later job could become (the latest run
  of its date, or a run with its key that D1 lacks) could tell, so that job starts a new batch.
- Parameters are counted as handed to `execute_batch`, every element, so the limit holds
  whatever a client binds; a non-text value may be written into the SQL by the client (RemoteD1
  does), so it counts as up to `MAX_LITERAL_BYTES` of SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.plan import CHILD_KEY_COLUMN, RUN_TIME_CHARS, JobPlan, RowInsert, Statement
from verifier.model import Table

MAX_PARAMS = 100
MAX_SQL_BYTES = 100_000
MAX_LITERAL_BYTES = 32  # the longest number a client may inline: a double's repr, sign, brackets
TABLE_ORDER = (Table.JOB_EXECUTIONS, Table.ANALYSIS_RESULTS, Table.REPORT_SNAPSHOTS)
PARENT_COLUMNS = ("job_type", "execution_date", "run_time")
SEPARATOR = ",\n  "


def bound_value_bytes(value: Any) -> int:
    """The SQL a parameter may become: nothing when bound as text, a literal otherwise."""
    if isinstance(value, bytes):
        return 2 * len(value) + 3  # X'…'
    return 0 if isinstance(value, str) else MAX_LITERAL_BYTES


@dataclass(frozen=True)
class StatementLimits:
    """What one statement may hold; `max_params` None: every value is inlined (a SQL file)."""

    max_params: int | None = MAX_PARAMS
    max_bytes: int = MAX_SQL_BYTES
    value_bytes: Callable[[Any], int] = bound_value_bytes


@dataclass(frozen=True)
class BatchLimits:
    """What one request carries. SQLite inserts a thousand guarded rows in milliseconds: the
    bounds keep a request's body (and what a failure rolls back) small, far from the 30 s."""

    max_rows: int = 1000
    max_bytes: int = 2_000_000
    statement: StatementLimits = field(default_factory=StatementLimits)


@dataclass(frozen=True, slots=True)
class PackedStatement:
    """One multi-row insert into `table` and the rows it holds, in order."""

    table: Table
    statement: Statement
    rows: tuple[RowInsert, ...]


# --- SQL -------------------------------------------------------------------------------------


def parent_id_sql(alias: str) -> str:
    """The id of the execution a child of `alias` (job_type, execution_date, run_time) belongs
    to: the first run with its key, or for a latest record (run_time NULL) the latest of the
    date. (Two sub-selects: SQLite resolves no outer column in a sub-select's ORDER BY.)"""
    a, n = alias, RUN_TIME_CHARS
    date = f"pe.job_type = {a}.job_type AND pe.execution_date = {a}.execution_date"
    return (
        f"CASE WHEN {a}.run_time IS NULL\n"
        f"    THEN (SELECT pe.id FROM job_executions AS pe WHERE {date}\n"
        "          ORDER BY pe.execution_time DESC, pe.id LIMIT 1)\n"
        f"    ELSE (SELECT pe.id FROM job_executions AS pe WHERE {date}\n"
        f"          AND substr(pe.execution_time, 1, {n}) = {a}.run_time ORDER BY pe.id LIMIT 1)\n"
        "  END"
    )


_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+")


def insert_sql(
    table: Table, columns: Sequence[str], tuples: Sequence[str], stamp: str | None = None
) -> str:
    """The guarded multi-row insert of `tuples` (each `(…)`) into `table`; a child's
    `created_at` is `stamp` (a run's `Provenance.created_at`) if given."""
    names = ", ".join(columns)
    picked = ", ".join(f"v.{c}" for c in columns)
    values = SEPARATOR.join(tuples)
    if table == Table.JOB_EXECUTIONS:
        same_second = f"substr(je.execution_time, 1, {RUN_TIME_CHARS}) = " \
                      f"substr(v.execution_time, 1, {RUN_TIME_CHARS})"
        return (
            f"INSERT INTO job_executions ({names})\n"
            f"WITH v({names}, per_run) AS (VALUES\n  {values})\n"
            f"SELECT {picked} FROM v\n"
            "WHERE NOT EXISTS (SELECT 1 FROM job_executions AS je\n"
            "  WHERE je.job_type = v.job_type AND je.execution_date = v.execution_date\n"
            f"    AND (v.per_run = 0 OR {same_second}))"
        )
    key = CHILD_KEY_COLUMN[table]
    inserted, selected = names, picked
    if stamp is not None:
        if not _STAMP.fullmatch(stamp):  # written into the SQL: digits only
            raise ValueError(f"a created_at stamp is a time and digits, not {stamp!r}")
        inserted, selected = f"{names}, created_at", f"{picked}, '{stamp}'"
    return (
        f"INSERT INTO {table} (execution_id, {inserted})\n"
        f"WITH v({', '.join(PARENT_COLUMNS)}, {names}) AS (VALUES\n  {values})\n"
        f"SELECT je.id, {selected} FROM v\n"
        f"JOIN job_executions AS je ON je.id = {parent_id_sql('v')}\n"
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS c "
        f"WHERE c.execution_id = je.id AND c.{key} = v.{key})"
    )


@dataclass(frozen=True, slots=True)
class ValuesRow:
    """One tuple of a VALUES list: `?` or a literal per cell, and its parameters."""

    sql: str
    params: tuple[Any, ...]


def values_row(row: RowInsert) -> ValuesRow:
    """A row's tuple: an execution's values and its `per_run` flag, or a child's parent key
    and values. None is written as NULL."""
    if row.child_key is None:
        cells, flag = row.values, ["0" if row.parent.run_time is None else "1"]
    else:
        parent = (row.parent.job_type, row.parent.execution_date, row.parent.run_time)
        cells, flag = parent + row.values, []
    sql = ["NULL" if value is None else "?" for value in cells] + flag
    params = tuple(value for value in cells if value is not None)
    return ValuesRow(f"({', '.join(sql)})", params)


# --- rows → statements -------------------------------------------------------------------------


class _Keys:
    """The natural keys of a statement's rows, to keep apart two rows that may share one.

    A latest key (run_time None) may be the key of any run of its date; per-run keys of
    different runs never meet."""

    def __init__(self) -> None:
        self.any: set[tuple[str, str, str | None]] = set()
        self.latest: set[tuple[str, str, str | None]] = set()
        self.runs: set[tuple[str, str, str | None, str]] = set()

    @staticmethod
    def _date_key(row: RowInsert) -> tuple[str, str, str | None]:
        return (row.parent.job_type, row.parent.execution_date, row.child_key)

    def collides(self, row: RowInsert) -> bool:
        date_key, run = self._date_key(row), row.parent.run_time
        if run is None:
            return date_key in self.any
        return date_key in self.latest or (*date_key, run) in self.runs

    def add(self, row: RowInsert) -> None:
        date_key, run = self._date_key(row), row.parent.run_time
        self.any.add(date_key)
        if run is None:
            self.latest.add(date_key)
        else:
            self.runs.add((*date_key, run))


@dataclass
class _Pending:
    """The statement being filled."""

    table: Table
    columns: tuple[str, ...]
    stamp: str | None
    size: int
    tuples: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    rows: list[RowInsert] = field(default_factory=list)
    keys: _Keys = field(default_factory=_Keys)

    @classmethod
    def start(cls, row: RowInsert) -> _Pending:
        base = insert_sql(row.table, row.columns, [], row.stamp)
        return cls(row.table, row.columns, row.stamp, len(base.encode("utf-8")))

    def takes(self, row: RowInsert, values: ValuesRow, size: int, limits: StatementLimits) -> bool:
        if not self.rows:
            return True  # a row too large for any statement goes alone (D1 names it)
        over_params = (
            limits.max_params is not None
            and len(self.params) + len(values.params) > limits.max_params
        )
        over_bytes = self.size + size > limits.max_bytes
        mixed = (row.table, row.columns, row.stamp) != (self.table, self.columns, self.stamp)
        return not (over_params or over_bytes or mixed or self.keys.collides(row))

    def add(self, row: RowInsert, values: ValuesRow, size: int) -> None:
        self.tuples.append(values.sql)
        self.params += values.params
        self.rows.append(row)
        self.keys.add(row)
        self.size += size

    def packed(self) -> PackedStatement:
        sql = insert_sql(self.table, self.columns, self.tuples, self.stamp)
        return PackedStatement(self.table, Statement(sql, tuple(self.params)), tuple(self.rows))


def pack_rows(rows: Iterable[RowInsert], limits: StatementLimits) -> list[PackedStatement]:
    """Rows of one table, in order, as few statements as the limits allow."""
    statements: list[PackedStatement] = []
    pending: _Pending | None = None
    for row in rows:
        values = values_row(row)
        size = len(values.sql) + len(SEPARATOR) + sum(map(limits.value_bytes, values.params))
        if pending is None or not pending.takes(row, values, size, limits):
            if pending is not None:
                statements.append(pending.packed())
            pending = _Pending.start(row)
        pending.add(row, values, size)
    if pending is not None:
        statements.append(pending.packed())
    return statements


def pack_jobs(jobs: Sequence[JobPlan], limits: StatementLimits) -> list[PackedStatement]:
    """The statements of a batch: executions, then symbol results, then reports, in job order."""
    statements: list[PackedStatement] = []
    for table in TABLE_ORDER:
        statements += pack_rows((r for job in jobs for r in job.rows if r.table == table), limits)
    return statements


def job_statements(plan: JobPlan, limits: StatementLimits | None = None) -> list[Statement]:
    """One job's statements on their own (one per table, as a rule)."""
    return [p.statement for p in pack_jobs([plan], limits or StatementLimits())]


# --- jobs → batches ----------------------------------------------------------------------------


def request_bytes(plan: JobPlan) -> int:
    """About what a job adds to a request: its text, and a few bytes per other value."""
    return sum(
        len(v.encode("utf-8", "surrogatepass")) + 8 if isinstance(v, str) else 16
        for row in plan.rows
        for v in row.values
    )


class _ChildParents:
    """The executions a batch's children look for, by natural key."""

    def __init__(self) -> None:
        self.latest: set[tuple[str, str]] = set()  # (job_type, date) of latest records
        self.run_dates: set[tuple[str, str]] = set()
        self.runs: set[tuple[str, str, str]] = set()

    def add(self, plan: JobPlan) -> None:
        for row in plan.rows:
            date = (row.parent.job_type, row.parent.execution_date)
            if row.child_key is None:
                continue
            if row.parent.run_time is None:
                self.latest.add(date)
            else:
                self.run_dates.add(date)
                self.runs.add((*date, row.parent.run_time))

    def may_gain(self, plan: JobPlan) -> bool:
        """Whether the plan's new execution could become the parent of a child before it."""
        if not plan.new_execution:
            return False
        key = plan.rows[0].parent
        date = (key.job_type, key.execution_date)
        if key.run_time is None:  # inserted only when its date has no run: any child's
            return date in self.latest or date in self.run_dates
        return date in self.latest or (*date, key.run_time) in self.runs


def iter_batches(plans: Iterable[JobPlan], limits: BatchLimits) -> Iterator[list[JobPlan]]:
    """Consecutive jobs, as many to a request as `limits` allow (a job is never split).

    A batch inserts its executions before any child, so a job adding an execution that a child
    earlier in the batch may belong to (the latest run of a date, or a run with the child's
    key) starts a new batch: that child goes where it would have gone one job at a time.
    """
    batch: list[JobPlan] = []
    rows = size = 0
    parents = _ChildParents()
    for plan in plans:
        job_size = request_bytes(plan)
        full = rows + len(plan.rows) > limits.max_rows or size + job_size > limits.max_bytes
        if batch and (full or parents.may_gain(plan)):
            yield batch
            batch, rows, size, parents = [], 0, 0, _ChildParents()
        batch.append(plan)
        rows, size = rows + len(plan.rows), size + job_size
        parents.add(plan)
    if batch:
        yield batch
