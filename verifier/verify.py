"""One verification run: list and fetch KV, normalise, spool in natural-key order, diff with D1.

KV lists in key order, which is not the model's (date, job type) order, so normalised records
go to a temporary SQLite spool and come back sorted; memory stays bounded whatever the size
of the namespace. D1 streams in that order directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import pickle
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from verifier import parallel
from verifier.calendar import expected_jobs, is_date, today_et, warm_calendar
from verifier.clock import AsOf, RunClock
from verifier.d1 import iter_d1_jobs, missing_plan_tables
from verifier.diff import DiffContext, diff_streams, invalid_payload_finding, schedule_gaps
from verifier.errors import D1SchemaError
from verifier.model import Coverage, Finding, JobKey, KeyInfo, KvRecord, Window
from verifier.normalise import InvalidPayload, normalise_entry
from verifier.parallel import (
    Plan,
    Work,
    can_fork,
    cut,
    run_in_two,
    split_dates,
    write_run_names,
)
from verifier.profile import KeyMatch, Profile
from verifier.sources import CountingKvSource, D1Source, KvSource

# KV value bytes whose records are sorted in memory before the spool goes to disk (the records
# take about 2-3x their JSON's size as objects): what a process holds at most, whatever the size
# of the namespace (about 5,000 job keys, half of the benchmark's 100k keys, never spill).
SPOOL_MEMORY_BYTES = 12 * 1024 * 1024
FETCH_BATCH = 400  # a multiple of the bulk-get limit (100), so requests stay at ⌈N/100⌉
Progress = Callable[[str, int], None]
Report = Callable[[int], None]
_Listed = TypeVar("_Listed")

SCHEMA_HINT = "apply the plan's schema first: wrangler d1 execute {db} --local --file schema/scheduled-jobs.sql"


def _preload(calendar: str, today: str) -> None:
    """What the forked child loads while its parent lists the keys: DeepDiff (a run's first
    mismatch would load it) and the holiday calendar, so that on a machine without the holiday
    cache yet the child computes and writes it and the parent, at the schedule's gaps, reads
    the file instead of importing the library."""
    import deepdiff  # noqa: F401

    warm_calendar(calendar, today, today)


@contextlib.contextmanager
def _existing_objects_frozen() -> Iterator[None]:
    """Leave the objects that exist when a run starts (modules, schemas: a few hundred
    thousand) out of the cyclic collector's passes while it runs. A run allocates millions of
    acyclic objects; each full pass would walk the imports again (~9 ms at 100k keys) and, in a
    forked child, copy the parent's pages. A caller that froze objects itself keeps its freeze."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _names_by_run(by_date: dict[str, list[str]], runs: list[Window]) -> Iterator[list[str]]:
    """The names of each run's dates (the runs cut the window in order, so each run takes the
    next dates it contains)."""
    dates, i = sorted(by_date), 0
    for run in runs:
        names: list[str] = []
        while i < len(dates) and run.contains(dates[i]):
            names.extend(by_date[dates[i]])
            i += 1
        yield names


def _count(record: KvRecord, cov: Coverage) -> None:
    cov.kv_records += 1
    cov.kv_symbol_results += len(record.symbols)
    cov.kv_reports += record.report is not None
    cov.shapes[record.shape] = cov.shapes.get(record.shape, 0) + 1


