"""Finding the rows a batch inserted, with their ids: inside its own transaction, or after a kill.

One query per batch reads, above the max ids announced in its `job` lines:

- the executions whose `metadata` names the run (`Provenance.marker`), with the KV key each
  was made from (so each goes to its own job);
- the execution each job's children went to, found by natural key as the inserts found it;
- the child rows under those executions.

Each row goes to the first job of the batch that planned its natural key, and only the first
row per key counts (a guarded insert adds a key only when it is absent): two jobs of a batch
never claim one row, and a job whose insert found its key taken claims nothing.

A batch runs the query as its last statement, after its inserts and in their transaction, and
reads the max ids as its first (`MAX_IDS_SQL`): D1 has a single writer, so a row above those
ids was inserted by the batch, and a latest record's parent is the one its inserts found
(`rows_inserted`; no other writer's row can get in).

After a kill the batch's own reads are lost; the query runs on its own (`find_inserted`) above
the announced max ids, which may be lower than the ids before the batch. A child under an
execution the run inserted is the run's; a child added to an execution D1 already had might be
a concurrent writer's, so only one whose `created_at` ends in the run's stamp
(`Provenance.stamp`, which the run's inserts write) counts; for a run begun before the stamp
existed (its ledger's `started` line lacks `stamped`), one with a `created_at` close to the
`job` line's time (`UNSTAMPED_BEFORE`, `UNSTAMPED_AFTER`), as then. The same stamp keeps, in a batch
retried after a lost answer, the children its first, committed attempt added below the max ids
the retry read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.ledger import SQL_TIME, InsertedRow, Ledger, LedgerRun
from backfill.packing import parent_id_sql
from backfill.plan import CHILD_KEY_COLUMN, ExecutionKey, Provenance
from verifier.model import Table
from verifier.sources import D1Source

UNSTAMPED_BEFORE = dt.timedelta(minutes=2)  # clock skew between us and D1's `datetime('now')`
UNSTAMPED_AFTER = dt.timedelta(minutes=15)  # a transaction may wait out a busy timeout first
CHILD_TABLES = (Table.ANALYSIS_RESULTS, Table.REPORT_SNAPSHOTS)

WantedRow = tuple[str, str, str | None]  # table, natural key, child key (None: the execution)


@dataclass(frozen=True)
class AnnouncedJob:
    """A `job` event: the rows one job was about to insert, and the max ids before its batch."""

    seq: int
    batch: int
    kv_key: str
    execution: ExecutionKey
    rows: tuple[WantedRow, ...]
    max_ids: Mapping[str, int]
    at: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> AnnouncedJob:
        seq = int(event["seq"])
        return cls(
            seq, int(event.get("batch", seq)), str(event["kv_key"]),
            ExecutionKey(**event["execution"]),
            tuple((r["table"], r["natural_key"], r.get("key")) for r in event["rows"]),
            {t: int(v) for t, v in event["max_ids"].items()}, str(event["at"]),
        )

    def window(self) -> tuple[str, str]:
        """Around the `job` line's time: where an unstamped run's children were created."""
        at = dt.datetime.strptime(self.at, SQL_TIME)
        low, high = at - UNSTAMPED_BEFORE, at + UNSTAMPED_AFTER
        return low.strftime(SQL_TIME), high.strftime(SQL_TIME)


def _lookup_sql() -> str:
    keys = (
        "k(n, job_type, execution_date, run_time) AS (SELECT key, json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?))"
    )
    parents = f"parent(n, id) AS (SELECT k.n, {parent_id_sql('k')} FROM k)"
    children = [
        f"SELECT '{t}', c.id, c.execution_id, c.{CHILD_KEY_COLUMN[t]}, c.created_at FROM {t} AS c "
        "WHERE c.id > ? AND c.execution_id IN (SELECT id FROM parent)"
        for t in CHILD_TABLES
    ]
    return "\nUNION ALL ".join([
        f"WITH {keys},\n{parents}\nSELECT 'parent', n, id, NULL, NULL FROM parent",
        "SELECT 'job_executions', id, CASE WHEN json_valid(metadata) "
        "THEN json_extract(metadata, '$.kv2d1.kv_key') END, NULL, NULL FROM job_executions "
        "WHERE id > ? AND instr(metadata, ?) > 0",
        *children,
    ])


LOOKUP_SQL = _lookup_sql()


@dataclass
class _Found:
    """What the lookup query read, indexed for claiming."""

    executions: dict[str, int] = field(default_factory=dict)  # KV key → the first by id
    parents: dict[int, int] = field(default_factory=dict)  # key index → execution id
    children: dict[tuple[str, int, str], tuple[int, str | None]] = field(default_factory=dict)


MAX_IDS_SQL = "SELECT " + ", ".join(
    f"(SELECT coalesce(max(id), 0) FROM {t.value})" for t in Table
)


def ids_of(rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    """The max id per table, from the rows `MAX_IDS_SQL` read."""
    values = rows[0] if rows else (0,) * len(Table)
    return {t.value: int(v or 0) for t, v in zip(Table, values, strict=True)}


def _parent_keys(jobs: Sequence[AnnouncedJob]) -> list[ExecutionKey]:
    """The executions the jobs' children go under, each once (the lookup's `json_each` list)."""
    return list(dict.fromkeys(j.execution for j in jobs if any(w[2] is not None for w in j.rows)))


def lookup_statement(jobs: Sequence[AnnouncedJob], run_id: str) -> tuple[str, tuple[Any, ...]]:
    """The lookup of one batch's rows, above the max ids its `job` lines announce (5 params)."""
    keys = _parent_keys(jobs)
    key_json = json.dumps([[k.job_type, k.execution_date, k.run_time] for k in keys])
    ids = jobs[0].max_ids
    marker = Provenance(run_id).marker
    return LOOKUP_SQL, (key_json, ids[Table.JOB_EXECUTIONS], marker, *(ids[t] for t in CHILD_TABLES))


