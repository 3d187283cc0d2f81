"""kv2d1's own writer of wrangler local state (for `kv2d1 demo`, tests and benchmarks).

It follows miniflare's write order, so a crash never leaves a key without its value: write each
value to a blob file (a temporary name, then a rename), insert-or-replace the `_mf_entries` rows
in one transaction, then delete the blobs the new rows replaced. A crash leaves at most orphan
blob files, which nothing reads. Safe while no wrangler process uses the same state; with one
running, SQLite's locks keep it correct but workerd (no busy timeout) may fail a request.

D1 rows need no special writer: `create_local_d1` gives the file's path, and plain sqlite3 or
`LocalD1(path, readonly=False).execute_batch` writes it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import struct
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from verifier.clock import wall_seconds
from verifier.errors import CorruptSourceError, SourceError
from verifier.model import KvEntry
from verifier.sources.local import d1_sqlite_path, kv_blob_dir, kv_sqlite_path

# Byte for byte what miniflare runs, so `.schema` matches a file wrangler made.
KV_SCHEMA = """
CREATE TABLE IF NOT EXISTS _mf_entries (
  key TEXT PRIMARY KEY,
  blob_id TEXT NOT NULL,
  expiration INTEGER,
  metadata TEXT
);
CREATE INDEX IF NOT EXISTS _mf_entries_expiration_idx ON _mf_entries(expiration);
"""
_PUT = "INSERT OR REPLACE INTO _mf_entries (key, blob_id, expiration, metadata) VALUES (?, ?, ?, ?)"
BATCH = 5000
_LOOKUP_CHUNK = 500


def new_blob_id(now_ms: int | None = None) -> str:
    """miniflare's blob id: 32 random bytes, then the creation time as a big-endian signed
    64-bit epoch-ms, in lowercase hex (80 characters)."""
    stamp = int(wall_seconds() * 1000) if now_ms is None else now_ms
    return secrets.token_hex(32) + struct.pack(">q", stamp).hex()


def create_local_d1(v3_dir: Path, database_id: str) -> Path:
    """The path of the local D1 database `database_id` under `<root>/v3`, its directory made.

    The file itself is created by whoever connects first; wrangler accepts a database created
    outside it (it switches the file to WAL and adds `_cf_METADATA` on first use).
    """
    path = d1_sqlite_path(v3_dir, database_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"cannot create {path.parent}: {exc.strerror}") from exc
    return path


class LocalKvWriter:
    """Puts KV entries into wrangler's local state for one namespace id, many per transaction."""

    def __init__(
        self, v3_dir: Path, namespace_id: str, *, busy_timeout_ms: int = 5000, batch: int = BATCH
    ) -> None:
        self.sqlite_path = kv_sqlite_path(v3_dir, namespace_id)
        self.blob_dir = kv_blob_dir(v3_dir, namespace_id)
        self._batch = batch
        try:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.sqlite_path, timeout=busy_timeout_ms / 1000, isolation_level=None
            )
            self._conn.executescript(KV_SCHEMA)
        except OSError as exc:
            raise SourceError(f"cannot create local KV state at {self.sqlite_path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def put_many(self, entries: Iterable[KvEntry]) -> int:
        """Write `entries` (expiration in epoch seconds), `batch` per transaction; the count.

        A key given twice keeps its last entry. Raises ValueError for an empty key.
        """
        written = 0
        iterator = iter(entries)
        while batch := list(islice(iterator, self._batch)):
            self._put_batch(batch)
            written += len(batch)
        return written

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LocalKvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put_batch(self, batch: list[KvEntry]) -> None:
        for entry in batch:
            if not entry.key:
                raise ValueError("a KV key cannot be empty")
        staged: list[tuple[KvEntry, str]] = []
        try:
            for entry in batch:
                staged.append((entry, self._write_blob(entry.value)))
            replaced = self._insert_rows(staged)
        except BaseException:
            # The rows were not committed: the new blobs are unreachable, so remove them.
            for _, blob_id in staged:
                self._delete_blob(blob_id)
            raise
        for blob_id in replaced:
            self._delete_blob(blob_id)

    def _write_blob(self, value: bytes) -> str:
        blob_id = new_blob_id()
        final = self.blob_dir / blob_id
        temporary = final.with_name(f".{blob_id}.tmp")
        try:
            with temporary.open("xb") as out:
                out.write(value)
            os.replace(temporary, final)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise SourceError(f"cannot write KV value file {final}: {exc.strerror}") from exc
        return blob_id

    def _insert_rows(self, staged: list[tuple[KvEntry, str]]) -> list[str]:
        """Insert-or-replace the rows in one transaction; the blob ids they replaced."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            replaced = list(self._existing_blobs([entry.key for entry, _ in staged]).values())
            latest: dict[str, str] = {}
            for entry, blob_id in staged:
                if entry.key in latest:  # the same key earlier in this batch
                    replaced.append(latest[entry.key])
                latest[entry.key] = blob_id
            self._conn.executemany(_PUT, (_row(entry, blob_id) for entry, blob_id in staged))
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise self._error(exc) from exc
        return replaced

    def _existing_blobs(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT key, blob_id FROM _mf_entries WHERE key IN ({marks})"
            found.update(self._conn.execute(sql, chunk).fetchall())
        return found

    def _delete_blob(self, blob_id: str) -> None:
        if "/" in blob_id or "\\" in blob_id or blob_id in ("", ".", ".."):
            return  # never follow a damaged row outside the blob directory
        (self.blob_dir / blob_id).unlink(missing_ok=True)

    def _error(self, exc: sqlite3.Error) -> SourceError:
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return CorruptSourceError(
                f"{self.sqlite_path} is not a readable SQLite database ({exc}); "
                "delete it to start the namespace afresh"
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return SourceError(
                f"KV state {self.sqlite_path} is locked by another process "
                "(is `wrangler dev` running?); stop it and retry"
            )
        return SourceError(f"cannot write KV state {self.sqlite_path}: {exc}")


def _row(entry: KvEntry, blob_id: str) -> tuple[str, str, int | None, str | None]:
    """The `_mf_entries` row: expiration in ms, metadata as compact JSON (as JSON.stringify)."""
    expiration = None if entry.expiration is None else entry.expiration * 1000
    metadata = (
        None
        if entry.metadata is None
        else json.dumps(entry.metadata, ensure_ascii=False, separators=(",", ":"))
    )
    return entry.key, blob_id, expiration, metadata
