"""The diff: a merge of two streams ordered by (date, job type), yielding findings.

Both sides arrive grouped by `(execution_date, job_type)`; a group is small (a few runs of one
job on one day), so only one group of each side is in memory at a time. Inside a group:

- per-run KV records match the D1 execution with the same ET run time;
- a daily KV record stands for the latest run: it matches the latest D1 execution no per-run
  key claims. The daily key is last-writer-wins (reference §7.3): when per-run keys exist too,
  it is folded into one of them only when it holds that run (`_holds_run`); otherwise it is a
  run of its own (a later manual run writes only the daily key), compared and reported;
- a `status:` record sets the status of the latest record (or stands alone as the job).

What is compared is what the profile maps: a field the KV payload does not carry (`absent`) is
skipped; a column the adapter never writes (`UNWRITTEN_COLUMNS`) that is NULL in D1 is counted
in `Coverage.unwritten_nulls`, not reported; every other field is compared, NULL or not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from verifier.calendar import et_run_time, instant_of_run, is_date, iso_utc, parse_instant
from verifier.canonical import JSON_FIELDS, compare_field, parse_json_text, stable_id
from verifier.d1 import row_problems
from verifier.model import (
    JOB_COMPARED_FIELDS,
    LATEST,
    REPORT_COMPARED_FIELDS,
    SEVERITY_OF,
    SYMBOL_COMPARED_FIELDS,
    UNWRITTEN_COLUMNS,
    Category,
    Coverage,
    D1Job,
    Finding,
    JobKey,
    KvRecord,
    RowProblem,
    Table,
)

EXPIRING_WITHIN = dt.timedelta(hours=48)
VALUE_PREVIEW = 300

GroupKey = tuple[str, str]


@dataclass
class DiffContext:
    """What the diff needs besides the two streams."""

    now: dt.datetime
    coverage: Coverage
    kv_first_date: dict[str, str] = field(default_factory=dict)
    ttl_of: dict[str, int] = field(default_factory=dict)
    groups_seen: set[GroupKey] = field(default_factory=set)
    kv_invalid_groups: set[GroupKey] = field(default_factory=set)


def finding(
    category: Category,
    natural_key: str,
    message: str,
    *,
    id_parts: Iterable[str | None] = (),
    **kw: Any,
) -> Finding:
    fid = stable_id(category.value, natural_key, *id_parts)
    return Finding(fid, category, SEVERITY_OF[category], natural_key, message, **kw)


def _preview(value: Any) -> Any:
    if isinstance(value, str) and len(value) > VALUE_PREVIEW:
        return value[:VALUE_PREVIEW] + "…"
    return value


def _explain_json(kv_text: str, d1_text: str) -> str:
    """A short DeepDiff account of how two JSON texts differ (only called on a mismatch)."""
    from deepdiff import DeepDiff

    try:
        delta = DeepDiff(parse_json_text(kv_text), parse_json_text(d1_text), verbose_level=1)
    except ValueError:
        return "D1 value is not valid JSON"
    parts = []
    for kind, items in delta.items():
        paths = list(items)[:3] if hasattr(items, "__iter__") else []
        parts.append(f"{kind.replace('_', ' ')}: {', '.join(str(p) for p in paths)}")
    return "; ".join(parts)[:400]


# --- merging the two streams ---------------------------------------------------------------


def merge_groups(
    kv: Iterable[KvRecord], d1: Iterable[D1Job]
) -> Iterator[tuple[GroupKey, list[KvRecord], list[D1Job]]]:
    """Pairs of same-(date, job type) groups from two streams sorted by that pair."""
    kv_groups = groupby(kv, key=lambda r: (r.job.key.execution_date, r.job.key.job_type))
    d1_groups = groupby(d1, key=lambda j: (j.job.key.execution_date, j.job.key.job_type))
    kv_next = next(kv_groups, None)
    d1_next = next(d1_groups, None)
    while kv_next is not None or d1_next is not None:
        if d1_next is None or (kv_next is not None and kv_next[0] < d1_next[0]):
            assert kv_next is not None
            yield kv_next[0], list(kv_next[1]), []
            kv_next = next(kv_groups, None)
        elif kv_next is None or d1_next[0] < kv_next[0]:
            yield d1_next[0], [], list(d1_next[1])
            d1_next = next(d1_groups, None)
        else:
            yield kv_next[0], list(kv_next[1]), list(d1_next[1])
            kv_next, d1_next = next(kv_groups, None), next(d1_groups, None)


def diff_streams(
    kv: Iterable[KvRecord], d1: Iterable[D1Job], ctx: DiffContext
) -> Iterator[Finding]:
    for group, kv_records, d1_jobs in merge_groups(kv, d1):
        ctx.groups_seen.add(group)
        yield from diff_group(group, kv_records, d1_jobs, ctx)


# --- one group -----------------------------------------------------------------------------


@dataclass
class _KvGroup:
    per_run: dict[str, KvRecord]
    daily: KvRecord | None


def _organise_kv(records: list[KvRecord], ctx: DiffContext) -> _KvGroup:
    per_run: dict[str, KvRecord] = {}
    daily: KvRecord | None = None
    statuses = [r for r in records if r.status_only and r.job.status]
    for r in records:
        if r.status_only:
            continue
        if r.job.key.run == LATEST:
            daily = daily or r
        else:
            per_run.setdefault(r.job.key.run, r)
    if daily is not None and any(_holds_run(daily, r) for r in per_run.values()):
        daily = None  # the daily key holds a run that has its own per-run key
    if statuses:
        status = statuses[0].job.status
        if per_run:
            last = max(per_run)
            per_run[last] = _with_status(per_run[last], status)
        elif daily is not None:
            daily = _with_status(daily, status)
        else:
            daily = statuses[0]
    return _KvGroup(per_run, daily)


def _holds_run(daily: KvRecord, run: KvRecord) -> bool:
    """Whether a daily record holds the run of a per-run record: the same value (bytes), or the
    same instant to the second by the payload's own time. Equal results are not enough: two
    runs of one day often agree, and a later run is a record of its own. Only a payload that
    says nothing of when it ran is matched by what it holds (nothing else tells it apart)."""
    if daily.value_sha256 and daily.value_sha256 == run.value_sha256:
        return True
    instant = _second(daily.job.execution_time)
    if instant is None:
        return _content(daily) == _content(run)
    return instant == _run_second(run)


def _content(record: KvRecord) -> tuple[Any, ...]:
    """What a record says of its run, without the key and instant a daily key words otherwise."""
    job = dataclasses.replace(record.job, key=JobKey("", "", ""), execution_time=None)
    return job, record.symbols, record.report


def _second(execution_time: str | None) -> dt.datetime | None:
    instant = parse_instant(execution_time) if execution_time else None
    return instant.replace(microsecond=0) if instant else None


def _run_second(record: KvRecord) -> dt.datetime | None:
    """A per-run record's instant: its execution time, else its key's ET run time."""
    key = record.job.key
    instant = _second(record.job.execution_time)
    if instant is None and len(key.run) == 6 and key.run.isdigit():
        instant = instant_of_run(key.execution_date, key.run)
    return instant


def _keyed_by_own_run(daily: KvRecord) -> KvRecord:
    """A daily record that is a run of its own, keyed by its ET run time when its payload says
    when it ran: backfill guards a latest record by its date, which the per-run rows of that date
    already hold, and a per-run record by its second."""
    text = daily.job.execution_time
    instant = parse_instant(text) if text else None
    if instant is None:
        return daily
    key = dataclasses.replace(daily.job.key, run=et_run_time(instant))
    job = dataclasses.replace(daily.job, key=key, execution_time=iso_utc(instant))
    return dataclasses.replace(daily, job=job)


def _with_status(record: KvRecord, status: str | None) -> KvRecord:
    return dataclasses.replace(record, job=dataclasses.replace(record.job, status=status))


def diff_group(
    group: GroupKey, kv: list[KvRecord], d1: list[D1Job], ctx: DiffContext
) -> Iterator[Finding]:
    known = _kv_json_texts(kv) if any(j.json_texts for j in d1) else ()
    for job in d1:
        yield from (_invalid_row(job, p) for p in row_problems(job, known))
    ctx.coverage.d1_executions += len(d1)
    ctx.coverage.d1_symbol_results += sum(len(j.symbols) for j in d1)
    ctx.coverage.d1_reports += sum(len(j.reports) for j in d1)
    kv_group = _organise_kv(kv, ctx)
    by_run: dict[str, list[D1Job]] = defaultdict(list)
    for job in sorted(d1, key=lambda j: j.row_id):
        by_run[job.job.key.run].append(job)
    yield from _duplicates(by_run)
    matched: set[str] = set()
    for run, record in sorted(kv_group.per_run.items()):
        yield from _compare_job(record, by_run.get(run), ctx)
        matched.add(run)
    if kv_group.daily is not None:
        yield from _compare_daily(kv_group, by_run, ctx)
        matched.update(by_run)  # a daily key says nothing about the earlier runs of its day
    for run, jobs in sorted(by_run.items()):
        if group in ctx.kv_invalid_groups:
            break  # KV has a key for this job, just not a readable one: already a finding
        if run not in matched and _should_have_kv(group, bool(kv_group.per_run), ctx):
            yield _orphan_job(jobs[0])


def _compare_daily(
    kv_group: _KvGroup, by_run: dict[str, list[D1Job]], ctx: DiffContext
) -> Iterator[Finding]:
    """The daily record against the latest D1 execution of its date no per-run key claims."""
    daily = kv_group.daily
    assert daily is not None
    unclaimed = (r for r in by_run if not r.startswith("?") and r not in kv_group.per_run)
    latest = max(unclaimed, default=None)
    if latest is None and kv_group.per_run:
        daily = _keyed_by_own_run(daily)
    yield from _compare_job(daily, by_run[latest] if latest else None, ctx)


def _kv_json_texts(records: list[KvRecord]) -> set[str]:
    """The JSON texts of a group's KV records (canonical JSON, so valid): a D1 text equal to
    one of them needs no parsing to be known valid."""
    texts: set[str] = set()
    for r in records:
        if r.report is not None and r.report.content is not None:
            texts.add(r.report.content)
        for s in r.symbols:
            if s.signals is not None:
                texts.add(s.signals)
            if s.technical_data is not None:
                texts.add(s.technical_data)
        if r.job.metadata is not None:
            texts.add(r.job.metadata)
    return texts


def _should_have_kv(group: GroupKey, kv_tracks_runs: bool, ctx: DiffContext) -> bool:
    date, job_type = group
    if kv_tracks_runs:
        return True
    first = ctx.kv_first_date.get(job_type)
    if first is not None and date >= first:
        return True
    ttl = ctx.ttl_of.get(job_type, 0)
    if not is_date(date):  # e.g. 2026-11-31: an invalid_d1_row already says what is wrong
        return False
    end_of_day = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
    return ctx.now < end_of_day + dt.timedelta(seconds=ttl)


def _invalid_row(job: D1Job, p: RowProblem) -> Finding:
    nk = f"{p.table}#{p.row_id}"
    return finding(
        Category.INVALID_D1_ROW,
        nk,
        f"{p.table} row {p.row_id}: {p.reason}",
        id_parts=(p.field,),
        table=p.table,
        row_id=p.row_id,
        field=p.field,
        d1_value=_preview(p.value),
    )


def _duplicates(by_run: dict[str, list[D1Job]]) -> Iterator[Finding]:
    for jobs in by_run.values():
        if len(jobs) > 1:
            key = jobs[0].job.key
            ids = [j.row_id for j in jobs]
            yield finding(
                Category.DUPLICATE_IN_D1,
                str(key),
                f"{len(jobs)} job_executions rows for {key}: ids {ids}",
                id_parts=(Table.JOB_EXECUTIONS,),
                table=Table.JOB_EXECUTIONS,
                row_id=ids[1],
                d1_value=ids,
            )


def _orphan_job(job: D1Job) -> Finding:
    key = job.job.key
    return finding(
        Category.ORPHAN_IN_D1,
        str(key),
        f"job_executions row {job.row_id} ({key}) has no KV record though its key should still exist",
        id_parts=(Table.JOB_EXECUTIONS,),
        table=Table.JOB_EXECUTIONS,
        row_id=job.row_id,
    )


def _missing(
    record: KvRecord, table: Table, natural_key: str, what: str, ctx: DiffContext
) -> Finding:
    category = Category.MISSING_IN_D1
    expires = record.expiration
    if (
        expires is not None
        and dt.datetime.fromtimestamp(expires, dt.UTC) - ctx.now < EXPIRING_WITHIN
    ):
        category = Category.EXPIRING_SOON
        what += f"; its KV key expires at {dt.datetime.fromtimestamp(expires, dt.UTC):%Y-%m-%d %H:%M} UTC"
    fid = stable_id(Category.MISSING_IN_D1.value, natural_key, table)
    return Finding(
        fid,
        category,
        SEVERITY_OF[category],
        natural_key,
        what,
        kv_key=record.kv_key,
        table=table,
        shape=record.shape,
        expiration=expires,
        record=record,
    )


def _compare_job(
    record: KvRecord, d1_jobs: list[D1Job] | None, ctx: DiffContext
) -> Iterator[Finding]:
    key = record.job.key
    if not d1_jobs:
        yield _missing(
            record, Table.JOB_EXECUTIONS, str(key), f"{key} (KV {record.kv_key}) is not in D1", ctx
        )
        return
    d1 = d1_jobs[0]
    ctx.coverage.records_matched += 1
    fields = ("status",) if record.status_only else JOB_COMPARED_FIELDS
    yield from _compare_fields(
        record, str(key), Table.JOB_EXECUTIONS, d1.row_id, record.job, d1.job, fields, ctx
    )
    if record.status_only:
        return
    if record.report is None:
        yield from _compare_symbols(record, d1, ctx)
    else:
        yield from _compare_report(record, d1, ctx)


def _compare_fields(
    record: KvRecord,
    natural_key: str,
    table: Table,
    row_id: int,
    kv_obj: Any,
    d1_obj: Any,
    fields: tuple[str, ...],
    ctx: DiffContext,
) -> Iterator[Finding]:
    get = _getter(fields)
    kv_values, d1_values = get(kv_obj), get(d1_obj)
    if kv_values == d1_values and list(map(type, kv_values)) == list(map(type, d1_values)):
        return  # byte-for-byte equal, no rule needed: the common case, checked in C
    absent: frozenset[str] = kv_obj.absent
    unwritten = UNWRITTEN_COLUMNS.get(table, frozenset())
    for name in fields:
        if name in absent:
            continue  # the payload does not carry it: D1 may know more than KV
        kv_value, d1_value = getattr(kv_obj, name), getattr(d1_obj, name)
        equal, rule = compare_field(name, kv_value, d1_value)
        if equal:
            if rule:
                ctx.coverage.equal_by_rule[rule] = ctx.coverage.equal_by_rule.get(rule, 0) + 1
            continue
        if d1_value is None and name in unwritten:
            column = f"{table}.{name}"  # never written by the adapter: counted, not a finding
            ctx.coverage.unwritten_nulls[column] = ctx.coverage.unwritten_nulls.get(column, 0) + 1
            continue
        message = f"{table}.{name} differs for {natural_key}: KV {_preview(kv_value)!r} vs D1 {_preview(d1_value)!r}"
        if name in JSON_FIELDS and isinstance(kv_value, str) and isinstance(d1_value, str):
            message = (
                f"{table}.{name} differs for {natural_key}: {_explain_json(kv_value, d1_value)}"
            )
        yield finding(
            Category.FIELD_MISMATCH,
            natural_key,
            message,
            id_parts=(table, name),
            kv_key=record.kv_key,
            table=table,
            row_id=row_id,
            field=name,
            shape=record.shape,
            kv_value=_preview(kv_value),
            d1_value=_preview(d1_value),
        )


@functools.cache
def _getter(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The fields' values as a tuple (even for one field)."""
    if len(fields) == 1:
        name = fields[0]
        return lambda obj: (getattr(obj, name),)
    return operator.attrgetter(*fields)


