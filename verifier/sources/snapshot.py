"""Snapshot files: KV entries and copies of the plan's D1 tables in one SQLite file.

Layout (the file opens in any SQLite tool):

manifest            one row: format, tool version, source (kind, bindings, ids — never a secret),
                    started / finished, counts, content digest, the capture's stage + checkpoint
kv_entries          key TEXT PRIMARY KEY, value BLOB, expiration INTEGER (epoch s), metadata TEXT
job_executions      ┐
analysis_results    ├ the plan's DDL (schema/scheduled-jobs.sql), rows copied as they are: the
report_snapshots    ┘ same declared types, so SQLite stores every value as the live table does

A capture streams: KV is listed in key order and read in pages of `kv_page` keys (bulk gets
remotely), each D1 table is read in primary-key order (keyset pages remotely, one ordered SELECT
otherwise). Every page is committed together with the checkpoint (the last key or primary key
it holds), so a capture that dies — even by SIGKILL — loses at most one uncommitted page, and
`resume=True` carries on from the checkpoint. Resuming lists the keys already captured again
(one request per 1,000 keys) but reads no value twice. `finished_at` and the content digest are
written last, in one transaction: until then the file is *unfinished* and cannot be read as a
source. A snapshot is not a point-in-time copy: what changes in KV or D1 while the capture
runs may or may not be in it.

Content digest: SHA-256 over the KV entries in key order (key, value, expiration, metadata), then
each table's rows in primary-key order (every column of the plan's DDL). Each field is a type tag,
its byte length and its bytes, followed by a field separator; a NULL has its own tag; each row
ends with a record separator; each section starts with its table name.

Test-only hook: `KV2D1_KILL_AFTER_PAGES=N` in the environment SIGKILLs the capturing process right
after its N-th committed page (a change of stage counts as one), to prove that a killed capture
resumes to the same content. Never set it outside tests.

Redaction (`kv2d1 snapshot --redact`): a source block with `redacted: true` makes the capture
store every KV value and every D1 text cell outside `KEY_COLUMNS` (keys, dates, status) as `sha256:<16 hex>` of salt +
value (`redacted`); the salt is `KV2D1_REDACT_SALT`, else random per run (so set it to resume a
redacted capture with the same hashes). Keys, dates and ids stay, so the file can be shared and
still be counted and compared by key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import itertools
import json
import os
import secrets
import signal
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier import TOOL_NAME, __version__
from verifier.calendar import parse_instant
from verifier.clock import wall_clock
from verifier.d1 import PLAN_TABLES
from verifier.errors import (
    CorruptSourceError,
    D1SchemaError,
    Kv2d1Error,
    SnapshotError,
    SourceError,
)
from verifier.model import KeyInfo, KvEntry, Table
from verifier.profile import schema_dir
from verifier.sources import D1Source, KvSource
from verifier.sources.remote import RemoteD1

FORMAT = 1
KV_PAGE = 1000
TABLE_PAGE = 5000
KILL_ENV = "KV2D1_KILL_AFTER_PAGES"
TABLES: tuple[str, ...] = tuple(table.value for table in Table)
STAGES: tuple[str, ...] = ("kv", *TABLES, "done")
COUNTED: tuple[str, ...] = ("kv_entries", *TABLES)
SQLITE_MAGIC = b"SQLite format 3\x00"
_SECRET_WORDS = ("token", "authorization", "api_key", "secret", "password")
_IDENTITY_WORDS = ("kind", "binding", "_id", "database_name")
_MANIFEST_DDL = """
CREATE TABLE manifest (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  format INTEGER NOT NULL,
  tool TEXT NOT NULL,
  tool_version TEXT NOT NULL,
  source_kind TEXT NOT NULL,
  source TEXT NOT NULL,           -- JSON: kind, bindings, ids; never a secret
  started_at TEXT NOT NULL,       -- ISO 8601 UTC: the capture's as-of (keys alive then)
  finished_at TEXT,               -- NULL until the capture is complete
  resumed INTEGER NOT NULL DEFAULT 0,
  stage TEXT NOT NULL,            -- 'kv', a table name, or 'done'
  checkpoint TEXT,                -- the last key (kv) or primary key (table) committed
  kv_entries INTEGER NOT NULL DEFAULT 0,
  job_executions INTEGER NOT NULL DEFAULT 0,
  analysis_results INTEGER NOT NULL DEFAULT 0,
  report_snapshots INTEGER NOT NULL DEFAULT 0,
  content_digest TEXT             -- SHA-256 hex, set when finished
);
CREATE TABLE kv_entries (
  key TEXT PRIMARY KEY,           -- BINARY collation: UTF-8 byte order, as KV lists
  value BLOB NOT NULL,
  expiration INTEGER,             -- epoch seconds
  metadata TEXT                   -- JSON, sorted keys
);
"""

ProgressCallback = Callable[[str, int], None]
_ALIVE = "(expiration IS NULL OR expiration > ?)"


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest row of a snapshot file."""

    path: Path
    format: int
    tool_version: str
    source: Mapping[str, Any]
    started_at: str
    finished_at: str | None
    resumed: int
    stage: str
    checkpoint: str | None
    counts: Mapping[str, int]
    content_digest: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def source_kind(self) -> str:
        return str(self.source.get("kind", "unknown"))


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """Page sizes of a capture: KV keys per committed page, D1 rows per page."""

    kv_page: int = KV_PAGE
    table_page: int = TABLE_PAGE