def _index(rows: Iterable[Sequence[Any]]) -> _Found:
    """What the lookup read, indexed for claiming."""
    found = _Found()
    for part, a, b, c, d in sorted(rows, key=lambda r: (r[0], r[1])):
        if part == "parent":
            if b is not None:
                found.parents[int(a)] = int(b)
        elif part == Table.JOB_EXECUTIONS:
            found.executions.setdefault(str(b), int(a))
        else:  # the first row per (table, execution, key): rows come by id
            found.children.setdefault((str(part), int(b), str(c)), (int(a), d))
    return found


def rows_inserted(
    jobs: Sequence[AnnouncedJob],
    lookup_rows: Iterable[Sequence[Any]],
    above: Mapping[str, int],
    run_id: str,
) -> dict[int, list[InsertedRow]]:
    """The rows each job of one batch of run `run_id` inserted, by job seq, from the rows the
    batch's `lookup_statement` read in its own transaction and the max ids (`above`) its first
    statement read there.

    A row above `above` is the batch's. Below it (and above the announced ids) only the run's
    own rows are kept, its executions, their children and the children with its stamp: an
    earlier attempt of a retried batch may have inserted them; any other row there is another
    writer's.
    """
    stamp = Provenance(run_id).stamp
    rows = list(lookup_rows)
    runs = {int(r[1]) for r in rows if r[0] == Table.JOB_EXECUTIONS}
    kept = [r for r in rows if r[0] in ("parent", Table.JOB_EXECUTIONS)
            or int(r[1]) > above[str(r[0])] or int(r[2]) in runs or _stamped(r[4], stamp)]
    return _claim_all(jobs, _index(kept), stamp, after_kill=False)


def find_inserted(
    d1: D1Source,
    jobs: Sequence[AnnouncedJob],
    run_id: str,
    *,
    claimed: frozenset[tuple[str, int]] = frozenset(),
    stamped: bool = True,
) -> dict[int, list[InsertedRow]]:
    """The rows each job of one killed batch inserted, by job seq (see the module docstring).

    `claimed` holds rows the ledger already gives to other jobs; `stamped` says whether the
    run's children carry its stamp (`LedgerRun.stamped`).
    """
    if not jobs:
        return {}
    found = _index(d1.query(*lookup_statement(jobs, run_id)))
    stamp = Provenance(run_id).stamp if stamped else None
    return _claim_all(jobs, found, stamp, claimed=claimed, after_kill=True)