def _compare_symbols(record: KvRecord, d1: D1Job, ctx: DiffContext) -> Iterator[Finding]:
    job_key = str(record.job.key)
    d1_by_symbol: dict[str, list[Any]] = defaultdict(list)
    for s in d1.symbols:
        d1_by_symbol[s.result.symbol].append(s)
    for result in record.symbols:
        nk = f"{job_key}/{result.symbol}"
        rows = d1_by_symbol.pop(result.symbol, [])
        if not rows:
            yield _missing(
                record,
                Table.ANALYSIS_RESULTS,
                nk,
                f"symbol result {nk} (KV {record.kv_key}) is not in D1",
                ctx,
            )
            continue
        if len(rows) > 1:
            ids = [r.row_id for r in rows]
            yield finding(
                Category.DUPLICATE_IN_D1,
                nk,
                f"{len(rows)} analysis_results rows for {nk}: ids {ids}",
                id_parts=(Table.ANALYSIS_RESULTS,),
                table=Table.ANALYSIS_RESULTS,
                row_id=ids[1],
                d1_value=ids,
                kv_key=record.kv_key,
            )
        yield from _compare_fields(
            record,
            nk,
            Table.ANALYSIS_RESULTS,
            rows[0].row_id,
            result,
            rows[0].result,
            SYMBOL_COMPARED_FIELDS,
            ctx,
        )
    for symbol, rows in sorted(d1_by_symbol.items()):
        nk = f"{job_key}/{symbol}"
        yield finding(
            Category.ORPHAN_IN_D1,
            nk,
            f"analysis_results row {rows[0].row_id} ({nk}) is not in KV {record.kv_key}",
            id_parts=(Table.ANALYSIS_RESULTS,),
            table=Table.ANALYSIS_RESULTS,
            row_id=rows[0].row_id,
            kv_key=record.kv_key,
        )