# --- reading -------------------------------------------------------------------------------------


class SnapshotKv:
    """The KV entries of a snapshot (a read-only `KvSource`).

    A key is alive while its expiration (epoch s) is after `as_of_s`, the run's `as_of`: by
    default the capture's own time (`captured_at`), so every key the capture listed
    stays alive however late the file is verified. None keeps every entry.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, as_of_s: float | None) -> None:
        self._conn = conn
        self.path = path
        self._as_of_s = as_of_s
        # -inf keeps every entry: `expiration > ?` then holds for any number.
        self._alive = (float("-inf") if as_of_s is None else as_of_s,)

    def describe(self) -> str:
        return f"the KV entries of snapshot {self.path}"

    def reopened(self) -> SnapshotKv:
        """The same entries over a new connection (for a forked worker process)."""
        return SnapshotKv(_reconnect(self.path), self.path, as_of_s=self._as_of_s)

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        """Every live key starting with `prefix`, in UTF-8 byte order (SQLite's BINARY collation)."""
        sql = f"SELECT key, expiration, metadata FROM kv_entries WHERE key >= ? AND {_ALIVE} ORDER BY key"
        for key, expiration, metadata in self._rows(sql, (prefix, *self._alive)):
            if not key.startswith(prefix):
                return
            yield KeyInfo(key, expiration, _json_or_none(metadata))

    def iter_key_names(self, prefix: str = "") -> Iterator[str]:
        """The names `iter_keys(prefix)` would list, without expiration and metadata."""
        sql = f"SELECT key FROM kv_entries WHERE key >= ? AND {_ALIVE} ORDER BY key"
        for (key,) in self._rows(sql, (prefix, *self._alive)):
            if not key.startswith(prefix):
                return
            yield key

    def count_keys(self) -> int:
        """How many keys `iter_keys()` would list."""
        sql = f"SELECT count(*) FROM kv_entries WHERE {_ALIVE}"
        return int(next(iter(self._rows(sql, self._alive)))[0])

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        """The live entries of `keys` in the order given; keys the snapshot lacks are left out."""
        for chunk in _batched(keys, 500):
            marks = ", ".join("?" * len(chunk))
            sql = (
                "SELECT key, value, expiration, metadata FROM kv_entries "
                f"WHERE key IN ({marks}) AND {_ALIVE}"
            )
            found = {row[0]: row for row in self._rows(sql, (*chunk, *self._alive))}
            for key in chunk:
                if (row := found.get(key)) is not None:
                    yield KvEntry(key, _as_bytes(row[1]), row[2], _json_or_none(row[3]))

    def _rows(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        return _read(self._conn, self.path, sql, params)


class SnapshotD1:
    """The D1 tables of a snapshot (a read-only `D1Source`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def describe(self) -> str:
        return f"the D1 tables of snapshot {self.path}"

    def reopened(self) -> SnapshotD1:
        """The same tables over a new connection (for a forked worker process)."""
        return SnapshotD1(_reconnect(self.path), self.path)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        return _read(self._conn, self.path, sql, params)

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        raise self._read_only()

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        raise self._read_only()

    def _read_only(self) -> SnapshotError:
        return SnapshotError(
            f"snapshot {self.path} is read-only: write to the live database instead "
            "(--local or --remote, without --snapshot)"
        )


def _reconnect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"snapshot {path} cannot be opened again ({exc})") from exc


def _read(
    conn: sqlite3.Connection, path: Path, sql: str, params: Sequence[Any]
) -> Iterator[tuple[Any, ...]]:
    try:
        cursor = conn.execute(sql, tuple(params))
        while rows := cursor.fetchmany(500):
            yield from rows
    except sqlite3.DatabaseError as exc:
        if _damaged(exc):
            raise CorruptSourceError(
                f"snapshot {path} cannot be read ({exc}): it is damaged; take a new snapshot"
            ) from exc
        raise SourceError(f"snapshot {path} cannot answer {sql.split()[0]} ({exc})") from exc


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def open_snapshot_sources(
    path: Path, *, as_of: dt.datetime | None = None, verify_digest: bool = True
) -> tuple[KvSource, D1Source, dict[str, Any]]:
    """Both sides of a finished snapshot, and the `source` block that describes it for reports.

    Keys are judged alive as of `as_of`, by default the capture's time (`captured_at`); the
    `source` block's `started_at` says which that was.
    The file is checked first: a missing, non-SQLite, truncated, foreign (no manifest) or
    unfinished file is one `SnapshotError` / `CorruptSourceError` that says what to do. With
    `verify_digest` its content digest is computed again (one streamed pass, bounded memory)
    and a file whose content no longer matches its manifest is refused; without it, the
    `source` block says `digest_verified: false`.
    """
    conn, manifest = _open_checked(path)
    try:
        if not manifest.finished:
            raise _unfinished(manifest)
        if verify_digest:
            _check_digest(conn, manifest)
    except BaseException:
        conn.close()
        raise
    judged = as_of if as_of is not None else captured_at(manifest)
    source = {
        "kind": "snapshot",
        "path": str(path),
        "content_digest": manifest.content_digest,
        "digest_verified": verify_digest,
        "started_at": manifest.started_at,
        "finished_at": manifest.finished_at,
        "captured_from": dict(manifest.source),
    }
    kv = SnapshotKv(conn, path, as_of_s=judged.timestamp())
    return kv, SnapshotD1(conn, path), source


def _check_digest(conn: sqlite3.Connection, manifest: Manifest) -> None:
    """Refuse a snapshot whose content is not what its capture wrote (edited or damaged since)."""
    try:
        actual = content_digest(conn)
    except sqlite3.DatabaseError as exc:
        raise CorruptSourceError(
            f"snapshot {manifest.path} cannot be read ({exc}): it is damaged; take a new snapshot"
        ) from exc
    if actual != manifest.content_digest:
        recorded = (manifest.content_digest or "none")[:16]
        raise CorruptSourceError(
            f"snapshot {manifest.path} does not match its content digest (recorded {recorded}…, "
            f"content {actual[:16]}…): it was changed after the capture; take a new snapshot, "
            "or pass --no-verify-digest to read it as it is"
        )


def captured_at(manifest: Manifest) -> dt.datetime:
    """The instant a snapshot was captured as of: its manifest's `started_at` (every key it holds
    was alive then; a capture lists keys after it starts, and an expiration only passes)."""
    at = parse_instant(manifest.started_at)
    if at is None:
        raise CorruptSourceError(
            f"snapshot {manifest.path} has no readable capture time ({manifest.started_at!r}): "
            "take a new snapshot"
        )
    return at


def read_manifest(path: Path) -> Manifest:
    """The manifest of a snapshot file (finished or not), after checking the file."""
    conn, manifest = _open_checked(path)
    conn.close()
    return manifest


def content_digest(conn: sqlite3.Connection) -> str:
    """The SHA-256 (hex) of a snapshot's content; see the module docstring for the encoding."""
    digest = hashlib.sha256()
    kv_sql = "SELECT key, value, expiration, metadata FROM kv_entries ORDER BY key"
    sections = [("kv_entries", kv_sql)]
    for table in TABLES:
        columns = ", ".join(_quote(c) for c in _columns_of(conn, table))
        sections.append((table, f"SELECT {columns} FROM {_quote(table)} ORDER BY id"))
    for name, sql in sections:
        digest.update(b"\x1d" + name.encode() + b"\x1e")
        for row in conn.execute(sql):
            digest.update(b"".join(_field_bytes(value) for value in row) + b"\x1e")
    return digest.hexdigest()


def _field_bytes(value: Any) -> bytes:
    if value is None:
        return b"N\x1f"
    if isinstance(value, bytes):
        tag, data = b"b", value
    elif isinstance(value, str):
        tag, data = b"s", value.encode("utf-8", "surrogatepass")
    elif isinstance(value, int):
        tag, data = b"i", str(value).encode()
    else:
        tag, data = b"f", repr(float(value)).encode()
    return tag + len(data).to_bytes(8, "big") + data + b"\x1f"


def _open_checked(path: Path) -> tuple[sqlite3.Connection, Manifest]:
    _check_file(path)
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA query_only = ON")
        return conn, _manifest_of(conn, path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise _not_a_snapshot(path, exc) from exc
        raise


def _check_file(path: Path) -> None:
    """Reject what is not a complete SQLite file before SQLite sees it."""
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}: make one with kv2d1 snapshot -o {path}")
    if not path.is_file():
        raise CorruptSourceError(f"{path} is not a file, so not a kv2d1 snapshot")
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.read(100)
    if not header.startswith(SQLITE_MAGIC):
        what = "empty" if size == 0 else "not a SQLite file"
        raise CorruptSourceError(f"{path} is {what}, so not a kv2d1 snapshot")
    expected = _expected_size(header)
    if len(header) < 100 or (expected is not None and size < expected):
        raise CorruptSourceError(
            f"{path} is truncated ({size:,} bytes of {expected or 100:,}): "
            "copy it again in full, or take a new snapshot"
        )
    journal = path.with_name(path.name + "-journal")
    if journal.exists() and journal.stat().st_size > 0:
        raise SnapshotError(
            f"{path} is an unfinished snapshot (a capture was interrupted in the middle of a "
            f"page, or is still running): finish it with kv2d1 snapshot -o {path} --resume"
        )


def _expected_size(header: bytes) -> int | None:
    """Page size × page count from the header, when the header says its count is valid."""
    if len(header) < 100:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter, valid_for = header[24:28], header[92:96]
    pages = int.from_bytes(header[28:32], "big")
    return page_size * pages if change_counter == valid_for and pages else None


def _manifest_of(conn: sqlite3.Connection, path: Path) -> Manifest:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "manifest" not in tables:
        raise CorruptSourceError(
            f"{path} is a SQLite database but not a kv2d1 snapshot (it has no manifest table): "
            "give a file written by kv2d1 snapshot"
        )
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM manifest WHERE id = 1").fetchone()
    finally:
        conn.row_factory = None
    if row is None or row["format"] is None:
        raise CorruptSourceError(f"snapshot {path} has an empty manifest: take a new snapshot")
    if row["format"] > FORMAT:
        raise SnapshotError(
            f"snapshot {path} has format {row['format']}, newer than this kv2d1 "
            f"{__version__} reads ({FORMAT}): upgrade kv2d1"
        )
    if missing := [t for t in COUNTED if t not in tables]:
        raise CorruptSourceError(
            f"snapshot {path} lacks the table(s) {', '.join(missing)}: take a new snapshot"
        )
    return _manifest_from_row(row, path)


def _manifest_from_row(row: sqlite3.Row, path: Path) -> Manifest:
    source = _json_or_none(row["source"])
    return Manifest(
        path=path,
        format=row["format"],
        tool_version=row["tool_version"],
        source=source if isinstance(source, dict) else {},
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        resumed=row["resumed"],
        stage=row["stage"],
        checkpoint=row["checkpoint"],
        counts={name: row[name] for name in COUNTED},
        content_digest=row["content_digest"],
    )


def _unfinished(manifest: Manifest) -> SnapshotError:
    path = manifest.path
    return SnapshotError(
        f"{path} is an unfinished snapshot (started {manifest.started_at}, "
        f"{manifest.counts['kv_entries']:,} KV entries so far): finish it with "
        f"kv2d1 snapshot -o {path} --resume and the same source options"
    )


# --- capturing -----------------------------------------------------------------------------------


def capture_snapshot(
    kv: KvSource,
    d1: D1Source,
    source: Mapping[str, Any],
    path: Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    options: CaptureOptions = CaptureOptions(),  # frozen, so safe as a default
    connect: Callable[[str], sqlite3.Connection] | None = None,
    now: Callable[[], dt.datetime] = wall_clock,
    as_of: dt.datetime | None = None,
) -> Manifest:
    """Capture `kv` and `d1` into the snapshot file `path`; its finished manifest.

    A new capture refuses an existing file. With `resume`, an unfinished capture of the same
    source carries on from its checkpoint, a finished one is returned as it is, and a missing
    file starts a new capture. `connect` opens the SQLite file (tests inject one). A new file's
    `started_at` is `as_of`, the instant the run judges liveness by (the keys `kv` lists are the
    ones alive then), else `now()`; `now()` gives `finished_at`. A new file that fails before its first page is removed again; a later
    failure of the source keeps the pages so far and says to `--resume`.
    """
    created = not (resume and path.exists())
    capture = _Capture.start(
        path,
        _clean_source(source),
        created=created,
        connect=connect or sqlite3.connect,
        now=now,
        as_of=as_of,
    )
    try:
        if not capture.manifest.finished:
            capture.run(kv, d1, progress=progress, options=options)
            capture.finish()
    except BaseException as exc:
        capture.close()
        if created and capture.pages == 0:
            path.unlink(missing_ok=True)
        elif isinstance(exc, Kv2d1Error) and not isinstance(exc, SnapshotError):
            raise SnapshotError(
                f"{exc} — snapshot {path} keeps what was captured so far: "
                "run the same command with --resume to continue"
            ) from exc
        raise
    capture.close()
    return capture.manifest


class _Capture:
    """One capture session on an open snapshot file: pages, checkpoints, the final manifest.

    Every page's update of the manifest names the checkpoint it expects, so two captures that
    write one file at once cannot both go on: the second finds the checkpoint moved.
    """

    def __init__(
        self, conn: sqlite3.Connection, manifest: Manifest, now: Callable[[], dt.datetime]
    ) -> None:
        self.conn = conn
        self.manifest = manifest
        self.pages = 0
        self._now = now
        self._kill_after = _kill_after_pages()

    @classmethod
    def start(
        cls,
        path: Path,
        source: Mapping[str, Any],
        *,
        created: bool,
        connect: Callable[[str], sqlite3.Connection],
        now: Callable[[], dt.datetime],
        as_of: dt.datetime | None,
    ) -> _Capture:
        if created:
            _create_file(path)
        elif not _journal_of(path).exists():  # with a journal, SQLite rolls the file back
            _check_file(path)
        conn = _writer(path, connect)
        try:
            if created:
                _initialise(conn, path, source, as_of if as_of is not None else now())
            manifest = _manifest_of(conn, path)  # a snapshot, before anything is changed
            conn.execute("PRAGMA journal_mode = DELETE")  # one file once closed; no -wal
            if not created and not manifest.finished:
                _check_same_source(manifest, source)
                _transaction(conn, path, lambda c: c.execute(_RESUMED))
                manifest = _manifest_of(conn, path)
        except BaseException as exc:
            conn.close()
            if created:
                path.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.DatabaseError):
                raise _not_a_snapshot(path, exc) from exc
            raise
        return cls(conn, manifest, now)

    def run(
        self,
        kv: KvSource,
        d1: D1Source,
        *,
        progress: ProgressCallback | None,
        options: CaptureOptions,
    ) -> None:
        columns = _source_columns(d1)
        salt = redaction_salt() if self.manifest.source.get("redacted") else None
        checkpoint = self.manifest.checkpoint
        for stage in STAGES[STAGES.index(self.manifest.stage) : -1]:
            done = self.manifest.counts[_counted(stage)]
            if progress:
                progress(stage, done)
            if stage == "kv":
                pages = _kv_pages(kv, checkpoint, options.kv_page)
            else:
                pages = _table_pages(d1, stage, columns[stage], checkpoint, options.table_page)
            insert = _insert_sql(stage, columns)
            for rows, last in pages:
                if salt is not None:
                    rows = _redact_rows(stage, columns, rows, salt)
                self._commit_page(stage, insert, rows, before=checkpoint, after=last)
                checkpoint, done = last, done + len(rows)
                if progress:
                    progress(stage, done)
            self._next_stage(stage, checkpoint)
            checkpoint = None

    def _commit_page(
        self,
        stage: str,
        insert: str,
        rows: list[tuple[Any, ...]],
        *,
        before: str | None,
        after: str,
    ) -> None:
        counted = _counted(stage)
        update = (
            f"UPDATE manifest SET checkpoint = ?, {counted} = {counted} + ? "
            "WHERE stage = ? AND checkpoint IS ?"
        )

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(insert, rows)
            self._moved_unless(conn.execute(update, (after, len(rows), stage, before)))

        _transaction(self.conn, self.manifest.path, work)
        self._page_committed()

    def _next_stage(self, stage: str, checkpoint: str | None) -> None:
        following = STAGES[STAGES.index(stage) + 1]
        update = (
            "UPDATE manifest SET stage = ?, checkpoint = NULL WHERE stage = ? AND checkpoint IS ?"
        )
        _transaction(
            self.conn,
            self.manifest.path,
            lambda conn: self._moved_unless(conn.execute(update, (following, stage, checkpoint))),
        )
        self._page_committed()

    def _moved_unless(self, cursor: sqlite3.Cursor) -> None:
        if cursor.rowcount != 1:
            raise SnapshotError(
                f"snapshot {self.manifest.path} is being written by another kv2d1 at the same "
                "time: let one capture finish, then check it with kv2d1 verify --snapshot"
            )

    def _page_committed(self) -> None:
        self.pages += 1
        if self._kill_after is not None and self.pages >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test-only: KV2D1_KILL_AFTER_PAGES

    def finish(self) -> None:
        """Counts, digest and `finished_at`, in the last transaction."""
        path, finished = self.manifest.path, _iso(self._now())

        def work(conn: sqlite3.Connection) -> None:
            counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED]
            sets = ", ".join(f"{name} = ?" for name in COUNTED)
            conn.execute(
                f"UPDATE manifest SET {sets}, content_digest = ?, finished_at = ?, stage = 'done'",
                (*counts, content_digest(conn), finished),
            )

        _transaction(self.conn, path, work)
        self.manifest = _manifest_of(self.conn, path)

    def close(self) -> None:
        self.conn.close()  # an open transaction is rolled back


