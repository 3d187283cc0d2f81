"""Readers of wrangler's local state (`.wrangler/state/v3`): Workers KV and D1 as plain files.

Layout (wrangler 3.x and 4.x, miniflare 3 and 4):

    <persist root>/v3/kv/miniflare-KVNamespaceObject/<name(namespace id)>.sqlite   table _mf_entries
    <persist root>/v3/kv/<sanitised namespace id>/blobs/<blob id>                   the value bytes
    <persist root>/v3/d1/miniflare-D1DatabaseObject/<name(database id)>.sqlite      the D1 database

`name(id)` is the Durable Object id workerd derives from the id (`durable_object_file_name`).
Which id a binding is stored under depends on the wrangler command that wrote it (`local_kv_id`).

Reading never writes: databases are opened `mode=ro` through a URI — never `immutable=1`, which
ignores the `-wal` file that holds wrangler's latest writes (workerd exits without a
checkpoint). Expired KV rows are skipped, not deleted as miniflare would delete them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from verifier.d1 import PLAN_TABLES
from verifier.errors import (
    BackfillError,
    ConfigError,
    CorruptSourceError,
    D1SchemaError,
    SourceError,
    StateNotFoundError,
    TargetLockedError,
)
from verifier.model import KeyInfo, KvEntry

KV_OBJECT_CLASS = "miniflare-KVNamespaceObject"
D1_OBJECT_CLASS = "miniflare-D1DatabaseObject"
KV_PAGE = 1000
GET_CHUNK = 500  # keys per `IN (…)`: far below SQLite's variable limit
SCHEMA_FILE = "schema/scheduled-jobs.sql"
RULE_KV_KEY = "wrangler kv key --local"
RULE_DEV = "wrangler dev"

_DOTS = re.compile(r"(^|/|\\)(\.+)(/|\\|\Z)")
_ILLEGAL = re.compile(r"[?<>*\"'^/\\:|\x00-\x1f\x80-\x9f]")
# JavaScript's `.` stops at line terminators and its `$` only matches at the very end.
_WINDOWS_RESERVED = re.compile(
    r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.[^\n\r\u2028\u2029]*)?\Z", re.IGNORECASE
)
_LEADING = re.compile(r"^[ /\\]+")
_TRAILING = re.compile(r"[ /\\]+\Z")
_CORRUPT = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


# --- names and paths --------------------------------------------------------------------------


def durable_object_id(class_name: str, name: str) -> str:
    """The 64-hex Durable Object id workerd's `idFromName(name)` gives inside `class_name`."""
    key = hashlib.sha256(class_name.encode()).digest()
    first = hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]
    second = hmac.new(key, first, hashlib.sha256).digest()[:16]
    return (first + second).hex()


def durable_object_file_name(class_name: str, object_id: str) -> str:
    """The `.sqlite` file name miniflare keeps the object named `object_id` of `class_name` in."""
    return durable_object_id(class_name, object_id) + ".sqlite"


def sanitise_path(name: str) -> str:
    """miniflare's `sanitisePath`: `name` made safe as one path segment (the KV blob directory).

    Ids made of letters, digits, `-` and `_` are unchanged. The result is cut to 255 UTF-16
    units as in JavaScript; a surrogate pair cut in half is dropped (miniflare would fail on it).
    """
    safe = _DOTS.sub(_underscore_dots, name)
    safe = _DOTS.sub(_underscore_dots, safe)
    safe = _ILLEGAL.sub("_", safe)
    safe = _WINDOWS_RESERVED.sub("_", safe)
    safe = _LEADING.sub(lambda m: "_" * len(m.group()), safe)
    safe = _TRAILING.sub(lambda m: "_" * len(m.group()), safe)
    return safe.encode("utf-16-le", "surrogatepass")[:510].decode("utf-16-le", "ignore")


def _underscore_dots(match: re.Match[str]) -> str:
    return match.group(1) + "_" * len(match.group(2)) + match.group(3)


def kv_sqlite_path(v3_dir: Path, namespace_id: str) -> Path:
    """The key table's file of a KV namespace under `<root>/v3`."""
    return v3_dir / "kv" / KV_OBJECT_CLASS / durable_object_file_name(KV_OBJECT_CLASS, namespace_id)


def kv_blob_dir(v3_dir: Path, namespace_id: str) -> Path:
    """The directory of a KV namespace's value files under `<root>/v3`."""
    return v3_dir / "kv" / sanitise_path(namespace_id) / "blobs"


