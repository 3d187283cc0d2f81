"""Verifying a window in two processes that share out runs of dates.

The window is cut into runs of whole dates holding about as many matched KV keys each (at least
`CHUNKS` runs, at most about `RUN_KEYS` keys a run, the last `TAPER` runs in halves); the parent
and one forked child take runs from a shared queue until none is left, and verify each run as
the single-process verify does (fetch, normalise, spool, merge-join with D1), so the diff's
groups, (date, job type), never straddle two runs. Taking runs from a queue balances the load
whatever the cost of a date (old analysis payloads cost several times a status key); short
runs at the end let both processes finish together; each run reads its key names from a file,
so neither process holds the whole listing.

Findings come out in run order, as one process gives them: the parent streams a run the
moment every earlier run is out, and parks the others (its own and the child's) in temporary
files until then. Only `invalid_kv_payload` findings, which one process yields while it loads
all of KV, come out with their run. What the processes must agree on (each job type's first KV
date, the profile, the clock) is settled before the fork.

Only sources that can be opened again in the child (local state, snapshots: `reopened()`) run in
two processes, on Linux with two or more cores, for namespaces of `PARALLEL_MIN_LISTED` or more
keys and windows of `PARALLEL_MIN_KEYS` or more matched keys. `KV2D1_WORKERS=1` keeps a run in
one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import multiprocessing
import os
import pickle
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from verifier.diff import DiffContext
from verifier.errors import Kv2d1Error
from verifier.model import Coverage, Finding, Window

PARALLEL_MIN_KEYS = 2000  # matched keys: below this, a fork costs more than it saves
PARALLEL_MIN_LISTED = 20_000  # listed keys before the child is forked (it loads while we list)
CHUNKS = 32  # runs of dates at least: the last one taken bounds the idle time of the other process
TAPER = 4  # the last runs, cut in halves
RUN_KEYS = 400  # matched keys a run holds at most (more runs as the window grows): what a run
#                 holds in memory stays what it is at 100k keys, whatever the size
WORKERS_ENV = "KV2D1_WORKERS"
_BATCH = 256
_POLL_S = 0.1

Report = Callable[[int], None]


def workers_wanted(workers: int | None) -> int:
    """How many processes a run may use: `workers`, else `KV2D1_WORKERS`, else the cores (≤ 2)."""
    if workers is None:
        raw = os.environ.get(WORKERS_ENV, "").strip()
        workers = int(raw) if raw.isdigit() else None
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 2)
    return max(1, min(workers, 2))


def can_fork(kv: Any, d1: Any, workers: int | None) -> bool:
    """Whether this run may split: two processes wanted, `fork` available, sources reopenable."""
    return (
        workers_wanted(workers) >= 2
        and hasattr(os, "fork")
        and sys.platform.startswith("linux")  # macOS: fork after threads is unsafe
        and callable(getattr(kv, "reopened", None))
        and callable(getattr(d1, "reopened", None))
    )


def split_dates(
    dates: Counter[str], *, minimum: int | None = None, chunks: int = CHUNKS, most: int = RUN_KEYS
) -> list[str]:
    """The dates ending each run but the last: runs of about `1/chunks` of the keys each, or
    of about `most` keys when that makes more runs, the last `TAPER` of them cut in halves (the
    last runs taken are short, so the two processes finish close together). A date is never
    split, so a run holding one date may hold more.

    Empty (no split) when there are fewer than `minimum` (default `PARALLEL_MIN_KEYS`) keys or
    a single date.
    """
    total = sum(dates.values())
    if total < (PARALLEL_MIN_KEYS if minimum is None else minimum) or len(dates) < 2:
        return []
    n = max(chunks, -(-total // most))
    taper = min(TAPER, n // 2)
    # where each run ends, in half runs: whole runs, then `taper` runs in halves
    marks = [*range(2, 2 * (n - taper) + 1, 2), *range(2 * (n - taper) + 1, 2 * n)]
    ends: list[str] = []
    seen, j = 0, 0
    for date in sorted(dates)[:-1]:
        seen += dates[date]
        if j < len(marks) and seen * 2 * n >= marks[j] * total:
            ends.append(date)
            while j < len(marks) and seen * 2 * n >= marks[j] * total:
                j += 1
    return ends


def cut(window: Window, ends: list[str]) -> list[Window]:
    """The window in runs ending at each of `ends`, then the rest. `date + NUL` is the least
    string greater than `date`, so every date (well-formed or not) falls in exactly one run."""
    runs, since = [], window.since
    for end in ends:
        runs.append(Window(since, end))
        since = end + "\x00"
    runs.append(Window(since, window.until))
    return runs


def merge_coverage(into: Coverage, other: Coverage) -> None:
    """Add `other`'s counts (and its per-rule, per-shape counts) to `into`."""
    for f in dataclasses.fields(Coverage):
        value = getattr(other, f.name)
        if isinstance(value, dict):
            target = getattr(into, f.name)
            for key, n in value.items():
                target[key] = target.get(key, 0) + n
        else:
            setattr(into, f.name, getattr(into, f.name) + value)