_RESUMED = "UPDATE manifest SET resumed = resumed + 1"


def _counted(stage: str) -> str:
    return "kv_entries" if stage == "kv" else stage


def _kv_pages(
    kv: KvSource, after: str | None, size: int
) -> Iterator[tuple[list[tuple[Any, ...]], str]]:
    """KV rows page by page (keys listed after the checkpoint, values in bulk); the last key."""
    floor = None if after is None else _utf8(after)
    listed = (info for info in kv.iter_keys() if floor is None or _utf8(info.name) > floor)
    for page in _batched(listed, size):
        infos = {info.name: info for info in page}
        rows = [_kv_row(entry, infos[entry.key]) for entry in kv.get_many(list(infos))]
        yield rows, page[-1].name


def _kv_row(entry: KvEntry, info: KeyInfo) -> tuple[Any, ...]:
    expiration = entry.expiration if entry.expiration is not None else info.expiration
    metadata = entry.metadata if entry.metadata is not None else info.metadata
    return entry.key, bytes(entry.value), expiration, None if metadata is None else _json(metadata)


def _table_pages(
    d1: D1Source, table: str, columns: tuple[str, ...], after: str | None, size: int
) -> Iterator[tuple[list[tuple[Any, ...]], str]]:
    """A table's rows in primary-key order, page by page, with the last primary key."""
    pk = columns.index("id")
    for page in _batched(_table_rows(d1, table, columns, after, size), size):
        yield [tuple(_cell(value) for value in row) for row in page], str(page[-1][pk])