class RecordSpool:
    """Normalised KV records, read back in (date, job type, run) order: an external sort.

    Records stay in memory while their KV values add up to `memory_bytes`; past that, they go
    to a temporary SQLite file (pickled, with their sort key) and come back through an index.
    Memory is bounded by the buffer, whatever the size of the namespace; a namespace that fits
    is sorted in memory and never pays for pickling.
    """

    def __init__(self, directory: Path | None = None, *, memory_bytes: int = SPOOL_MEMORY_BYTES):
        self._directory = directory
        self._memory_bytes = memory_bytes
        self._buffer: list[tuple[tuple[str, str, str, int], KvRecord]] = []
        self._buffered_bytes = 0
        self._seq = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None

    def add_many(self, records: list[KvRecord], sizes: list[int] | None = None) -> None:
        """Add records; `sizes` (their KV values' bytes) count against the memory budget."""
        for r in records:
            self._seq += 1
            k = r.job.key
            self._buffer.append(((k.execution_date, k.job_type, k.run, self._seq), r))
        self._buffered_bytes += sum(sizes) if sizes is not None else 2048 * len(records)
        if self._buffered_bytes > self._memory_bytes:
            self._spill()

    def _spill(self) -> None:
        if self._db is None:
            self._dir = tempfile.TemporaryDirectory(prefix="kv2d1-spool-", dir=self._directory)
            self._db = sqlite3.connect(Path(self._dir.name) / "spool.sqlite")
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE spool (date TEXT, job_type TEXT, run TEXT, seq INTEGER, record BLOB)"
            )
        self._db.executemany(
            "INSERT INTO spool VALUES (?, ?, ?, ?, ?)",
            [(*key, pickle.dumps(r, protocol=5)) for key, r in self._buffer],
        )
        self._buffer, self._buffered_bytes = [], 0

    def __iter__(self) -> Iterator[KvRecord]:
        if self._db is None:
            self._buffer.sort(key=_sort_key)
            for _, record in self._buffer:
                yield record
            return
        if self._buffer:
            self._spill()
        cursor = self._db.execute("SELECT record FROM spool ORDER BY date, job_type, run, seq")
        for (blob,) in cursor:
            yield pickle.loads(blob)

    def close(self) -> None:
        self._buffer = []
        if self._db is not None:
            self._db.close()
        if self._dir is not None:
            self._dir.cleanup()


def _sort_key(item: tuple[tuple[str, str, str, int], KvRecord]) -> tuple[str, str, str, int]:
    return item[0]