class RunQueue:
    """Run numbers 0…n-1, each taken once by whichever process asks first (shared by fork).

    `n` is set after the fork, once the parent has listed the keys and cut the window.
    """

    def __init__(self) -> None:
        self._lock = multiprocessing.get_context("fork").Lock()
        self._shared = mmap.mmap(-1, 16)  # next run to take, number of runs

    def set_size(self, n: int) -> None:
        struct.pack_into("q", self._shared, 8, n)

    def __iter__(self) -> Iterator[int]:
        while True:
            with self._lock:
                taken, n = struct.unpack_from("qq", self._shared, 0)
                if taken >= n:
                    return
                struct.pack_into("q", self._shared, 0, taken + 1)
            yield taken

    def close(self) -> None:
        self._shared.close()


@dataclass(frozen=True)
class Plan:
    """What both processes work from: the runs of dates, where each run's matched key names
    are (`run_names`), and each job type's first KV date (the listing's, which only the parent
    did)."""

    runs: list[Window]
    names_file: str
    spans: list[tuple[int, int]]  # (offset, length) of each run's names in `names_file`
    kv_first_date: dict[str, str]

    def run_names(self, i: int) -> list[str]:
        """The matched key names of run i, in date order (read from the file: neither process
        holds every run's names)."""
        offset, length = self.spans[i]
        with open(self.names_file, "rb") as source:
            source.seek(offset)
            names: list[str] = pickle.loads(source.read(length))
        return names


def write_run_names(folder: str, per_run: Iterator[list[str]]) -> tuple[str, list[tuple[int, int]]]:
    """Each run's names, one after the other, in a file of `folder`: its path and the spans."""
    path = os.path.join(folder, "names.pickle")
    spans = []
    with open(path, "wb") as out:
        for names in per_run:
            blob = pickle.dumps(names, protocol=5)
            spans.append((out.tell(), len(blob)))
            out.write(blob)
    return path, spans


Work = Callable[[int, DiffContext, Report | None], Iterator[Finding]]
ChildWork = Callable[[Plan], tuple[Work, DiffContext]]


def run_in_two(
    make_plan: Callable[[str], Plan],
    work: Callable[[Plan], Work],
    child_work: ChildWork,
    ctx: DiffContext,
    *,
    prepare: Callable[[], None] = lambda: None,
    progress: Report | None = None,
) -> Iterator[Finding]:
    """Verify runs of dates in this process and a forked child; findings in run order.

    The child is forked first and `prepare`s (loads what every run needs) while the parent
    lists the keys and cuts the window (`make_plan(folder)`, which may keep files in the
    run's temporary folder); the plan goes to the child through a file. `work(plan)(i, ctx, report)` verifies run i; in the child, `child_work(plan)` gives
    the function to use (over reopened sources) and the child's own context. A plan of one
    run sends the child away and runs here. `ctx` (the parent's) takes in the child's coverage
    and the groups it saw. An error in the child is raised here, as the child raised it.
    """
    queue = RunQueue()
    folder = tempfile.mkdtemp(prefix="kv2d1-runs-")
    counter = mmap.mmap(-1, 8)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(write_end)
        _child(prepare, read_end, child_work, queue, folder, counter, parent)
    os.close(read_end)
    try:
        plan = make_plan(folder)
        alone = len(plan.runs) < 2
        queue.set_size(len(plan.runs))
        fd, write_end = write_end, -1  # `_send` closes it
        _send(fd, folder, None if alone else plan)
        report = (lambda n: progress(n + _read(counter))) if progress else None
        mine, emitted = work(plan), 0
        for i in queue:
            if i == emitted:  # every earlier run is out: stream this one
                yield from mine(i, ctx, report)
                emitted += 1
            else:
                _park(mine(i, ctx, report), _run_file(folder, i))
        if alone:
            _reap(pid)  # it read "nothing to do" and left
            pid = 0
            return
        own = ctx.coverage.keys_matched
        status = _wait(pid, lambda: progress(own + _read(counter)) if progress else None)
        pid = 0
        _take_in(folder, ctx, status)
        if progress:
            progress(ctx.coverage.keys_matched)
        for i in range(emitted, len(plan.runs)):
            yield from _replay(_run_file(folder, i))
    finally:
        if write_end >= 0:
            os.close(write_end)
        if pid:
            _stop(pid)
        counter.close()
        queue.close()
        shutil.rmtree(folder, ignore_errors=True)