def d1_sqlite_path(v3_dir: Path, database_id: str) -> Path:
    """The SQLite file of a local D1 database under `<root>/v3`."""
    return v3_dir / "d1" / D1_OBJECT_CLASS / durable_object_file_name(D1_OBJECT_CLASS, database_id)


# --- which id: the wrangler config's bindings -------------------------------------------------


class KvNamespaceConfig(Protocol):
    """A `kv_namespaces` entry of the wrangler config."""

    @property
    def binding(self) -> str: ...
    @property
    def id(self) -> str | None: ...
    @property
    def preview_id(self) -> str | None: ...


class D1DatabaseConfig(Protocol):
    """A `d1_databases` entry of the wrangler config."""

    @property
    def binding(self) -> str: ...
    @property
    def database_name(self) -> str | None: ...
    @property
    def database_id(self) -> str | None: ...
    @property
    def preview_database_id(self) -> str | None: ...


class LocalConfig(Protocol):
    """The wrangler config (one environment), as far as local mode reads it."""

    @property
    def path(self) -> Path: ...
    @property
    def directory(self) -> Path: ...
    @property
    def env(self) -> str | None: ...
    def kv_binding(
        self, name: str | None = None, default: str | None = None
    ) -> KvNamespaceConfig: ...
    def d1_binding(
        self, name: str | None = None, default: str | None = None
    ) -> D1DatabaseConfig: ...


def local_kv_id(
    binding: KvNamespaceConfig, *, preview: bool | None = None, dev_rule: bool = False
) -> str:
    """The namespace id wrangler's local state keeps a KV binding's keys under.

    Default: the rule of `wrangler kv key … --local --binding B` — `preview=True` → `preview_id`,
    `preview=False` → `id`, `preview=None` → the only one set; when both are set, `id`, as
    `kv key get` / `kv key list` do (`kv key put` refuses to guess). `dev_rule=True`: the rule of
    `wrangler dev`, `preview_id ?? id ?? binding`, whatever `preview` says. With neither id set,
    only `wrangler dev` can have written data, under the binding name, so that is used.
    """
    if dev_rule or (binding.id is None and binding.preview_id is None):
        return binding.preview_id or binding.id or binding.binding
    if preview is True and binding.preview_id is None:
        raise ConfigError(
            f"KV binding {binding.binding!r} has no preview_id; drop --preview, "
            "or add preview_id to the binding"
        )
    if preview is False and binding.id is None:
        raise ConfigError(
            f"KV binding {binding.binding!r} has only a preview_id; pass --preview, "
            "or add id to the binding"
        )
    if preview is True:
        return str(binding.preview_id)
    return str(binding.id or binding.preview_id)


def local_d1_id(binding: D1DatabaseConfig) -> str:
    """The database id wrangler's local state keeps a D1 binding under (every command agrees)."""
    return binding.preview_database_id or binding.database_id or binding.binding


def persist_root(config: LocalConfig, persist_to: Path | None) -> Path:
    """The persist root: `--persist-to` (relative to the working directory), else
    `<config dir>/.wrangler/state`. The plugins' state is under `<root>/v3`."""
    if persist_to is not None:
        return Path.cwd() / persist_to
    return config.directory / ".wrangler" / "state"


# --- SQLite at the boundary -------------------------------------------------------------------