def _compare_report(record: KvRecord, d1: D1Job, ctx: DiffContext) -> Iterator[Finding]:
    report = record.report
    assert report is not None
    nk = f"{record.job.key}/report:{report.report_type}"
    rows = [r for r in d1.reports if r.report.report_type == report.report_type]
    if not rows:
        yield _missing(
            record,
            Table.REPORT_SNAPSHOTS,
            nk,
            f"report snapshot {nk} (KV {record.kv_key}) is not in D1",
            ctx,
        )
        return
    if len(rows) > 1:
        ids = [r.row_id for r in rows]
        yield finding(
            Category.DUPLICATE_IN_D1,
            nk,
            f"{len(rows)} report_snapshots rows for {nk}: ids {ids}",
            id_parts=(Table.REPORT_SNAPSHOTS,),
            table=Table.REPORT_SNAPSHOTS,
            row_id=ids[1],
            d1_value=ids,
            kv_key=record.kv_key,
        )
    yield from _compare_fields(
        record,
        nk,
        Table.REPORT_SNAPSHOTS,
        rows[0].row_id,
        report,
        rows[0].report,
        REPORT_COMPARED_FIELDS,
        ctx,
    )


def schedule_gaps(expected: Iterable[tuple[str, str]], seen: set[GroupKey]) -> Iterator[Finding]:
    """A job the schedule expects on a trading day that neither KV nor D1 holds."""
    for date, job_type in expected:
        if (date, job_type) not in seen:
            key = JobKey(date, job_type, LATEST)
            yield finding(
                Category.SCHEDULE_GAP,
                str(key),
                f"no {job_type} job on {date} in KV or D1, though the schedule expects one",
            )


def invalid_payload_finding(
    kv_key: str, job_key: JobKey, reason: str, expiration: int | None
) -> Finding:
    return finding(
        Category.INVALID_KV_PAYLOAD,
        str(job_key),
        f"KV {kv_key}: {reason}",
        id_parts=(kv_key,),
        kv_key=kv_key,
        expiration=expiration,
    )
