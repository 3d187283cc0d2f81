"""Verifying a window in two processes: the dates split where the matched KV keys halve.

Each half is the same streaming verification (list, fetch, normalise, spool, merge-join with D1)
over its own dates, so the diff's groups, (date, job type), never straddle the split. The parent
runs the first half and streams its findings as usual; a forked child runs the second half and
writes its findings to a temporary file, which the parent replays once its own half is done.
Findings therefore come out in the same (date, job type) group order a single process gives;
only `invalid_kv_payload` findings, which a single process yields while it loads KV, come out
with their half. What the halves must agree on (each job type's first KV date, the profile, the
clock) is settled before the fork.

Only sources that can be opened again in the child (local state, snapshots: `reopened()`) run in
two processes, on a machine with two or more cores, for windows of `PARALLEL_MIN_KEYS` or more
matched keys. `KV2D1_WORKERS=1` keeps a run in one process.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import pickle
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from verifier.diff import DiffContext
from verifier.errors import Kv2d1Error
from verifier.model import Coverage, Finding, Window

PARALLEL_MIN_KEYS = 2000  # below this, a fork costs more than it saves
WORKERS_ENV = "KV2D1_WORKERS"
_BATCH = 256
_POLL_S = 0.1

Report = Callable[[int], None]
ChildPart = Callable[[Report], tuple[Iterator[Finding], DiffContext]]


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


def split_date(dates: Counter[str], *, minimum: int | None = None) -> str | None:
    """The date ending the first half: the first at which half the matched keys are reached.

    None when there are fewer than `minimum` (default `PARALLEL_MIN_KEYS`) keys or a single
    date (nothing to split).
    """
    total = sum(dates.values())
    if total < (PARALLEL_MIN_KEYS if minimum is None else minimum) or len(dates) < 2:
        return None
    ordered = sorted(dates)
    seen = 0
    for date in ordered[:-1]:
        seen += dates[date]
        if seen * 2 >= total:
            return date
    return ordered[-2]


def halves(window: Window, split: str) -> tuple[Window, Window]:
    """The window up to and including `split`, and the rest. `split + NUL` is the least string
    greater than `split`, so every date (well-formed or not) falls in exactly one half."""
    return Window(window.since, split), Window(split + "\x00", window.until)


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


def run_in_two(
    first: Callable[[Callable[[], int]], Iterator[Finding]],
    second: ChildPart,
    ctx: DiffContext,
    *,
    progress: Report | None = None,
) -> Iterator[Finding]:
    """Run `second` in a forked child while `first` streams here; then replay the child's.

    `first` is given a function that tells how many keys the child has fetched so far (for
    progress). `ctx` (the parent's) takes in the child's coverage and the groups it saw. An
    error in the child is raised here, after the parent's half, as the child raised it.
    """
    fd, name = tempfile.mkstemp(prefix="kv2d1-half-", suffix=".pickle")
    os.close(fd)
    counter = mmap.mmap(-1, 8)
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        _child(second, name, counter, parent)
    try:
        yield from first(lambda: _read(counter))
        own = ctx.coverage.keys_matched
        status = _wait(pid, lambda: progress(own + _read(counter)) if progress else None)
        pid = 0
        if progress:
            progress(own + _read(counter))
        yield from _replay(name, ctx, status)
    finally:
        if pid:
            _stop(pid)
        counter.close()
        os.unlink(name)


def _child(second: ChildPart, name: str, counter: mmap.mmap, parent: int) -> None:  # pragma: no cover
    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent decides what Ctrl-C does
        with open(name, "wb") as out:
            try:
                findings, child_ctx = second(lambda n: _report(counter, n, parent))
                batch: list[Finding] = []
                for finding in findings:
                    batch.append(finding)
                    if len(batch) >= _BATCH:
                        pickle.dump(("findings", batch), out, protocol=5)
                        batch = []
                pickle.dump(("findings", batch), out, protocol=5)
                done = (child_ctx.coverage, child_ctx.groups_seen, child_ctx.kv_invalid_groups)
                pickle.dump(("done", done), out, protocol=5)
            except BaseException as exc:
                pickle.dump(("error", _portable(exc)), out, protocol=5)
                status = 1
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
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        tick()
        time.sleep(_POLL_S)


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _replay(name: str, ctx: DiffContext, status: int) -> Iterator[Finding]:
    finished = False
    with open(name, "rb") as source:
        while True:
            try:
                kind, payload = pickle.load(source)
            except EOFError:
                break
            if kind == "findings":
                yield from payload
            elif kind == "error":
                raise payload
            elif kind == "done":
                coverage, groups, invalid = payload
                merge_coverage(ctx.coverage, coverage)
                ctx.groups_seen |= groups
                ctx.kv_invalid_groups |= invalid
                finished = True
    if not finished:
        raise Kv2d1Error(
            f"the worker process verifying the second half of the window stopped "
            f"(exit status {status}) before finishing; run again, or set {WORKERS_ENV}=1"
        )