def _table_rows(
    d1: D1Source, table: str, columns: tuple[str, ...], after: str | None, page: int
) -> Iterator[tuple[Any, ...]]:
    bound = "" if after is None else f"id > {int(after)}"
    if isinstance(d1, RemoteD1):
        return d1.iter_table(table, columns, where_sql=bound, page=page)
    where = f" WHERE {bound}" if bound else ""
    selected = ", ".join(_quote(c) for c in columns)
    return d1.query(f"SELECT {selected} FROM {_quote(table)}{where} ORDER BY id")


def _cell(value: Any) -> Any:
    """A D1 cell as SQLite stores it: the REST API gives BLOBs as arrays of bytes."""
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    if isinstance(value, dict | list):
        return _json(value)
    return value


def _source_columns(d1: D1Source) -> dict[str, tuple[str, ...]]:
    """Per plan table, the columns of the snapshot's DDL that the source has (ids required)."""
    plan = _plan_columns()
    columns: dict[str, tuple[str, ...]] = {}
    for table in TABLES:
        have = {row[1] for row in d1.query(f"PRAGMA table_info({table})")}
        missing = [c for c in PLAN_TABLES[Table(table)] if c not in have]
        if missing:
            lacks = table if not have else ", ".join(f"{table}.{c}" for c in missing)
            raise D1SchemaError(
                f"{d1.describe()} lacks the plan's {lacks}: apply schema/scheduled-jobs.sql "
                "to it first (wrangler d1 execute DB --file schema/scheduled-jobs.sql)"
            )
        columns[table] = tuple(c for c in plan[table] if c in have)
    return columns


