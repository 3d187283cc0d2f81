"""Load one dataset into the loopback Cloudflare API, so local and remote hold the same data.

The data is read through the source protocols (`KvSource`, `D1Source`) — typically the local
sources of a worker written by `verifier.synth` — and written straight into the stub's SQLite
backing, so what the API serves is byte for byte what the local state holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cfserver import CloudflareStub
from verifier.model import Table
from verifier.profile import schema_dir
from verifier.sources import D1Source, KvSource

TABLES = tuple(table.value for table in Table)


@dataclass(frozen=True)
class RemoteCopy:
    """Where the loaded data lives on the stub, and how much of it there is."""

    namespace_id: str
    database_id: str
    database_name: str
    keys: int
    rows: dict[str, int]


def load_kv(stub: CloudflareStub, namespace_id: str, kv: KvSource, *, page: int = 1000) -> int:
    """Every entry of `kv` into the stub's namespace (created if new); the number loaded."""
    stub.add_namespace(namespace_id)
    loaded = 0
    for names in _chunks((info.name for info in kv.iter_keys()), page):
        for entry in kv.get_many(names):
            stub.kv_put(
                namespace_id,
                entry.key,
                entry.value,
                expiration=entry.expiration,
                metadata=entry.metadata,
            )
            loaded += 1
    return loaded


def load_d1(stub: CloudflareStub, name: str, d1: D1Source) -> tuple[str, dict[str, int]]:
    """A new stub database with the plan's schema and every row of `d1`'s plan tables."""
    database_id = stub.add_database(name, schema_sql=_plan_ddl())
    conn = stub.d1(database_id)
    counts = {}
    conn.execute("BEGIN")
    for table in TABLES:
        columns = [row[1] for row in d1.query(f"PRAGMA table_info({table})")]
        names, marks = ", ".join(columns), ", ".join("?" * len(columns))
        rows = d1.query(f"SELECT {names} FROM {table} ORDER BY id")
        cursor = conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
        counts[table] = cursor.rowcount
    conn.execute("COMMIT")
    return database_id, counts


def load_remote_copy(
    stub: CloudflareStub,
    kv: KvSource,
    d1: D1Source,
    *,
    namespace_id: str,
    database_name: str,
) -> RemoteCopy:
    """Both sides of a dataset into the stub."""
    keys = load_kv(stub, namespace_id, kv)
    database_id, rows = load_d1(stub, database_name, d1)
    return RemoteCopy(namespace_id, database_id, database_name, keys, rows)


def write_remote_config(
    directory: Path,
    copy: RemoteCopy,
    *,
    kv_binding: str,
    d1_binding: str,
) -> Path:
    """A wrangler.toml whose bindings point at the stub's namespace and database."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "wrangler.toml"
    path.write_text(
        'name = "kv2d1-remote-e2e"\n'
        'main = "src/index.js"\n'
        'compatibility_date = "2026-01-01"\n\n'
        "[[kv_namespaces]]\n"
        f'binding = "{kv_binding}"\n'
        f'id = "{copy.namespace_id}"\n\n'
        "[[d1_databases]]\n"
        f'binding = "{d1_binding}"\n'
        f'database_name = "{copy.database_name}"\n'
        f'database_id = "{copy.database_id}"\n',
        encoding="utf-8",
    )
    return path


def _plan_ddl() -> str:
    return (schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8")


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
