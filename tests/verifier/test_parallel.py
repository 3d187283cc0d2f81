"""Verifying in two processes gives exactly what one process gives, and fails as clearly."""

from __future__ import annotations

import datetime as dt
import glob
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier import parallel, synth
from verifier.errors import Kv2d1Error, SourceError
from verifier.model import Category, Finding, Window
from verifier.profile import load_profile
from verifier.sources.local import LocalD1, LocalKv
from verifier.sources.snapshot import capture_snapshot, open_snapshot_sources
from verifier.verify import Verification

UNTIL = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)

pytestmark = pytest.mark.skipif(
    not parallel.can_fork(LocalKv, LocalD1, 2), reason="two processes need fork (Linux)"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[synth.SyntheticWorker, synth.WorkerFiles]:
    worker = synth.generate(until=UNTIL, business_days=30, seed=11, unrelated_per_job=1, now=NOW)
    return worker, synth.write_worker(tmp_path_factory.mktemp("two"), worker)


def sources(world: tuple[synth.SyntheticWorker, synth.WorkerFiles]) -> tuple[LocalKv, LocalD1]:
    worker, files = world
    now_ms = int(worker.now.timestamp() * 1000)
    return LocalKv(files.v3_dir, files.kv_namespace_id, now_ms=now_ms), LocalD1(files.d1_path)


def run(kv: object, d1: object, window: Window, workers: int) -> Verification:
    return Verification(
        kv=kv, d1=d1, profile=load_profile(), window=window, now=NOW, workers=workers  # type: ignore[arg-type]
    )


def findings_of(v: Verification) -> list[Finding]:
    return list(v.findings())


def in_group_order(findings: list[Finding]) -> list[str]:
    """The finding ids, invalid KV payloads aside (they come out with their half)."""
    return [f.id for f in findings if f.category != Category.INVALID_KV_PAYLOAD]


@pytest.fixture(autouse=True)
def split_small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN_KEYS", 2)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_LISTED", 2)


@pytest.mark.parametrize("window", [None, Window("2026-10-20", "2026-11-20")])
def test_two_processes_find_exactly_what_one_finds(world, window: Window | None) -> None:  # type: ignore[no-untyped-def]
    full = window is None
    window = window or world[0].window
    one = run(*sources(world), window, 1)
    two = run(*sources(world), window, 2)
    single, split = findings_of(one), findings_of(two)
    assert Counter(f.id for f in split) == Counter(f.id for f in single)
    assert in_group_order(split) == in_group_order(single)
    assert len(single) > 10 and (not full or {f.category for f in single} == set(Category))
    assert two.coverage.to_json() == one.coverage.to_json()
    records = {f.id: f.record for f in single}
    assert all(f.record == records[f.id] for f in split)  # backfill reads the records