def _send(fd: int, folder: str, plan: Plan | None) -> None:
    """The plan to the child (None: nothing to do). The plan goes to a file and one byte down
    the pipe says it is there: a plan of thousands of runs (tens of millions of keys) would fill
    the pipe and hold the parent until the child has loaded what it preloads."""
    try:
        if plan is not None:
            with open(os.path.join(folder, "plan.pickle"), "wb") as out:
                pickle.dump(plan, out, protocol=5)
        with contextlib.suppress(BrokenPipeError):  # the child is gone: its status says why
            os.write(fd, b"0" if plan is None else b"1")
    finally:
        os.close(fd)


def _receive(fd: int, folder: str) -> Plan | None:  # pragma: no cover - runs in the child
    """The plan the parent sent, or None (nothing to do, or the parent stopped before sending)."""
    try:
        sent = os.read(fd, 1)
    finally:
        os.close(fd)
    if sent != b"1":
        return None
    with open(os.path.join(folder, "plan.pickle"), "rb") as source:
        plan: Plan = pickle.load(source)
    return plan


def _run_file(folder: str, i: int) -> str:
    return os.path.join(folder, f"run-{i:04d}.pickle")


def _park(findings: Iterator[Finding], name: str) -> None:
    """Write a run's findings to a file, in batches (memory stays bounded)."""
    with open(name, "wb") as out:
        batch: list[Finding] = []
        for finding in findings:
            batch.append(finding)
            if len(batch) >= _BATCH:
                pickle.dump(batch, out, protocol=5)
                batch = []
        pickle.dump(batch, out, protocol=5)


def _replay(name: str) -> Iterator[Finding]:
    with open(name, "rb") as source:
        while True:
            try:
                batch = pickle.load(source)
            except EOFError:
                return
            yield from batch


def _child(
    prepare: Callable[[], None],
    read_end: int,
    child_work: ChildWork,
    queue: RunQueue,
    folder: str,
    counter: mmap.mmap,
    parent: int,
) -> None:  # pragma: no cover - runs in the forked child
    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent decides what Ctrl-C does
        try:
            prepare()
            plan = _receive(read_end, folder)
            if plan is None:
                os._exit(0)  # one run: the parent does it alone
            work, own = child_work(plan)
            report: Report = lambda n: _report(counter, n, parent)  # noqa: E731
            for i in queue:
                _park(work(i, own, report), _run_file(folder, i))
            result: tuple[str, Any] = ("done", (own.coverage, own.groups_seen, own.kv_invalid_groups))
        except BaseException as exc:
            result = ("error", _portable(exc))
            status = 1
        with open(os.path.join(folder, "child.pickle"), "wb") as out:
            pickle.dump(result, out, protocol=5)
    finally:
        os._exit(status)  # no atexit handlers, no flushing of buffers inherited from the parent


def _report(counter: mmap.mmap, n: int, parent: int) -> None:  # pragma: no cover
    if os.getppid() != parent:
        os._exit(1)  # the parent is gone: nobody will read this half
    struct.pack_into("q", counter, 0, n)


def _read(counter: mmap.mmap) -> int:
    return int(struct.unpack_from("q", counter, 0)[0])


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a `Kv2d1Error` with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return Kv2d1Error(f"{type(exc).__name__}: {exc}")


def _wait(pid: int, tick: Callable[[], None]) -> int:
    """Wait for the child to end, calling `tick` every `_POLL_S` meanwhile; its exit status.

    A pidfd wakes the wait the moment the child ends (polling alone would add up to a tick).
    """
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            tick()
            if pidfd is None:
                time.sleep(_POLL_S)
            else:
                select.select([pidfd], [], [], _POLL_S)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _take_in(folder: str, ctx: DiffContext, status: int) -> None:
    """Merge the child's coverage and groups into `ctx`, or raise what stopped the child."""
    try:
        with open(os.path.join(folder, "child.pickle"), "rb") as source:
            kind, payload = pickle.load(source)
    except (OSError, EOFError, pickle.UnpicklingError):
        kind, payload = "lost", None
    if kind == "error":
        raise payload
    if kind != "done":
        raise Kv2d1Error(
            f"the worker process verifying part of the window stopped (exit status {status}) "
            f"before finishing; run again, or set {WORKERS_ENV}=1"
        )
    coverage, groups, invalid = payload
    merge_coverage(ctx.coverage, coverage)
    ctx.groups_seen |= groups
    ctx.kv_invalid_groups |= invalid