def _plan_columns() -> dict[str, tuple[str, ...]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_plan_ddl())
        return {table: _columns_of(conn, table) for table in TABLES}
    finally:
        conn.close()


def _plan_ddl() -> str:
    return (schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8")


def _columns_of(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})"))


def _insert_sql(stage: str, columns: Mapping[str, tuple[str, ...]]) -> str:
    if stage == "kv":
        return (
            "INSERT INTO kv_entries (key, value, expiration, metadata) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "expiration = excluded.expiration, metadata = excluded.metadata"
        )
    names = columns[stage]
    marks = ", ".join("?" * len(names))
    return f"INSERT INTO {_quote(stage)} ({', '.join(map(_quote, names))}) VALUES ({marks})"


# --- the file ------------------------------------------------------------------------------------


def _create_file(path: Path) -> None:
    """Create `path` empty with owner-only permissions (0600), refusing an existing file."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SnapshotError(
            f"{path} already exists: continue its capture with --resume, "
            "or choose another file with -o"
        ) from None
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        os.close(descriptor)
        os.chmod(path, 0o600)  # whatever the umask left
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _write_error(path, exc) from exc


def _journal_of(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _writer(path: Path, connect: Callable[[str], sqlite3.Connection]) -> sqlite3.Connection:
    try:
        conn = connect(str(path))
        conn.isolation_level = None  # explicit transactions: one per page
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 2000")
    except sqlite3.DatabaseError as exc:
        raise _not_a_snapshot(path, exc) from exc
    return conn


def _not_a_snapshot(path: Path, exc: sqlite3.DatabaseError) -> CorruptSourceError:
    return CorruptSourceError(
        f"{path} is not a readable SQLite database ({exc}), so not a kv2d1 snapshot: "
        "take a new snapshot with kv2d1 snapshot -o FILE"
    )


def _initialise(
    conn: sqlite3.Connection, path: Path, source: Mapping[str, Any], started: dt.datetime
) -> None:
    """Tables and the manifest, in one transaction: the file is a snapshot or is empty."""
    insert = (
        "INSERT INTO manifest (id, format, tool, tool_version, source_kind, source, started_at, "
        "stage) VALUES (1, ?, ?, ?, ?, ?, ?, 'kv')"
    )
    params = (
        FORMAT,
        TOOL_NAME,
        __version__,
        str(source.get("kind", "unknown")),
        json.dumps(dict(source), sort_keys=True),
        _iso(started),
    )

    def work(conn: sqlite3.Connection) -> None:
        for statement in _statements(_MANIFEST_DDL + "\n" + _plan_ddl()):
            conn.execute(statement)
        conn.execute(insert, params)

    _transaction(conn, path, work)


def _statements(script: str) -> Iterator[str]:
    """The complete statements of an SQL script (comments and blank text dropped)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""