def test_a_snapshot_splits_the_same_way(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kv, d1 = sources(world)
    path = tmp_path / "s.sqlite"
    capture_snapshot(kv, d1, {"kind": "local"}, path, as_of=NOW)  # as the sources were read
    expected = findings_of(run(kv, d1, world[0].window, 1))
    skv, sd1, _ = open_snapshot_sources(path)
    got = findings_of(run(skv, sd1, world[0].window, 2))
    assert in_group_order(got) == in_group_order(expected)


def test_runs_hold_about_equal_numbers_of_keys_and_whole_dates() -> None:
    dates = Counter({"2026-01-01": 3, "2026-01-02": 3, "2026-01-03": 4})
    assert parallel.split_dates(dates, minimum=1, chunks=2) == ["2026-01-02"]
    assert parallel.split_dates(dates, minimum=1, chunks=3) == ["2026-01-02"]  # 6 keys, then 4
    assert parallel.split_dates(dates, minimum=1, chunks=100) == ["2026-01-01", "2026-01-02"]
    assert parallel.split_dates(Counter({"2026-01-01": 9, "2026-01-02": 1}), minimum=1) == ["2026-01-01"]
    assert parallel.split_dates(Counter({"2026-01-01": 10}), minimum=1) == []
    assert parallel.split_dates(dates, minimum=11) == []
    many = Counter({f"2026-{m:02d}-{d:02d}": 1 + (d % 3) for m in range(1, 13) for d in range(1, 29)})
    ends = parallel.split_dates(many, minimum=1, chunks=16)
    assert len(ends) == 16 + parallel.TAPER - 1 and ends == sorted(ends)  # the last 4 in halves
    month = Counter({f"2026-01-{d:02d}": 100 for d in range(1, 31)})  # 3,000 keys
    ends = parallel.split_dates(month, minimum=1, chunks=2, most=500)  # 6 runs of 500 keys,
    assert ends == ["2026-01-05", "2026-01-10", "2026-01-15", "2026-01-18", "2026-01-20",
                    "2026-01-23", "2026-01-25", "2026-01-28"]  # the last 3 in halves  # fmt: skip


def test_the_runs_hold_every_date_once_even_malformed_ones() -> None:
    runs = parallel.cut(Window(None, None), ["2026-01-02", "2026-01-05"])
    for date in ["", "2026-01-01", "2026-01-02", "2026-01-02 ", "2026-01-02x", "2026-01-03",
                 "2026-01-05", "2026-01-06", "9"]:
        assert sum(run.contains(date) for run in runs) == 1, date
    bounded = parallel.cut(Window("2026-01-01", "2026-01-31"), ["2026-01-10"])
    assert bounded[0].since == "2026-01-01" and bounded[-1].until == "2026-01-31"


def test_an_error_in_the_second_half_is_raised_as_it_was(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker, files = world
    kv, d1 = sources(world)
    profile = load_profile()
    matched = [(m.date, i.name) for i in kv.iter_keys() if (m := profile.match(i.name))]
    _, late = max(pair for pair in matched if worker.window.contains(pair[0]))  # second half
    blobs = files.v3_dir / "kv" / files.kv_namespace_id / "blobs"
    blob = kv._conn.execute("SELECT blob_id FROM _mf_entries WHERE key = ?", (late,)).fetchone()[0]
    moved = tmp_path / "moved"
    (blobs / blob).rename(moved)
    try:
        with pytest.raises(SourceError, match="which is missing"):
            findings_of(run(kv, d1, worker.window, 2))
    finally:
        moved.rename(blobs / blob)


def test_stopping_early_stops_the_child_and_leaves_no_file(world) -> None:  # type: ignore[no-untyped-def]
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "kv2d1-runs-*")))
    children = _children()
    stream: Iterator[Finding] = run(*sources(world), world[0].window, 2).findings()
    next(stream)
    ours = _children() - children
    assert len(ours) == 1  # the child sharing the runs
    stream.close()  # type: ignore[attr-defined]
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "kv2d1-runs-*"))) == before
    assert not ours & _children()  # stopped and reaped: no zombie left behind


def _children() -> set[int]:
    """This process's child processes (zombies included), from /proc."""
    found = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(Path(stat).parent.name))
    return found


def test_one_process_when_asked_or_when_a_source_cannot_be_reopened(world) -> None:  # type: ignore[no-untyped-def]
    kv, d1 = sources(world)
    assert parallel.can_fork(kv, d1, 2)
    assert not parallel.can_fork(kv, d1, 1)
    assert not parallel.can_fork(object(), d1, 2)


def test_the_environment_can_keep_a_run_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.workers_wanted(None) == 1
    monkeypatch.setenv(parallel.WORKERS_ENV, "8")
    assert parallel.workers_wanted(None) == 2


def test_progress_counts_both_processes_keys(world) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    v = run(*sources(world), world[0].window, 2)
    v.progress = lambda stage, n: seen.append(n) if stage == "kv" else None
    findings_of(v)
    assert seen and seen[-1] == v.coverage.keys_matched
    assert max(seen) == v.coverage.keys_matched


class _DyingD1(LocalD1):
    """Opened again in the child, it kills the child at its first read."""

    def reopened(self) -> LocalD1:
        class Dying(LocalD1):
            def query(self, sql, params=()):  # type: ignore[no-untyped-def]
                os.kill(os.getpid(), 9)

        return Dying(self.path)


def test_a_killed_child_is_a_clear_error_not_a_partial_result(world) -> None:  # type: ignore[no-untyped-def]
    kv, _ = sources(world)
    d1 = _DyingD1(world[1].d1_path)
    with pytest.raises(Kv2d1Error, match=r"part of the window stopped \(exit status -9\) before finishing"):
        findings_of(run(kv, d1, world[0].window, 2))