def _connect(path: Path, *, readonly: bool, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection that never creates the file; `mode=ro` still sees the `-wal` file."""
    uri = path.absolute().as_uri() + ("?mode=ro" if readonly else "?mode=rw")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise _read_error(exc, path) from exc
    return conn


def _error_name(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _read_error(exc: sqlite3.Error, path: Path) -> SourceError:
    """One of our errors for a failed read of `path`."""
    name = _error_name(exc)
    if name.startswith(_CORRUPT):
        return CorruptSourceError(
            f"{path} is not a readable SQLite database ({exc}); restore it from a backup, "
            "or delete it and recreate the local state with wrangler"
        )
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        return SourceError(
            f"cannot open {path} ({exc}); kv2d1 needs read access to the file and write "
            "access to its directory (SQLite keeps a -shm file next to it)"
        )
    return SourceError(f"cannot read {path}: {exc}")


def _seconds(expiration_ms: object, key: str = "", path: Path | None = None) -> int | None:
    """An expiration in epoch ms (miniflare's) as epoch seconds. A value that is not a whole
    number (the column has no type: TEXT can be stored) is a damaged entry, said as such."""
    if expiration_ms is None:
        return None
    if isinstance(expiration_ms, int) and not isinstance(expiration_ms, bool):
        return expiration_ms // 1000
    if isinstance(expiration_ms, float) and expiration_ms.is_integer():
        return int(expiration_ms) // 1000
    if isinstance(expiration_ms, str) and expiration_ms.strip().isdigit():
        return int(expiration_ms) // 1000
    raise CorruptSourceError(
        f"KV key {key!r} in {path} has the expiration {expiration_ms!r}, not a time in epoch "
        "ms: the local state is damaged; re-put the key with wrangler"
    )


# --- KV --------------------------------------------------------------------------------------

_PAGE_FIRST = (
    "SELECT key, expiration, metadata FROM _mf_entries WHERE key >= ? "
    "AND (expiration IS NULL OR expiration >= ?) ORDER BY key LIMIT ?"
)
_NAMES = (
    "SELECT key FROM _mf_entries WHERE key >= ? "
    "AND (expiration IS NULL OR expiration >= ?) ORDER BY key"
)
_PAGE_NEXT = (
    "SELECT key, expiration, metadata FROM _mf_entries WHERE key > ? "
    "AND (expiration IS NULL OR expiration >= ?) ORDER BY key LIMIT ?"
)


class LocalKv:
    """A KV namespace in wrangler's local state, read-only (a `KvSource`).

    Liveness follows miniflare: a key is listed while `expiration >= now` and returned by a get
    while `expiration > now` (ms), where now is `now_ms`: the run's `as_of` (`verifier.clock`).
    """

    def __init__(
        self,
        v3_dir: Path,
        namespace_id: str,
        *,
        now_ms: int,
        page_size: int = KV_PAGE,
    ) -> None:
        self.namespace_id = namespace_id
        self.v3_dir = v3_dir
        self.sqlite_path = kv_sqlite_path(v3_dir, namespace_id)
        self.blob_dir = kv_blob_dir(v3_dir, namespace_id)
        self._blob_root = str(self.blob_dir)
        self._blob_fd: int | None = None  # the blob folder, opened on the first read
        self._now = now_ms
        self._page_size = page_size
        _require_kv_file(v3_dir, namespace_id, self.sqlite_path)
        self._conn = _connect(self.sqlite_path, readonly=True)
        self._rows("SELECT 1 FROM _mf_entries LIMIT 1", ())

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        """Live keys starting with `prefix` (exact, case-sensitive), in UTF-8 byte order.

        Pages of `page_size` keys by key range, so memory stays bounded at any size. Keys with
        one prefix are contiguous in byte order: the walk starts at the prefix, stops after it.
        """
        now = self._now
        rows = self._rows(_PAGE_FIRST, (prefix, now, self._page_size))
        while rows:
            for key, expiration, metadata in rows:
                if not key.startswith(prefix):
                    return
                yield KeyInfo(
                    key, _seconds(expiration, key, self.sqlite_path), self._metadata(key, metadata)
                )
            if len(rows) < self._page_size:
                return
            rows = self._rows(_PAGE_NEXT, (rows[-1][0], now, self._page_size))

    def iter_key_names(self, prefix: str = "") -> Iterator[str]:
        """The names `iter_keys(prefix)` would list: one streamed query, nothing parsed."""
        now = self._now
        try:
            for (key,) in self._conn.execute(_NAMES, (prefix, now)):
                if not key.startswith(prefix):
                    return
                yield key
        except sqlite3.Error as exc:
            raise _read_error(exc, self.sqlite_path) from exc

    def count_keys(self) -> int:
        """How many live keys `iter_keys()` would list."""
        now = self._now
        # All keys less the expired ones: SQLite counts a table without reading its rows, and
        # miniflare's index on expiration finds the expired ones (a scan of every row was ~5 ms
        # at 100k keys).
        sql = (
            "SELECT (SELECT count(*) FROM _mf_entries)"
            " - (SELECT count(*) FROM _mf_entries WHERE expiration < ?)"
        )
        return int(self._rows(sql, (now,))[0][0])

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        """The live entries of `keys` in the order given, values read from the blob files."""
        now = self._now
        for start in range(0, len(keys), GET_CHUNK):
            chunk = keys[start : start + GET_CHUNK]
            marks = ", ".join("?" * len(chunk))
            found = {
                row[0]: row
                for row in self._rows(
                    "SELECT key, blob_id, expiration, metadata FROM _mf_entries "
                    f"WHERE key IN ({marks})",
                    tuple(chunk),
                )
            }
            live = [
                (key, row)
                for key in chunk
                if (row := found.get(key)) is not None and (row[2] is None or row[2] > now)
            ]
            for at in range(0, len(live), READ_AHEAD):
                part = live[at : at + READ_AHEAD]
                values = self._blobs([(key, row[1]) for key, row in part])
                for (key, row), value in zip(part, values, strict=False):
                    expiration = _seconds(row[2], key, self.sqlite_path)
                    yield KvEntry(key, value, expiration, self._metadata(key, row[3]))

    def reopened(self) -> LocalKv:
        """The same namespace over a new connection (for a forked worker process)."""
        return LocalKv(self.v3_dir, self.namespace_id, now_ms=self._now, page_size=self._page_size)

    def describe(self) -> str:
        """Where this namespace is, for messages."""
        return f"local KV namespace {self.namespace_id} ({self.sqlite_path})"

    def close(self) -> None:
        self._conn.close()
        if self._blob_fd is not None:
            os.close(self._blob_fd)
            self._blob_fd = None

    def __enter__(self) -> LocalKv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                raise CorruptSourceError(
                    f"{self.sqlite_path} has no _mf_entries table, so it is not a wrangler KV "
                    "namespace; delete it, or point --persist-to at the right state"
                ) from exc
            raise _read_error(exc, self.sqlite_path) from exc

    def _metadata(self, key: str, text: str | None) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CorruptSourceError(
                f"KV key {key!r} in {self.sqlite_path} has metadata that is not JSON ({exc}); "
                "re-put the key with wrangler to repair it"
            ) from exc

    def _blobs(self, wanted: list[tuple[str, str]]) -> Iterator[bytes]:
        """The values of (key, blob id) pairs, in order. Their files are all opened first and
        the kernel told to read them (`POSIX_FADV_WILLNEED`): on a cold disk they are read in
        parallel, not one after the other (9,400 values: 0.75 s → 0.38 s; nothing when cached).
        A key's error is raised at its turn, after the values before it."""
        opened: list[int | SourceError] = []
        try:
            for key, blob_id in wanted:
                try:
                    fd = self._open_blob(key, blob_id)
                except SourceError as exc:
                    opened.append(exc)
                    continue
                opened.append(fd)
                if _ADVISE is not None:
                    with contextlib.suppress(OSError):
                        _ADVISE(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            for (key, blob_id), item in zip(wanted, opened, strict=True):
                if isinstance(item, SourceError):
                    raise item
                try:
                    yield _read_fd(item)
                except OSError as exc:
                    raise self._read_error(key, blob_id, exc) from exc
        finally:
            for item in opened:
                if isinstance(item, int):
                    os.close(item)

    def _open_blob(self, key: str, blob_id: str) -> int:
        if not blob_id or "/" in blob_id or "\\" in blob_id or blob_id in (".", ".."):
            raise CorruptSourceError(
                f"KV key {key!r} in {self.sqlite_path} names an invalid blob id {blob_id!r}; "
                "re-put the key with wrangler to repair it"
            )
        try:
            if self._blob_fd is None:  # names open relative to it: no walk of the whole path
                self._blob_fd = os.open(self._blob_root, os.O_RDONLY | os.O_DIRECTORY)
            # O_NOFOLLOW: local state is read as data, never followed out (a blob that is a
            # symlink could copy any readable file, /etc/shadow, into a snapshot).
            return os.open(blob_id, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._blob_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptSourceError(
                    f"KV key {key!r}: its blob file {self.blob_dir / blob_id} is a symbolic "
                    "link; kv2d1 never follows a link out of the local state: replace it with "
                    "the value (re-put the key with wrangler)"
                ) from exc
            raise self._read_error(key, blob_id, exc) from exc

    def _read_error(self, key: str, blob_id: str, exc: OSError) -> SourceError:
        path = os.path.join(self._blob_root, blob_id)
        if isinstance(exc, FileNotFoundError):
            return SourceError(
                f"KV key {key!r} points at value file {path}, which is missing; the local "
                "state is damaged: re-put the key (`wrangler kv key put --local …`) or delete it"
            )
        return SourceError(f"cannot read the value of KV key {key!r} from {path}: {exc.strerror}")


_READ_AT_ONCE = 1 << 16  # most values are a few KB: one read, no fstat
READ_AHEAD = 64  # value files opened (and read ahead by the kernel) at once
_ADVISE = getattr(os, "posix_fadvise", None)  # not on macOS


def _read_fd(fd: int) -> bytes:
    """A whole file's bytes from an open fd, without the file objects `open()` builds.

    A read of a regular file returns less than asked only at its end, so one read of
    `_READ_AT_ONCE` bytes that comes back short is the whole file; a full one reads on.
    """
    data = os.read(fd, _READ_AT_ONCE)
    if len(data) == _READ_AT_ONCE:
        rest = [data]
        while chunk := os.read(fd, 1 << 20):
            rest.append(chunk)
        data = b"".join(rest)
    return data


def _require_kv_file(v3_dir: Path, namespace_id: str, sqlite_path: Path) -> None:
    """Raise StateNotFoundError, saying how to create the state, unless the key table exists."""
    if sqlite_path.is_file():
        return
    hint = "run `wrangler dev` or `wrangler kv key put --local …` first, or pass --persist-to"
    if not sqlite_path.parent.is_dir():
        raise StateNotFoundError(
            f"no local KV state for namespace {namespace_id} under {v3_dir}; {hint}"
        )
    raise StateNotFoundError(
        f"no local KV state for namespace {namespace_id}: {sqlite_path} does not exist; {hint} "
        "(with both id and preview_id set, `wrangler dev` writes to preview_id: try --preview)"
    )


# --- D1 --------------------------------------------------------------------------------------


class LocalD1:
    """A local D1 database file (a `D1Source`); read-only unless `readonly=False`.

    `name` is what wrangler knows the database by (database_name or binding); it appears in
    messages, e.g. the `wrangler d1 execute NAME --local` command that fixes a missing schema.
    """

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = True,
        busy_timeout_ms: int = 5000,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.name = name
        self._busy_timeout_ms = busy_timeout_ms
        if not path.is_file():
            raise StateNotFoundError(
                f"no local D1 database at {path}; {self._create_hint()}, or pass --persist-to"
            )
        self._conn = _connect(path, readonly=readonly, busy_timeout_ms=busy_timeout_ms)

    @classmethod
    def for_database(
        cls,
        v3_dir: Path,
        database_id: str,
        *,
        name: str | None = None,
        readonly: bool = True,
        busy_timeout_ms: int = 5000,
    ) -> LocalD1:
        """The database wrangler keeps for `database_id` under `<root>/v3`."""
        path = d1_sqlite_path(v3_dir, database_id)
        if not path.is_file():
            hint = cls._create_hint_for(name or database_id)
            raise StateNotFoundError(
                f"no local D1 database {database_id} under {v3_dir} (expected {path}); "
                f"{hint}, or pass --persist-to"
            )
        return cls(path, readonly=readonly, busy_timeout_ms=busy_timeout_ms, name=name)

    def reopened(self) -> LocalD1:
        """The same database over a new read-only connection (for a forked worker process)."""
        return LocalD1(self.path, busy_timeout_ms=self._busy_timeout_ms, name=self.name)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of one SELECT, streamed from the cursor."""
        try:
            yield from self._conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise self._query_error(exc) from exc

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run `statements` as one `BEGIN IMMEDIATE` transaction with foreign keys enforced.

        Returns the rows each statement changed. Any failure rolls the whole batch back.
        """
        return [changes for changes, _ in self._run_batch(statements, fetch=False)]

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        """As `execute_batch`, with the rows each statement returned (a SELECT's), read inside
        the transaction."""
        return self._run_batch(statements, fetch=True)

    def _run_batch(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, fetch: bool
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        if self.readonly:
            raise BackfillError(
                f"{self.describe()} was opened read-only; open it writable to backfill"
            )
        self._begin()
        results: list[tuple[int, list[tuple[Any, ...]]]] = []
        try:
            for sql, params in statements:
                cursor = self._conn.execute(sql, tuple(params))
                rows = cursor.fetchall() if fetch else []
                results.append((max(cursor.rowcount, 0), rows))
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(exc, len(results) + 1) from exc
        except BaseException:
            self._rollback()
            raise
        return results

    def check_plan_schema(self) -> None:
        """Raise D1SchemaError unless the plan's three tables have every column kv2d1 reads."""
        missing_tables: list[str] = []
        missing_columns: list[str] = []
        for table, columns in PLAN_TABLES.items():
            have = {row[1] for row in self.query(f"PRAGMA table_info({table.value})")}
            if not have:
                missing_tables.append(table.value)
            missing_columns += [f"{table.value}.{c}" for c in columns if have and c not in have]
        if missing_tables or missing_columns:
            raise D1SchemaError(self._schema_message(missing_tables, missing_columns))

    def describe(self) -> str:
        """Where this database is, for messages and run ledgers (stable across runs)."""
        label = f"{self.name} " if self.name else ""
        return f"local D1 database {label}({self.path.absolute()})"

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LocalD1:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin(self) -> None:
        try:
            self._conn.execute("PRAGMA foreign_keys=ON")  # D1 enforces them; a no-op inside BEGIN
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_error(exc, 0) from exc

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _query_error(self, exc: sqlite3.Error) -> SourceError:
        text = str(exc)
        if "no such table" in text or "no such column" in text:
            return D1SchemaError(
                f"{self.describe()}: {text}; apply the plan's schema {SCHEMA_FILE} with "
                f"`{self._execute_command()}`"
            )
        if _error_name(exc).startswith(_CORRUPT):
            return _read_error(exc, self.path)
        return SourceError(f"query on {self.describe()} failed: {text}")

    def _write_error(self, exc: sqlite3.Error, statement: int) -> Exception:
        name = _error_name(exc)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return TargetLockedError(
                f"D1 database {self.path} is locked by another process "
                "(is `wrangler dev` running?); stop it and retry"
            )
        if name.startswith(_CORRUPT):
            return _read_error(exc, self.path)
        if name.startswith("SQLITE_READONLY"):
            return BackfillError(
                f"D1 database {self.path} is read-only ({exc}); give kv2d1 write access to the "
                "file and its directory, or write a SQL file with --sql-out instead"
            )
        where = f"statement {statement} of the batch" if statement else "starting the batch"
        return BackfillError(
            f"{where} failed on {self.describe()} ({exc}); nothing of this batch was written"
        )

    def _schema_message(self, tables: list[str], columns: list[str]) -> str:
        lacks = []
        if tables:
            lacks.append("tables " + ", ".join(tables))
        if columns:
            lacks.append("columns " + ", ".join(columns))
        fix = f"apply the plan's schema {SCHEMA_FILE} with `{self._execute_command()}`"
        if columns:
            fix += " (it only creates missing tables: add missing columns with ALTER TABLE)"
        return f"{self.describe()} lacks the plan's {' and '.join(lacks)}; {fix}"

    def _execute_command(self) -> str:
        return f"wrangler d1 execute {self.name or '<database_name>'} --local --file {SCHEMA_FILE}"

    def _create_hint(self) -> str:
        return self._create_hint_for(self.name or "<database_name>")

    @staticmethod
    def _create_hint_for(name: str) -> str:
        return f"create it with `wrangler d1 execute {name} --local --file {SCHEMA_FILE}`"


# --- both, from the wrangler config -----------------------------------------------------------


def open_local_sources(
    config: LocalConfig,
    *,
    kv_binding: str | None = None,
    d1_binding: str | None = None,
    persist_to: Path | None = None,
    preview: bool | None = None,
    writable: bool = False,
    dev_rule: bool = False,
    now_ms: int,
) -> tuple[LocalKv, LocalD1, dict[str, Any]]:
    """The local KV namespace and D1 database of two bindings, and the report's `source` block.

    `now_ms` is the run's `as_of` in epoch ms: which keys are alive (`LocalKv`).

    The block names the config, the bindings, the ids the files were found by (and the rule
    that chose the KV id) and the files themselves; it never holds a secret.
    """
    kv_entry = config.kv_binding(kv_binding)
    d1_entry = config.d1_binding(d1_binding)
    kv_id = local_kv_id(kv_entry, preview=preview, dev_rule=dev_rule)
    d1_id = local_d1_id(d1_entry)
    v3_dir = persist_root(config, persist_to) / "v3"
    kv = LocalKv(v3_dir, kv_id, now_ms=now_ms)
    try:
        d1 = LocalD1.for_database(
            v3_dir, d1_id, name=d1_entry.database_name or d1_entry.binding, readonly=not writable
        )
    except BaseException:
        kv.close()
        raise
    source = {
        "kind": "local",
        "config": str(config.path),
        "env": config.env,
        "kv_binding": kv_entry.binding,
        "kv_namespace_id": kv_id,
        "kv_rule": RULE_DEV if dev_rule else RULE_KV_KEY,
        "preview": preview,
        "d1_binding": d1_entry.binding,
        "d1_database_id": d1_id,
        "d1_database_name": d1_entry.database_name,
        "persist_to": None if persist_to is None else str(persist_to),
        "state_dir": str(v3_dir),
        "kv_file": str(kv.sqlite_path),
        "kv_blobs": str(kv.blob_dir),
        "d1_file": str(d1.path),
        "snapshot": None,
    }
    return kv, d1, source