def _claim_all(
    jobs: Sequence[AnnouncedJob],
    found: _Found,
    stamp: str | None,
    *,
    claimed: frozenset[tuple[str, int]] = frozenset(),
    after_kill: bool,
) -> dict[int, list[InsertedRow]]:
    parent_of = {key: found.parents.get(i) for i, key in enumerate(_parent_keys(jobs))}
    batch_executions = set(found.executions.values())
    taken = set(claimed)
    result: dict[int, list[InsertedRow]] = {}
    for job in jobs:
        result[job.seq] = rows = []
        for table, natural_key, key in job.rows:
            row = _claim(found, job, parent_of.get(job.execution), (table, natural_key, key),
                         batch_executions, stamp, after_kill=after_kill)
            if row is not None and (row.table, row.rowid) not in taken:
                taken.add((row.table, row.rowid))
                rows.append(row)
    return result


def _claim(
    found: _Found,
    job: AnnouncedJob,
    parent_id: int | None,
    wanted: WantedRow,
    batch_executions: set[int],
    stamp: str | None,
    *,
    after_kill: bool,
) -> InsertedRow | None:
    """The first row with the wanted natural key above the batch's max ids, if it counts."""
    table, natural_key, key = wanted
    if key is None:  # the run's execution made from this job's KV record
        rowid = found.executions.get(job.kv_key)
        return None if rowid is None else InsertedRow(table, natural_key, None, rowid, None, "new")
    if parent_id is None or (child := found.children.get((table, parent_id, key))) is None:
        return None
    parent = "new" if parent_id in batch_executions else "existing"
    if after_kill and parent == "existing" and not (
        _stamped(child[1], stamp) if stamp is not None else _created_within(child[1], job.window())
    ):
        return None
    return InsertedRow(table, natural_key, key, child[0], parent_id, parent)


def _stamped(created_at: Any, stamp: str) -> bool:
    """Whether a child's `created_at` ends in the run's stamp (the run inserted it)."""
    return isinstance(created_at, str) and created_at.endswith(stamp)


def _created_within(created_at: Any, window: tuple[str, str]) -> bool:
    return isinstance(created_at, str) and window[0] <= created_at <= window[1]


# --- after a kill ----------------------------------------------------------------------------


def reconcile_job(d1: D1Source, event: Mapping[str, Any], run_id: str) -> list[InsertedRow]:
    """The rows one job without a `done` line inserted, on its own (none if never committed).

    A killed batch is reconciled whole (`recover_unfinished`), so that its jobs share rows out.
    """
    job = AnnouncedJob.of(event)
    return find_inserted(d1, [job], run_id)[job.seq]


def recover_unfinished(
    d1: D1Source, run: LedgerRun
) -> Iterator[tuple[dict[str, Any], list[InsertedRow]]]:
    """Each `job` event without a `done` event, with the rows it inserted, batch by batch."""
    claimed = {(r["table"], int(r["rowid"])) for _, d in run.jobs() if d for r in d["rows"]}
    batches: dict[int, list[dict[str, Any]]] = {}
    for event, done in run.jobs():
        if done is None:
            batches.setdefault(int(event.get("batch", event["seq"])), []).append(event)
    for events in batches.values():
        jobs = [AnnouncedJob.of(e) for e in events]
        found = find_inserted(
            d1, jobs, run.run_id, claimed=frozenset(claimed), stamped=run.stamped
        )
        for event, job in zip(events, jobs, strict=True):
            claimed |= {(r.table, r.rowid) for r in found[job.seq]}
            yield event, found[job.seq]


def reconcile(d1: D1Source, ledger: Ledger) -> int:
    """Write the `done` lines a killed run did not get to; the number of rows recovered."""
    run = LedgerRun(ledger.run_id, ledger.path, tuple(ledger.events()))
    recovered = 0
    for event, rows in recover_unfinished(d1, run):
        ledger.append({"event": "done", "seq": event["seq"], "reconciled": True,
                       "rows": [r.to_json() for r in rows]})
        recovered += len(rows)
    return recovered
