"""Snapshot files: capture, resume after a crash or a full disk, checks on open, read back.

The sources here are small in-memory fakes of the protocols (KV) and a real SQLite file with the
plan's schema (D1), so every test reads the snapshot back with SQLite. The remote round trip
(REST API → snapshot → verify) is in tests/test_remote_e2e.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import io
import os
import random
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports.progress import Progress
from verifier.errors import CorruptSourceError, D1SchemaError, SnapshotError, SourceError
from verifier.model import KeyInfo, KvEntry
from verifier.profile import schema_dir
from verifier.sources.snapshot import (
    TABLES,
    CaptureOptions,
    Manifest,
    capture_snapshot,
    content_digest,
    open_snapshot_sources,
    read_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SMALL = CaptureOptions(kv_page=50, table_page=40)
SOURCE = {"kind": "local", "kv_binding": "KV", "d1_binding": "DB", "d1_database_id": "db-1"}


# --- fake sources ------------------------------------------------------------------------------


class MemoryKv:
    """A `KvSource` over a dict; counts what it is asked, like an API would bill it."""

    def __init__(self, entries: Sequence[KvEntry]) -> None:
        self.entries = {entry.key: entry for entry in entries}
        self.keys_listed = 0
        self.values_read = 0

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        for key in sorted(self.entries, key=lambda k: k.encode("utf-8")):
            if key.startswith(prefix):
                self.keys_listed += 1
                entry = self.entries[key]
                yield KeyInfo(key, entry.expiration, entry.metadata)

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        self.values_read += len(keys)
        return iter([self.entries[key] for key in keys if key in self.entries])


class SqliteD1:
    """A `D1Source` over a SQLite file (as local D1 is)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        return iter(self.conn.execute(sql, tuple(params)).fetchall())

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        raise AssertionError("a capture never writes to D1")

    def describe(self) -> str:
        return f"D1 database {self.path.name}"


def make_entries(seed: int, count: int) -> list[KvEntry]:
    """Keys whose UTF-8 order differs from UTF-16's, binary and text values, TTLs, metadata."""
    rng = random.Random(seed)
    names = ["analysis_", "status:analysis:", "über/", "😀", "\uffff", "a b%2F?#", "z"]
    entries = []
    for i in range(count):
        key = f"{rng.choice(names)}{i:05d}"
        value = rng.randbytes(12) if i % 17 == 0 else f'{{"n": {i}, "t": "ü"}}'.encode()
        expiration = 1_900_000_000 + i if i % 5 == 0 else None
        metadata = {"i": i, "z": [1.5, None], "a": "x"} if i % 3 == 0 else None
        entries.append(KvEntry(key, value, expiration, metadata))
    return entries


