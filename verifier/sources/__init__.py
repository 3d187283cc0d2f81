"""Where KV entries and D1 rows come from: local wrangler state, the REST API, a snapshot file.

Each is a small protocol; the three implementations are interchangeable, so the diff never knows
which one it reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from verifier.model import KeyInfo, KvEntry


class KvSource(Protocol):
    """A Workers KV namespace, read-only."""

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        """Every live key starting with `prefix`, in UTF-8 byte order of the key."""
        ...

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        """The entries of `keys`, in the order given; keys that no longer exist are left out."""
        ...


@runtime_checkable
class CountingKvSource(KvSource, Protocol):
    """A KV source that counts its live keys without listing them (local state, snapshots).

    A verify then lists only the keys under the profile's prefixes, not the unrelated ones.
    """

    def count_keys(self) -> int:
        """How many keys `iter_keys()` would yield."""
        ...

    def iter_key_names(self, prefix: str = "") -> Iterator[str]:
        """The names `iter_keys(prefix)` would list, without expiration and metadata."""
        ...


class D1Source(Protocol):
    """A D1 database; `query` reads, `execute_batch` (and `execute_batch_rows`) write atomically."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of one SELECT, as tuples in the order of its columns."""
        ...

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run statements as one transaction; return the number of rows each changed."""
        ...

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        """Run statements as one transaction; per statement, the rows it changed and the rows
        it returned (a SELECT's, as tuples in the order of its columns; none for a write).

        A SELECT in the batch reads inside the transaction: it sees the batch's earlier writes
        and no other writer's.
        """
        ...

    def describe(self) -> str:
        """Where this database is, for messages (never a secret)."""
        ...