def _transaction(
    conn: sqlite3.Connection, path: Path, work: Callable[[sqlite3.Connection], object]
) -> None:
    """Run `work` in one write transaction; a SQLite or OS failure is one `SnapshotError`."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        work(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # else closing the connection rolls back
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error | OSError):
            raise _write_error(path, exc) from exc
        raise


def _write_error(path: Path, exc: sqlite3.Error | OSError) -> SnapshotError:
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    full = full or (isinstance(exc, sqlite3.Error) and "full" in str(exc).lower())
    if full:
        return SnapshotError(
            f"cannot write the snapshot {path}: the disk is full; free some space, then "
            f"continue with kv2d1 snapshot -o {path} --resume"
        )
    if isinstance(exc, sqlite3.Error) and "locked" in str(exc).lower():
        return SnapshotError(f"snapshot {path} is being written by another kv2d1: wait for it")
    reason = exc.strerror if isinstance(exc, OSError) else str(exc)
    return SnapshotError(
        f"cannot write the snapshot {path} ({reason}); continue with "
        f"kv2d1 snapshot -o {path} --resume once that is fixed"
    )


# --- helpers -------------------------------------------------------------------------------------


# Keys, dates and the CHECKed enum `status` (the plan's DDL refuses anything else) stay readable.
KEY_COLUMNS = frozenset(
    {"id", "execution_id", "job_type", "execution_date", "execution_time", "status", "symbol",
     "report_type", "report_date"}
)  # fmt: skip
REDACT_SALT_ENV = "KV2D1_REDACT_SALT"


def redaction_salt() -> str:
    """The salt of this run's hashes: `KV2D1_REDACT_SALT`, else a random one."""
    return os.environ.get(REDACT_SALT_ENV) or secrets.token_hex(16)