def make_d1(path: Path, seed: int, *, jobs: int = 120) -> Path:
    """The plan's schema with rows of every storage class (REAL, NULL, a BLOB in a TEXT column)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.executescript((schema_dir() / "scheduled-jobs.sql").read_text())
    for job in range(1, jobs + 1):
        conn.execute(
            "INSERT INTO job_executions (id, job_type, execution_date, execution_time, status, "
            "duration_ms, symbols_processed, error_message, metadata, created_at) "
            "VALUES (?, 'analysis', ?, ?, 'success', ?, 3, ?, ?, '2026-11-01 00:00:00')",
            (
                job * 3,  # gaps in the primary key
                f"2026-10-{job % 28 + 1:02d}",
                f"2026-10-{job % 28 + 1:02d}T13:30:00.000Z",
                rng.randint(100, 9000),
                None if job % 4 else "timeout",
                '{"b": 1, "a": 2}',
            ),
        )
        for symbol in ("AAPL", "MSFT", "NVDA"):
            conn.execute(
                "INSERT INTO analysis_results (execution_id, symbol, sentiment, confidence, "
                "signals, news_count, created_at) VALUES (?, ?, 'bullish', ?, '[]', ?, 'x')",
                (job * 3, symbol, rng.random(), None if job % 2 else 4),
            )
        if job % 3 == 0:
            conn.execute(
                "INSERT INTO report_snapshots (execution_id, report_type, report_date, content, "
                "html_snapshot, high_confidence_count, created_at) "
                "VALUES (?, 'weekly', '2026-10-02', '{}', ?, 2, 'x')",
                (job * 3, b"\x00\xffhtml"),
            )
    conn.commit()
    conn.close()
    return path


def make_sources(tmp: Path, seed: int = 7, *, keys: int = 400) -> tuple[MemoryKv, SqliteD1]:
    d1_path = tmp / f"d1-{seed}.sqlite"
    if not d1_path.exists():
        make_d1(d1_path, seed)
    return MemoryKv(make_entries(seed, keys)), SqliteD1(d1_path)


def capture(kv: MemoryKv, d1: SqliteD1, path: Path, **options: Any) -> Manifest:
    options.setdefault("options", SMALL)
    return capture_snapshot(kv, d1, SOURCE, path, now=lambda: NOW, **options)


def capture_in_child(tmp: str, out: str, seed: int) -> None:
    """The body of the subprocess that is SIGKILLed midway (KV2D1_KILL_AFTER_PAGES)."""
    kv, d1 = make_sources(Path(tmp), seed)
    capture(kv, d1, Path(out))


@pytest.fixture
def sources(tmp_path: Path) -> tuple[MemoryKv, SqliteD1]:
    return make_sources(tmp_path)


@pytest.fixture
def reference(tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]) -> Manifest:
    """An uninterrupted capture of `sources`."""
    return capture(*sources, tmp_path / "reference.sqlite")


# --- capture and read back ----------------------------------------------------------------------


def test_a_capture_reads_back_exactly_what_the_sources_hold(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], reference: Manifest
) -> None:
    kv, d1 = sources
    snap_kv, snap_d1, source = open_snapshot_sources(reference.path)

    listed = list(snap_kv.iter_keys())
    assert listed == list(kv.iter_keys())
    assert [i.name.encode() for i in listed] == sorted(i.name.encode() for i in listed)
    names = [info.name for info in listed]
    assert list(snap_kv.get_many([*reversed(names), "absent"])) == [
        kv.entries[name] for name in reversed(names)
    ]
    for table in TABLES:
        sql = f"SELECT * FROM {table} ORDER BY id"
        copied, live = list(snap_d1.query(sql)), list(d1.query(sql))
        assert copied == live
        assert [tuple(map(type, row)) for row in copied] == [tuple(map(type, r)) for r in live]
    assert source["kind"] == "snapshot"
    assert source["captured_from"] == SOURCE
    assert source["content_digest"] == reference.content_digest


def test_the_manifest_counts_and_digests_the_content(reference: Manifest) -> None:
    assert reference.finished_at == "2026-11-28T12:00:00Z"
    assert reference.started_at == "2026-11-28T12:00:00Z"
    assert dict(reference.counts) == {
        "kv_entries": 400,
        "job_executions": 120,
        "analysis_results": 360,
        "report_snapshots": 40,
    }
    with sqlite3.connect(reference.path) as conn:
        assert content_digest(conn) == reference.content_digest
        row = conn.execute("SELECT tool, tool_version, source_kind, stage FROM manifest").fetchone()
    assert row == ("kv2d1", "0.1.0", "local", "done")


def test_the_digest_changes_with_any_field(tmp_path: Path, reference: Manifest) -> None:
    changes = [
        "UPDATE kv_entries SET expiration = NULL WHERE expiration = 1900000000",
        "UPDATE kv_entries SET metadata = NULL WHERE key = (SELECT min(key) FROM kv_entries "
        "WHERE metadata IS NOT NULL)",
        "UPDATE analysis_results SET news_count = 0 WHERE news_count IS NULL AND id = 1",
        "UPDATE report_snapshots SET summary = '' WHERE id = 1",  # NULL is not empty text
        "UPDATE job_executions SET error_message = CAST(error_message AS BLOB) "  # same bytes
        "WHERE id = (SELECT min(id) FROM job_executions WHERE error_message IS NOT NULL)",
    ]
    for number, change in enumerate(changes):
        copy = tmp_path / f"changed-{number}.sqlite"
        copy.write_bytes(reference.path.read_bytes())
        with sqlite3.connect(copy) as conn:
            assert conn.execute(change).rowcount == 1, change
            assert content_digest(conn) != reference.content_digest, change


def test_the_file_is_owner_only_and_holds_no_secret(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]
) -> None:
    source = {**SOURCE, "api_token": "s3cret-token-value", "Authorization": "Bearer s3cret"}
    path = tmp_path / "secret.sqlite"
    manifest = capture_snapshot(*sources, source, path, options=SMALL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"s3cret" not in path.read_bytes()
    assert dict(manifest.source) == SOURCE
    assert not path.with_name(path.name + "-journal").exists()


def test_a_snapshot_is_read_only(reference: Manifest) -> None:
    _, d1, _ = open_snapshot_sources(reference.path)
    with pytest.raises(SnapshotError, match="is read-only"):
        d1.execute_batch([("DELETE FROM job_executions", ())])
    with pytest.raises(SourceError):
        list(d1.query("DELETE FROM job_executions"))
    assert read_manifest(reference.path).counts["job_executions"] == 120


def test_prefix_listing_stops_at_the_end_of_the_prefix(reference: Manifest) -> None:
    kv, _, _ = open_snapshot_sources(reference.path)
    names = [info.name for info in kv.iter_keys("über/")]
    assert names and all(name.startswith("über/") for name in names)
    assert len(names) == sum(1 for info in kv.iter_keys() if info.name.startswith("über/"))
    assert list(kv.iter_key_names("über/")) == names  # type: ignore[attr-defined]
    assert kv.count_keys() == len(list(kv.iter_keys()))  # type: ignore[attr-defined]


def test_a_plan_table_missing_in_d1_is_a_schema_error_and_leaves_no_file(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]
) -> None:
    kv, d1 = sources
    d1.conn.execute("ALTER TABLE report_snapshots RENAME TO old_reports")
    path = tmp_path / "s.sqlite"
    with pytest.raises(D1SchemaError, match="lacks the plan's report_snapshots: apply"):
        capture(kv, d1, path)
    assert not path.exists()


# --- resume ----------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after(reports: int) -> Any:
    """A progress callback that stops the capture at its `reports`-th report."""
    seen = []

    def progress(stage: str, done: int) -> None:
        seen.append((stage, done))
        if len(seen) >= reports:
            raise Interrupted(stage)

    return progress


@pytest.mark.parametrize("reports", [3, 9, 14, 20])  # in KV, at a stage boundary, in the tables
def test_an_interrupted_capture_resumes_to_the_same_content(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], reference: Manifest, reports: int
) -> None:
    kv, d1 = sources
    path = tmp_path / "interrupted.sqlite"
    with pytest.raises(Interrupted):
        capture(kv, d1, path, progress=interrupt_after(reports))
    half = read_manifest(path)
    assert half.finished_at is None and half.content_digest is None
    with pytest.raises(SnapshotError, match=r"unfinished snapshot .* --resume"):
        open_snapshot_sources(path)

    kv.values_read = 0
    resumed = capture(kv, d1, path, resume=True)
    assert resumed.content_digest == reference.content_digest
    assert resumed.counts == reference.counts
    assert resumed.resumed == 1
    assert kv.values_read == len(kv.entries) - half.counts["kv_entries"]  # no value read twice


@pytest.mark.parametrize("pages", [3, 12])  # in the KV stage, in a table stage
def test_a_capture_killed_by_sigkill_resumes_to_the_same_content(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], reference: Manifest, pages: int
) -> None:
    path = tmp_path / "killed.sqlite"
    child = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.verifier.test_snapshot import capture_in_child; "
        "capture_in_child(sys.argv[2], sys.argv[3], 7)"
    )
    env = {**os.environ, "KV2D1_KILL_AFTER_PAGES": str(pages)}
    done = subprocess.run(
        [sys.executable, "-c", child, str(ROOT), str(tmp_path), str(path)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()
    assert read_manifest(path).finished_at is None
    resumed = capture(*sources, path, resume=True)
    assert resumed.content_digest == reference.content_digest


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.integers(0, 120),
    kv_page=st.integers(1, 60),
    table_page=st.integers(1, 200),
    stop=st.integers(1, 40),
)
def test_the_digest_does_not_depend_on_pages_or_where_a_capture_stopped(
    tmp_path_factory: pytest.TempPathFactory, keys: int, kv_page: int, table_page: int, stop: int
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    kv, d1 = make_sources(tmp, seed=3, keys=keys)
    whole = capture(kv, d1, tmp / "whole.sqlite", options=CaptureOptions(1000, 5000))
    path, options = tmp / "paged.sqlite", CaptureOptions(kv_page, table_page)
    with contextlib.suppress(Interrupted):
        capture(kv, d1, path, options=options, progress=interrupt_after(stop))
    resumed = capture(kv, d1, path, options=options, resume=True)
    assert resumed.content_digest == whole.content_digest


def test_resuming_a_finished_snapshot_changes_nothing(
    sources: tuple[MemoryKv, SqliteD1], reference: Manifest
) -> None:
    kv = MemoryKv([])
    again = capture(kv, sources[1], reference.path, resume=True)
    assert again == reference
    assert kv.keys_listed == 0


def test_resume_without_a_file_starts_a_new_capture(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], reference: Manifest
) -> None:
    fresh = capture(*sources, tmp_path / "new.sqlite", resume=True)
    assert fresh.content_digest == reference.content_digest
    assert fresh.resumed == 0


def test_an_existing_file_is_never_overwritten(
    sources: tuple[MemoryKv, SqliteD1], reference: Manifest
) -> None:
    before = reference.path.read_bytes()
    with pytest.raises(SnapshotError, match="already exists: continue its capture with --resume"):
        capture(*sources, reference.path)
    assert reference.path.read_bytes() == before


def test_a_capture_resumes_only_from_its_own_source(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]
) -> None:
    path = tmp_path / "s.sqlite"
    with pytest.raises(Interrupted):
        capture(*sources, path, progress=interrupt_after(3))
    other = {**SOURCE, "d1_database_id": "db-2"}
    with pytest.raises(SnapshotError, match="d1_database_id 'db-1', now 'db-2'"):
        capture_snapshot(*sources, other, path, resume=True, options=SMALL)


def test_a_source_failure_after_some_pages_keeps_them_and_says_to_resume(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]
) -> None:
    kv, d1 = sources

    def failing(keys: Sequence[str]) -> Iterator[KvEntry]:
        if kv.values_read >= 100:
            raise SourceError("the API failed (HTTP 503) while reading 50 values")
        kv.values_read += len(keys)
        return iter([kv.entries[key] for key in keys])

    kv.get_many = failing  # type: ignore[method-assign]
    path = tmp_path / "s.sqlite"
    with pytest.raises(SnapshotError) as caught:
        capture(kv, d1, path)
    assert str(caught.value) == (
        f"the API failed (HTTP 503) while reading 50 values — snapshot {path} keeps what was "
        "captured so far: run the same command with --resume to continue"
    )
    assert read_manifest(path).counts["kv_entries"] == 100


# --- a full disk -------------------------------------------------------------------------------------


def test_a_full_disk_is_one_error_and_nothing_claims_to_be_finished(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], reference: Manifest
) -> None:
    path = tmp_path / "full.sqlite"

    def small_disk(target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(target)
        conn.execute(
            "PRAGMA max_page_count = 25"
        )  # the whole needs 45  # SQLITE_FULL: "database or disk is full"
        return conn

    with pytest.raises(SnapshotError) as caught:
        capture(*sources, path, connect=small_disk)
    assert str(caught.value) == (
        f"cannot write the snapshot {path}: the disk is full; free some space, then "
        f"continue with kv2d1 snapshot -o {path} --resume"
    )
    half = read_manifest(path)
    assert half.finished_at is None and half.counts["kv_entries"] > 0
    with pytest.raises(SnapshotError, match="unfinished"):
        open_snapshot_sources(path)
    assert capture(*sources, path, resume=True).content_digest == reference.content_digest


def test_no_space_to_create_the_file_is_one_error_and_leaves_nothing(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "open", no_space)
    path = tmp_path / "s.sqlite"
    with pytest.raises(SnapshotError, match=r"the disk is full; free some space"):
        capture(*sources, path)
    assert not path.exists()


# --- opening a file that is not a finished snapshot ------------------------------------------------


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite"
    with pytest.raises(SnapshotError) as caught:
        open_snapshot_sources(path)
    assert str(caught.value) == f"no snapshot at {path}: make one with kv2d1 snapshot -o {path}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty, so not a kv2d1 snapshot"),
        (b"key,value\nanalysis_2026-10-01,{}\n" * 10, "is not a SQLite file, so not a kv2d1"),
        (b"SQLite format 3\x00" + b"\x10\x00", "is truncated (18 bytes of 100)"),
    ],
)
def test_a_file_that_is_not_sqlite_is_corrupt(tmp_path: Path, content: bytes, message: str) -> None:
    path = write_bytes(tmp_path / "bad.sqlite", content)
    with pytest.raises(CorruptSourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_snapshot_sources(path)


def test_a_truncated_snapshot_is_corrupt(tmp_path: Path, reference: Manifest) -> None:
    data = reference.path.read_bytes()
    path = write_bytes(tmp_path / "cut.sqlite", data[: len(data) // 2])
    with pytest.raises(CorruptSourceError) as caught:
        open_snapshot_sources(path)
    assert str(caught.value) == (
        f"{path} is truncated ({len(data) // 2:,} bytes of {len(data):,}): "
        "copy it again in full, or take a new snapshot"
    )


def test_a_foreign_sqlite_file_is_not_a_snapshot(tmp_path: Path) -> None:
    path = make_d1(tmp_path / "d1.sqlite", 1, jobs=1)
    with pytest.raises(CorruptSourceError) as caught:
        open_snapshot_sources(path)
    assert str(caught.value) == (
        f"{path} is a SQLite database but not a kv2d1 snapshot (it has no manifest table): "
        "give a file written by kv2d1 snapshot"
    )


def test_resuming_a_foreign_sqlite_file_leaves_it_untouched(
    tmp_path: Path, sources: tuple[MemoryKv, SqliteD1]
) -> None:
    path = make_d1(tmp_path / "d1.sqlite", 1, jobs=1)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    before = path.read_bytes()
    with pytest.raises(CorruptSourceError, match="not a kv2d1 snapshot"):
        capture(*sources, path, resume=True)
    assert path.read_bytes() == before


def test_a_file_with_an_interrupted_page_says_to_resume(
    tmp_path: Path, reference: Manifest
) -> None:
    journal = reference.path.with_name(reference.path.name + "-journal")
    journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x00" * 504)
    with pytest.raises(SnapshotError, match=r"unfinished snapshot .* --resume"):
        open_snapshot_sources(reference.path)


def test_a_snapshot_from_a_newer_kv2d1_says_to_upgrade(tmp_path: Path, reference: Manifest) -> None:
    with sqlite3.connect(reference.path) as conn:
        conn.execute("UPDATE manifest SET format = 99")
    with pytest.raises(SnapshotError, match=r"format 99, newer than .*: upgrade kv2d1"):
        open_snapshot_sources(reference.path)


# --- progress --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_done_rate_and_eta_at_most_five_times_a_second() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress("kv", 1000, enabled=True, stream=stream, clock=clock)
    progress("kv", 0)
    for done in range(10, 210, 10):
        clock.now += 0.05  # 20 reports a second
        progress("kv", done)
    progress.close()
    assert stream.getvalue().split("\r")[1:] == [  # 21 reports in one second, 5 drawn
        "kv: 0/1,000 keys, ?/s, ETA ?",
        "kv: 50/1,000 keys, 200/s, ETA 5s",
        "kv: 100/1,000 keys, 200/s, ETA 4s",
        "kv: 150/1,000 keys, 200/s, ETA 4s",
        "kv: 200/1,000 keys, 200/s, ETA 4s\n",
    ]


def test_progress_without_a_total_and_across_stages() -> None:
    stream, clock = io.StringIO(), Clock()
    units = {"job_executions": "rows"}
    progress = Progress("kv", enabled=True, stream=stream, clock=clock, units=units)
    progress("kv", 5000)
    clock.now += 2
    progress("kv", 7000)
    clock.now += 1
    progress("job_executions", 10)
    progress.close()
    assert stream.getvalue() == (
        "\rkv: 5,000 keys, ?/s\rkv: 7,000 keys, 1,000/s\n\rjob_executions: 10 rows, ?/s\n"
    )


def test_disabled_progress_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress.for_terminal("kv", quiet=False) as progress:  # stderr is not a terminal here
        progress("kv", 10)
    with Progress("kv", enabled=False) as progress:
        progress("kv", 10)
    assert capsys.readouterr() == ("", "")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("quiet", "shown"), [(False, "\rkv: 10 keys, ?/s\n"), (True, "")])
def test_progress_on_a_terminal_unless_quiet(
    monkeypatch: pytest.MonkeyPatch, quiet: bool, shown: str
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with Progress.for_terminal("kv", quiet=quiet) as progress:
        progress("kv", 10)
    assert terminal.getvalue() == shown


# --- the content digest is checked on open (a tampered snapshot is refused) ----------------------


def _copy_and_edit(reference: Manifest, tmp_path: Path, sql: str) -> Path:
    copy = tmp_path / "edited.sqlite"
    copy.write_bytes(reference.path.read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        assert conn.execute(sql).rowcount == 1
    return copy


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE job_executions SET status = 'partial' WHERE id = (SELECT min(id) FROM job_executions WHERE status != 'partial')",
        "UPDATE kv_entries SET value = CAST('{}' AS BLOB) WHERE key = (SELECT min(key) FROM kv_entries)",
        "DELETE FROM report_snapshots WHERE id = (SELECT max(id) FROM report_snapshots)",
    ],
    ids=["d1-row-edited", "kv-value-edited", "row-deleted"],
)
def test_an_edited_snapshot_is_refused_for_its_digest(
    reference: Manifest, tmp_path: Path, edit: str
) -> None:
    copy = _copy_and_edit(reference, tmp_path, edit)
    with pytest.raises(CorruptSourceError) as raised:
        open_snapshot_sources(copy)
    message = str(raised.value)
    assert message.startswith(f"snapshot {copy} does not match its content digest (recorded ")
    assert (reference.content_digest or "")[:16] in message and "--no-verify-digest" in message
    # Told not to check, it opens, and its source block says it was not verified.
    kv, _, source = open_snapshot_sources(copy, verify_digest=False)
    assert source["digest_verified"] is False and kv.count_keys() > 0  # type: ignore[attr-defined]


def test_an_untouched_snapshot_opens_verified(reference: Manifest) -> None:
    _, _, source = open_snapshot_sources(reference.path)
    assert source["digest_verified"] is True
    assert source["content_digest"] == reference.content_digest
