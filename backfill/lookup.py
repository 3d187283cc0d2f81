"""Finding the rows a batch inserted, with their ids: after its commit, or after a kill.

One query per batch reads, above the max ids taken before the batch ran:

- the executions whose `metadata` names the run (`Provenance.marker`), with the KV key each
  was made from (so each goes to its own job);
- the execution each job's children went to, found by natural key as the inserts found it;
- the child rows under those executions.

Each row goes to the first job of the batch that planned its natural key, and only the first
row per key counts (a guarded insert adds a key only when it is absent): two jobs of a batch
never claim one row, and a job whose insert found its key taken claims nothing.

A child under an execution the batch inserted is the run's. A child added to an execution D1
already had might be a concurrent writer's. After a commit, the batch's statements tell how many
rows each table gained, and the batch's rows have consecutive ids above any row another writer
added before it: of more such children than that, the ones with the highest ids are the run's.
After a kill the count is unknown, so a `created_at` close to the `job` line's time
(`RECONCILE_BEFORE`, `RECONCILE_AFTER`) stands in for it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.ledger import SQL_TIME, InsertedRow, Ledger, LedgerRun
from backfill.packing import parent_id_sql
from backfill.plan import CHILD_KEY_COLUMN, ExecutionKey, Provenance
from verifier.model import Table
from verifier.sources import D1Source

RECONCILE_BEFORE = dt.timedelta(minutes=2)  # clock skew between us and D1's `datetime('now')`
RECONCILE_AFTER = dt.timedelta(minutes=15)  # a transaction may wait out a busy timeout first
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
        at = dt.datetime.strptime(self.at, SQL_TIME)
        low, high = at - RECONCILE_BEFORE, at + RECONCILE_AFTER
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


def _lookup(d1: D1Source, keys: list[ExecutionKey], ids: Mapping[str, int], marker: str) -> _Found:
    key_json = json.dumps([[k.job_type, k.execution_date, k.run_time] for k in keys])
    params = (key_json, ids[Table.JOB_EXECUTIONS], marker, *(ids[t] for t in CHILD_TABLES))
    found = _Found()
    for part, a, b, c, d in sorted(d1.query(LOOKUP_SQL, params), key=lambda r: (r[0], r[1])):
        if part == "parent":
            if b is not None:
                found.parents[int(a)] = int(b)
        elif part == Table.JOB_EXECUTIONS:
            found.executions.setdefault(str(b), int(a))
        else:  # the first row per (table, execution, key): rows come by id
            found.children.setdefault((str(part), int(b), str(c)), (int(a), d))
    return found


def find_inserted(
    d1: D1Source,
    jobs: Sequence[AnnouncedJob],
    run_id: str,
    *,
    inserted: Mapping[str, int] | None = None,
    claimed: frozenset[tuple[str, int]] = frozenset(),
) -> dict[int, list[InsertedRow]]:
    """The rows each job of one batch inserted, by job seq (see the module docstring).

    `inserted` is the rows per table the batch's statements reported (None after a kill);
    `claimed` holds rows the ledger already gives to other jobs.
    """
    if not jobs:
        return {}
    keys = list(dict.fromkeys(j.execution for j in jobs if any(w[2] is not None for w in j.rows)))
    found = _lookup(d1, keys, jobs[0].max_ids, Provenance(run_id).marker)
    parent_of = {key: found.parents.get(index) for index, key in enumerate(keys)}
    batch_executions = set(found.executions.values())
    taken = set(claimed)
    result: dict[int, list[InsertedRow]] = {}
    for job in jobs:
        result[job.seq] = rows = []
        for table, natural_key, key in job.rows:
            row = _claim(found, job, parent_of.get(job.execution), (table, natural_key, key),
                         batch_executions, after_kill=inserted is None)
            if row is not None and (row.table, row.rowid) not in taken:
                taken.add((row.table, row.rowid))
                rows.append(row)
    if inserted is not None:
        _keep_counted(result, inserted)
    return result


def _claim(
    found: _Found,
    job: AnnouncedJob,
    parent_id: int | None,
    wanted: WantedRow,
    batch_executions: set[int],
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
    if after_kill and parent == "existing" and not _created_within(child[1], job.window()):
        return None
    return InsertedRow(table, natural_key, key, child[0], parent_id, parent)


def _created_within(created_at: str | None, window: tuple[str, str]) -> bool:
    return created_at is not None and window[0] <= created_at <= window[1]


def _keep_counted(result: dict[int, list[InsertedRow]], inserted: Mapping[str, int]) -> None:
    """Of children claimed under executions D1 had, keep per table as many as the batch
    inserted there (less those under its own executions), the highest ids."""
    for table in CHILD_TABLES:
        rows = [r for found in result.values() for r in found if r.table == table]
        existing = sorted((r for r in rows if r.parent == "existing"), key=lambda r: r.rowid)
        ours = max(inserted.get(table, 0) - (len(rows) - len(existing)), 0)
        dropped = {(r.table, r.rowid) for r in existing[: max(len(existing) - ours, 0)]}
        if dropped:
            for seq, found in result.items():
                result[seq] = [r for r in found if (r.table, r.rowid) not in dropped]


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
        found = find_inserted(d1, jobs, run.run_id, claimed=frozenset(claimed))
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