@dataclass
class Verification:
    """A verify run. Iterate `findings()` once; `coverage` fills in while it streams."""

    kv: KvSource
    d1: D1Source
    profile: Profile
    window: Window = field(default_factory=Window)
    now: dt.datetime = field(kw_only=True)  # the run's `as_of` (`verifier.clock`)
    started: dt.datetime | None = field(default=None, kw_only=True)  # the run's start (else now)
    as_of_from: AsOf = field(default=AsOf.OPTION, kw_only=True)
    d1_chunk: int | None = None  # executions per D1 read (None: one read of the window)
    workers: int | None = None  # processes for local state and snapshots (None: `parallel`)
    progress: Progress | None = None
    d1_name: str = "<database>"
    coverage: Coverage = field(default_factory=Coverage)

    @property
    def clock(self) -> RunClock:
        """The run's instants: `now` judges the data, `started` stamps what the run writes."""
        return RunClock(self.now, self.started or self.now, self.as_of_from)

    def findings(self) -> Iterator[Finding]:
        with _existing_objects_frozen():
            yield from self._findings()

    def _findings(self) -> Iterator[Finding]:
        self._check_schema()
        ctx = DiffContext(self.now, self.coverage, ttl_of=self._ttls())
        report = self._report()
        listed = self.kv.count_keys() if isinstance(self.kv, CountingKvSource) else None
        if can_fork(self.kv, self.d1, self.workers) and (listed or 0) >= parallel.PARALLEL_MIN_LISTED:
            yield from self._in_two(ctx, report, listed or 0)
        else:
            pairs = self._matches(self.kv, self.window, ctx, listed)
            yield from self._part(self.window, ctx, self.kv, self.d1, report, pairs)
        yield from self._schedule_gaps(ctx)

    def _report(self) -> Report | None:
        """Progress of the KV fetch as a count of keys (the parallel path adds the child's)."""
        progress = self.progress
        if progress is None:
            return None
        return lambda n: progress("kv", n)

    def _part(
        self,
        window: Window,
        ctx: DiffContext,
        kv: KvSource,
        d1: D1Source,
        report: Report | None,
        pairs: Iterable[tuple[KeyInfo, KeyMatch]],
    ) -> Iterator[Finding]:
        """Verify the dates of `window`: the KV keys of `pairs` into the spool, then merge-joined
        with D1's rows of those dates."""
        spool = RecordSpool()
        try:
            yield from self._load_kv(kv, pairs, spool, ctx, report)
            d1_jobs = iter_d1_jobs(d1, window, per_chunk=self.d1_chunk)
            yield from diff_streams(spool, d1_jobs, ctx)
        finally:
            spool.close()

    def _in_two(self, ctx: DiffContext, report: Report | None, listed: int) -> Iterator[Finding]:
        """Verify runs of dates in this process and a forked child, findings in order."""

        def make_plan(folder: str) -> Plan:
            by_date = self._scan(ctx, listed)
            ends = split_dates(Counter({d: len(names) for d, names in by_date.items()}))
            runs = cut(self.window, ends)
            path, spans = write_run_names(folder, _names_by_run(by_date, runs))
            return Plan(runs, path, spans, dict(ctx.kv_first_date))

        def over(kv: KvSource, d1: D1Source, plan: Plan) -> Work:
            def work(i: int, ctx: DiffContext, report: Report | None) -> Iterator[Finding]:
                pairs = self._rematch(plan.run_names(i))
                return self._part(plan.runs[i], ctx, kv, d1, report, pairs)

            return work

        calendar, today = self.profile.calendar, today_et(self.now)

        def child(plan: Plan) -> tuple[Work, DiffContext]:
            own = DiffContext(self.now, Coverage(), kv_first_date=plan.kv_first_date, ttl_of=ctx.ttl_of)
            return over(self.kv.reopened(), self.d1.reopened(), plan), own  # type: ignore[attr-defined]

        yield from run_in_two(
            make_plan,
            lambda plan: over(self.kv, self.d1, plan),
            child,
            ctx,
            prepare=lambda: _preload(calendar, today),
            progress=report,
        )

    def _check_schema(self) -> None:
        missing = missing_plan_tables(self.d1)
        if missing:
            raise D1SchemaError(
                f"{self.d1.describe()} lacks the plan's "
                f"{', '.join(missing)}; {SCHEMA_HINT.format(db=self.d1_name)}"
            )

    def _ttls(self) -> dict[str, int]:
        return {jt: self.profile.ttl_for(jt) for jt in self.profile.schedule}

    def _scan(self, ctx: DiffContext, listed: int) -> dict[str, list[str]]:
        """List once, counting keys (coverage) and each job type's first KV date; the matched
        key names of the window by date, to split the work by (names only: ~80 bytes a key)."""
        kv = self.kv
        assert isinstance(kv, CountingKvSource)  # `listed` came from it
        by_date: dict[str, list[str]] = {}
        for name in self._under_prefixes(listed, ctx.coverage, kv.iter_key_names):
            match = self._classify(name, self.window, ctx)
            if match is not None:
                by_date.setdefault(match.date, []).append(name)
        return by_date

    def _rematch(self, names: list[str]) -> Iterator[tuple[KeyInfo, KeyMatch]]:
        """A run's scanned keys with their matches again (fetching needs only the name; the
        listing's expiration and metadata come back with the value)."""
        for name in names:
            match = self.profile.match(name)
            if match is not None:
                yield KeyInfo(name), match

    def _matches(
        self, kv: KvSource, window: Window, ctx: DiffContext, listed: int | None
    ) -> Iterator[tuple[KeyInfo, KeyMatch]]:
        """The listed keys a pattern maps to a job in `window` (see `_classify`)."""
        for info in self._candidates(kv, ctx.coverage, listed):
            match = self._classify(info.name, window, ctx)
            if match is not None:
                yield info, match

    def _classify(self, name: str, window: Window, ctx: DiffContext) -> KeyMatch | None:
        """The key's match if it maps to a job in `window`; counts the skipped and out-of-window
        keys, and notes each job type's first KV date (orphans before it are not flagged)."""
        cov = ctx.coverage
        match = self.profile.match(name)
        if match is None:
            cov.keys_skipped_by_pattern += 1
            return None
        if not window.contains(match.date):
            cov.keys_outside_window += 1
            return None
        if match.date < ctx.kv_first_date.get(match.job_type, "9999"):
            ctx.kv_first_date[match.job_type] = match.date
        return match

    def _load_kv(
        self,
        kv: KvSource,
        pairs: Iterable[tuple[KeyInfo, KeyMatch]],
        spool: RecordSpool,
        ctx: DiffContext,
        report: Report | None,
    ) -> Iterator[Finding]:
        batch: list[tuple[KeyInfo, KeyMatch]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= FETCH_BATCH:
                yield from self._fetch(kv, batch, spool, ctx, report)
                batch = []
        if batch:
            yield from self._fetch(kv, batch, spool, ctx, report)

    def _candidates(self, kv: KvSource, cov: Coverage, listed: int | None) -> Iterator[KeyInfo]:
        """The listed keys a pattern may match; the others are only counted.

        A source that counts its keys (`listed` of them) lists just the profile's prefixes; any
        other lists every key (remotely, the listing the request budget assumes) and is
        filtered here.
        """
        if isinstance(kv, CountingKvSource) and listed is not None:
            yield from self._under_prefixes(listed, cov, kv.iter_keys)
            return
        prefixes = self.profile.prefixes  # one C-level test skips most unrelated keys
        for info in kv.iter_keys():
            cov.keys_listed += 1
            if info.name.startswith(prefixes):
                yield info
            else:
                cov.keys_skipped_by_pattern += 1

    def _under_prefixes(
        self, total: int, cov: Coverage, listing: Callable[[str], Iterator[_Listed]]
    ) -> Iterator[_Listed]:
        """What `listing(prefix)` gives for each of the profile's prefixes, each counted as
        listed; the rest of the `total` keys are counted as listed and skipped, not listed."""
        considered = 0
        for prefix in self.profile.listing_prefixes:
            for item in listing(prefix):
                considered += 1
                yield item
        others = max(total - considered, 0)
        cov.keys_listed += considered + others
        cov.keys_skipped_by_pattern += others

    def _fetch(
        self,
        kv: KvSource,
        batch: list[tuple[KeyInfo, KeyMatch]],
        spool: RecordSpool,
        ctx: DiffContext,
        report: Report | None,
    ) -> Iterator[Finding]:
        matches = {info.name: match for info, match in batch}
        records: list[KvRecord] = []
        sizes: list[int] = []
        cov = ctx.coverage
        for entry in kv.get_many([info.name for info, _ in batch]):
            match = matches[entry.key]
            cov.keys_matched += 1
            result = normalise_entry(entry, match, self.profile)
            if isinstance(result, InvalidPayload):
                ctx.kv_invalid_groups.add((match.date, match.job_type))
                key = JobKey(match.date, match.job_type, match.run)
                yield invalid_payload_finding(entry.key, key, result.reason, result.expiration)
                continue
            records.append(result)
            sizes.append(len(entry.value))
            _count(result, cov)
        spool.add_many(records, sizes)
        if report:
            report(cov.keys_matched)

    def _schedule_gaps(self, ctx: DiffContext) -> Iterator[Finding]:
        seen = ctx.groups_seen | ctx.kv_invalid_groups if ctx.kv_invalid_groups else ctx.groups_seen
        dates = [d for d, _ in seen if is_date(d)]  # a D1 row dated 2026-11-31 is invalid_d1_row
        since = self.window.since or min(dates, default=None)
        yesterday = (dt.date.fromisoformat(today_et(self.now)) - dt.timedelta(days=1)).isoformat()
        until = min(self.window.until or max(dates, default=yesterday), yesterday)
        if since is None or since > until:
            return
        yield from schedule_gaps(
            expected_jobs(since, until, self.profile.schedule, self.profile.calendar), seen
        )