def redacted(value: str | bytes, salt: str) -> str:
    """`sha256:` and the first 16 hex digits of SHA-256 over salt + value (UTF-8)."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(salt.encode("utf-8") + data).hexdigest()[:16]


def _redact_rows(
    stage: str, columns: Mapping[str, tuple[str, ...]], rows: list[tuple[Any, ...]], salt: str
) -> list[tuple[Any, ...]]:
    """KV values, and D1 text cells outside `KEY_COLUMNS`, as salted hashes."""
    if stage == "kv":
        return [(key, redacted(value, salt).encode(), *rest) for key, value, *rest in rows]
    names = columns[stage]
    return [
        tuple(
            redacted(cell, salt) if isinstance(cell, str) and name not in KEY_COLUMNS else cell
            for name, cell in zip(names, row, strict=True)
        )
        for row in rows
    ]


def _clean_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """The source block without anything that looks like a secret."""
    return {
        key: value
        for key, value in source.items()
        if not any(word in key.lower() for word in _SECRET_WORDS)
    }


def _check_same_source(manifest: Manifest, source: Mapping[str, Any]) -> None:
    """A capture resumes only from the source it started on (same kind, bindings and ids)."""
    keys = sorted(
        key for key in {*manifest.source, *source} if any(word in key for word in _IDENTITY_WORDS)
    )
    differ = [key for key in keys if manifest.source.get(key) != source.get(key)]
    if differ:
        changes = "; ".join(
            f"{key} {manifest.source.get(key)!r}, now {source.get(key)!r}" for key in differ
        )
        raise SnapshotError(
            f"{manifest.path} was captured from another source ({changes}): resume it with "
            "the options it was started with, or write a new snapshot with another -o"
        )


def _kill_after_pages() -> int | None:
    value = os.environ.get(KILL_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _json_or_none(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
