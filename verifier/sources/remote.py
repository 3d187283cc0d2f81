"""Remote mode: Workers KV and D1 through the Cloudflare REST API, with few requests.

Request budget: listing L keys costs ⌈L/1000⌉ requests (more only when the API returns short
pages), reading N text values ⌈N/100⌉ bulk gets, a D1 table of R rows ⌈(R+1)/page⌉ queries.
The client underneath (credentials, retries, the rate limiter, error messages) is
`verifier.sources.cloudflare`; its public names are re-exported here (`__all__`), and
`open_remote_sources` reads `RetryPolicy` from this module, so swapping `remote.RetryPolicy`
changes the retries of the clients it builds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from verifier.errors import ApiError, ConfigError
from verifier.model import KeyInfo, KvEntry
from verifier.sources.cloudflare import (
    D1_READ,
    D1_WRITE,
    DEFAULT_BASE_URL,
    KV_READ,
    CloudflareClient,
    Envelope,
    RateLimiter,
    RemoteCredentials,
    RequestKind,
    RequestStats,
    RetryPolicy,
    float_or_none,
)

__all__ = [
    "BULK_GET_MAX",
    "D1_MAX_PARAMS",
    "D1_MAX_SQL_BYTES",
    "D1_READ",
    "D1_WRITE",
    "DEFAULT_BASE_URL",
    "KV_READ",
    "LIST_PAGE_MAX",
    "CloudflareClient",
    "D1DatabaseBinding",
    "Envelope",
    "KvNamespaceBinding",
    "RateLimiter",
    "RemoteConfig",
    "RemoteCredentials",
    "RemoteD1",
    "RemoteKv",
    "RequestKind",
    "RequestStats",
    "RetryPolicy",
    "open_remote_sources",
    "resolve_d1_database_id",
]

log = logging.getLogger(__name__)

LIST_PAGE_MAX = 1000
BULK_GET_MAX = 100
D1_MAX_PARAMS = 100
D1_MAX_SQL_BYTES = 100_000
_BULK_GET_REFUSALS = frozenset({400, 413, 422})
_T = TypeVar("_T")
_R = TypeVar("_R")


def _opt_int(value: Any) -> int | None:
    """An expiration as epoch seconds; absent, null or not a number gives None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    number = float_or_none(str(value))
    return None if number is None else int(number)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in_order(work: Callable[[_T], _R], items: Iterable[_T], *, workers: int) -> Iterator[_R]:
    """`work` over `items` on a few threads, results in input order, at most `workers` ahead."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kv2d1-remote")
    pending: deque[Future[_R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class RemoteKv:
    """A Workers KV namespace read through the REST API (a `KvSource`).

    Values come from bulk gets as text (`withMetadata`), `parallel` at a time. A value the API
    cannot give as text (binary) is read with a single GET, plus a metadata GET when
    `with_metadata`; a batch the API refuses for such a value is halved until the value is found.
    """

    def __init__(
        self,
        client: CloudflareClient,
        namespace_id: str,
        *,
        page_size: int = LIST_PAGE_MAX,
        batch_size: int = BULK_GET_MAX,
        parallel: int = 4,
        with_metadata: bool = True,
        as_of: dt.datetime | None = None,
    ) -> None:
        if not 10 <= page_size <= LIST_PAGE_MAX or not 1 <= batch_size <= BULK_GET_MAX:
            raise ValueError("page_size must be 10..1000 and batch_size 1..100")
        self.client = client
        self.namespace_id = namespace_id
        self.page_size = page_size
        self.batch_size = batch_size
        self.parallel = max(parallel, 1)
        self.with_metadata = with_metadata
        # The run's `as_of`: a key whose expiration is not after it is expired (the API drops
        # such keys itself within seconds; this keeps an `--as-of` run's view). None: the API's.
        self._as_of_s = None if as_of is None else as_of.timestamp()

    def describe(self) -> str:
        return f"KV namespace {self.namespace_id}"

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        """Every live key starting with `prefix`, page after page until the cursor is empty.

        The API lists keys in increasing UTF-8 byte order and never gives a cursor twice; a
        server that does either (a cursor seen before, a key not after the one before it, expired
        keys included) ends the listing with an `ApiError` naming the page, before the offending
        key is yielded. So a misbehaving server costs at most one request more than the pages it
        gave, and no key is counted twice.
        """
        what = f"listing the keys of {self.describe()}" + (
            f" with prefix {prefix!r}" if prefix else ""
        )
        cursor = ""
        seen_cursors: set[str] = set()
        previous: tuple[str, bytes] | None = None  # the last key listed: name and UTF-8 bytes
        page = 0
        while True:
            page += 1
            envelope = self.client.call(
                "GET",
                self._path("keys"),
                kind=RequestKind.LIST,
                what=what,
                permission=KV_READ,
                params=self._list_params(prefix, cursor),
            )
            for item in _as_list(envelope.result, what):
                info = _key_info(item, what)
                previous = self._in_order(previous, info.name, page, what)
                if self._alive(info.expiration):
                    yield info
            next_cursor = envelope.result_info.get("cursor") or ""
            if not next_cursor:
                return
            _check_cursor(next_cursor, cursor, seen_cursors, page, what)
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        """The entries of `keys` in the order given; keys that no longer exist are left out."""
        batches = _chunks(keys, self.batch_size)
        if len(keys) <= self.batch_size or self.parallel == 1:
            for batch in batches:
                yield from (e for e in self._read_batch(batch) if self._alive(e.expiration))
            return
        for entries in _in_order(self._read_batch, batches, workers=self.parallel):
            yield from (e for e in entries if self._alive(e.expiration))

    def _alive(self, expiration: int | None) -> bool:
        return expiration is None or self._as_of_s is None or expiration > self._as_of_s

    def _in_order(
        self, previous: tuple[str, bytes] | None, name: str, page: int, what: str
    ) -> tuple[str, bytes]:
        """`name` with its UTF-8 bytes when they come strictly after `previous`'s; else ApiError.

        A lone surrogate (possible in JSON, never in a real key) is encoded with
        `surrogatepass`, so it is compared rather than crashing the listing.
        """
        data = name.encode("utf-8", "surrogatepass")
        if previous is not None and data <= previous[1]:
            message = (
                f"the API listed the key {name!r} after the key {previous[0]!r} (page {page}) "
                f"while {what}: the listing repeated or reordered keys (they must come in "
                "strictly increasing UTF-8 byte order), so the key count would be wrong; "
                "run again later"
            )
            # The key names come from the server: keep the token out even if one repeats it.
            raise ApiError(message.replace(self.client.credentials.api_token, "[redacted]"))
        return name, data

    def _list_params(self, prefix: str, cursor: str) -> dict[str, str]:
        params = {"limit": str(self.page_size)}
        if prefix:
            params["prefix"] = prefix
        if cursor:
            params["cursor"] = cursor
        return params

    def _read_batch(self, batch: Sequence[str]) -> list[KvEntry]:
        what = f"reading {len(batch)} values of {self.describe()} (bulk get)"
        try:
            envelope = self.client.call(
                "POST",
                self._path("bulk", "get"),
                kind=RequestKind.BULK_GET,
                what=what,
                permission=KV_READ,
                body={"keys": list(batch), "type": "text", "withMetadata": True},
            )
        except ApiError as exc:
            if exc.status not in _BULK_GET_REFUSALS:
                raise
            log.info("bulk get refused (%s); splitting the %d keys", exc, len(batch))
            return self._read_refused(batch)
        values = envelope.result.get("values") if isinstance(envelope.result, dict) else None
        if not isinstance(values, dict):
            raise ApiError(f"the API answered without `values` while {what}")
        entries = []
        for key in batch:
            if (item := values.get(key)) is not None:
                entry = _text_entry(key, item) or self._read_one(key)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _read_refused(self, batch: Sequence[str]) -> list[KvEntry]:
        """Halve a refused batch until the refusal is one key (a binary value), read as bytes.

        A single binary value among 100 costs about 15 requests this way, not 200.
        """
        if len(batch) == 1:
            entry = self._read_one(batch[0])
            return [] if entry is None else [entry]
        middle = len(batch) // 2
        return self._read_batch(batch[:middle]) + self._read_batch(batch[middle:])

    def _read_one(self, key: str) -> KvEntry | None:
        """One value as raw bytes (for values bulk get cannot give as text); None when gone."""
        if key in (".", ".."):
            raise ApiError(
                f"the key {key!r} cannot be read through the REST API (not a path segment)"
            )
        what = f"reading the value of key {key!r} of {self.describe()}"
        try:
            response = self.client.fetch_bytes(
                self._path("values", key), kind=RequestKind.GET_VALUE, what=what, permission=KV_READ
            )
            metadata = self._read_metadata(key) if self.with_metadata else None
        except ApiError as exc:
            if exc.code == 10009:
                return None
            raise
        return KvEntry(
            key, response.content, _opt_int(response.headers.get("expiration")), metadata
        )

    def _read_metadata(self, key: str) -> Any:
        what = f"reading the metadata of key {key!r} of {self.describe()}"
        return self.client.call(
            "GET",
            self._path("metadata", key),
            kind=RequestKind.GET_METADATA,
            what=what,
            permission=KV_READ,
        ).result

    def _path(self, *segments: str) -> str:
        return self.client.account_path("storage", "kv", "namespaces", self.namespace_id, *segments)


def _as_list(result: Any, what: str) -> list[Any]:
    if not isinstance(result, list):
        raise ApiError(f"the API answered with a result that is not a list while {what}")
    return result


def _check_cursor(next_cursor: str, cursor: str, seen: set[str], page: int, what: str) -> None:
    """ApiError when page `page` answered with a cursor already given in this listing.

    `cursor` is the one page `page` was asked with; giving it back is the commonest case and
    keeps its own wording. The cursors themselves stay out of the message.
    """
    if next_cursor == cursor:
        happened = "the same cursor twice"
    elif next_cursor in seen:
        happened = "a cursor it had already given"
    else:
        return
    raise ApiError(
        f"the API returned {happened} (page {page}) while {what}: "
        "stopping rather than listing forever; run again later"
    )


def _key_info(item: Any, what: str) -> KeyInfo:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ApiError(f"the API listed a key without a name while {what}")
    return KeyInfo(item["name"], _opt_int(item.get("expiration")), item.get("metadata"))


def _text_entry(key: str, item: Any) -> KvEntry | None:
    """A bulk-get item as an entry; None when it is not usable text (then read the bytes).

    U+FFFD marks a value that may have been decoded lossily from non-UTF-8 bytes, and a lone
    surrogate cannot be encoded: both are read again with a single GET to keep the exact bytes.
    """
    value = item.get("value") if isinstance(item, dict) else item
    if not isinstance(value, str) or "\ufffd" in value:
        return None
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if not isinstance(item, dict):
        return KvEntry(key, data)
    return KvEntry(key, data, _opt_int(item.get("expiration")), item.get("metadata"))


class RemoteD1:
    """A D1 database through the REST API (a `D1Source`): `/raw` to read, `/query` batches to write.

    Text parameters are bound; None, numbers and bytes are written into the SQL as literals,
    because the API documents `params` as strings only.
    """

    def __init__(
        self, client: CloudflareClient, database_id: str, *, name: str | None = None
    ) -> None:
        self.client = client
        self.database_id = database_id
        self.name = name

    def describe(self) -> str:
        label = f"{self.name} ({self.database_id})" if self.name else self.database_id
        return f"D1 database {label} in account {self.client.credentials.account_id}"

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of one SELECT (the last statement's, if `sql` holds several)."""
        what = f"querying {self.describe()}"
        envelope = self.client.call(
            "POST",
            self._path("raw"),
            kind=RequestKind.D1_QUERY,
            what=what,
            permission=D1_READ,
            body=_statement(sql, params),
        )
        results = _as_list(envelope.result, what)
        if not results or not isinstance(results[-1], dict):
            raise ApiError(f"the API answered without a statement result while {what}")
        rows = (results[-1].get("results") or {}).get("rows") or []
        return iter([tuple(row) for row in rows])

    def iter_table(
        self,
        table: str,
        columns: Sequence[str],
        *,
        where_sql: str = "",
        where_params: Sequence[Any] = (),
        order_by_pk: str = "id",
        page: int = 5000,
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of `table` in primary-key order, `page` rows per request (keyset paging).

        The primary key must be an integer column; it is added to the selection when absent
        from `columns` and left out of the rows yielded.
        """
        selected = list(columns) if order_by_pk in columns else [order_by_pk, *columns]
        pk_index, strip = selected.index(order_by_pk), order_by_pk not in columns
        head = f"SELECT {', '.join(map(_ident, selected))} FROM {_ident(table)} WHERE "
        head += f"({where_sql}) AND " if where_sql else ""
        after: int | None = None
        while True:
            bound = "1" if after is None else f"{_ident(order_by_pk)} > {after}"
            sql = f"{head}{bound} ORDER BY {_ident(order_by_pk)} LIMIT {int(page)}"
            rows = list(self.query(sql, where_params))
            yield from (row[1:] if strip else row for row in rows)
            if len(rows) < page:
                return
            after = _pk(rows[-1][pk_index], table)

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run `statements` as one atomic batch (one request); the rows each one changed.

        Each statement is checked against D1's limits before anything is sent. A retried batch
        may run twice: the statements must be idempotent (backfill's inserts are guarded).
        """
        return [_changes(result) for result in self._post_batch("query", statements)]

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        """As `execute_batch`, with the rows each statement returned (a SELECT's): one request
        to `/raw`, whose results keep a SELECT's columns in order (`{"columns", "rows"}`)."""
        return [(_changes(r), _raw_rows(r)) for r in self._post_batch("raw", statements)]

    def _post_batch(
        self, endpoint: str, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[Any]:
        """The per-statement results of one `{"batch": …}` request to `endpoint`."""
        if not statements:
            return []
        batch = [_statement(sql, params, index=i) for i, (sql, params) in enumerate(statements)]
        what = f"running a batch of {len(batch)} statements on {self.describe()}"
        envelope = self.client.call(
            "POST",
            self._path(endpoint),
            kind=RequestKind.D1_BATCH,
            what=what,
            permission=D1_WRITE,
            body={"batch": batch},
        )
        results = _as_list(envelope.result, what)
        if len(results) != len(batch):
            raise ApiError(
                f"the API answered {len(results)} results for {len(batch)} statements while {what}"
            )
        return results

    def time_travel_bookmark(self, *, timestamp: str | None = None) -> str:
        """The Time Travel bookmark now (or at `timestamp`): what a rollback restores to."""
        what = f"reading the Time Travel bookmark of {self.describe()}"
        envelope = self.client.call(
            "GET",
            self._path("time_travel", "bookmark"),
            kind=RequestKind.ACCOUNT,
            what=what,
            permission=D1_READ,
            params={"timestamp": timestamp} if timestamp else None,
        )
        bookmark = envelope.result.get("bookmark") if isinstance(envelope.result, dict) else None
        if not isinstance(bookmark, str) or not bookmark:
            raise ApiError(f"the API answered without a bookmark while {what}")
        return bookmark

    def _path(self, *segments: str) -> str:
        return self.client.account_path("d1", "database", self.database_id, *segments)


def resolve_d1_database_id(client: CloudflareClient, name: str) -> str:
    """The UUID of the D1 database called `name` (as wrangler resolves `database_name`)."""
    what = f"looking up the D1 database named {name!r}"
    envelope = client.call(
        "GET",
        client.account_path("d1", "database"),
        kind=RequestKind.ACCOUNT,
        what=what,
        permission=D1_READ,
        params={"name": name},
    )
    for item in _as_list(envelope.result, what):
        if (
            isinstance(item, dict)
            and item.get("name") == name
            and isinstance(item.get("uuid"), str)
        ):
            return str(item["uuid"])
    raise ApiError(
        f"no D1 database named {name!r} in account {client.credentials.account_id}: "
        "check database_name in the wrangler config, or give database_id"
    )


class KvNamespaceBinding(Protocol):
    """A `kv_namespaces` entry of the wrangler config, as far as remote mode reads it."""

    @property
    def binding(self) -> str: ...

    @property
    def id(self) -> str | None: ...


class D1DatabaseBinding(Protocol):
    """A `d1_databases` entry of the wrangler config, as far as remote mode reads it."""

    @property
    def binding(self) -> str: ...

    @property
    def database_id(self) -> str | None: ...

    @property
    def database_name(self) -> str | None: ...


class RemoteConfig(Protocol):
    """The wrangler config (one environment), as far as remote mode reads it."""

    @property
    def account_id(self) -> str | None: ...

    @property
    def kv_namespaces(self) -> Sequence[KvNamespaceBinding]: ...

    @property
    def d1_databases(self) -> Sequence[D1DatabaseBinding]: ...


_Binding = TypeVar("_Binding", KvNamespaceBinding, D1DatabaseBinding)


def open_remote_sources(
    config: RemoteConfig,
    *,
    kv_binding: str | None = None,
    d1_binding: str | None = None,
    environ: Mapping[str, str] | None = None,
    client: CloudflareClient | None = None,
    as_of: dt.datetime | None = None,
) -> tuple[RemoteKv, RemoteD1, dict[str, Any]]:
    """The KV namespace and D1 database of two bindings, through the REST API.

    Credentials come from the environment (`RemoteCredentials.from_env`) unless `client` is
    given. A binding left as None must be the only one of its kind. A D1 binding without
    `database_id` is resolved by `database_name` (one request). The returned `source` describes
    where the data came from, for reports; it never holds the token.
    """
    kv_entry = _pick(config.kv_namespaces, kv_binding, "kv_namespaces", "--kv-binding")
    d1_entry = _pick(config.d1_databases, d1_binding, "d1_databases", "--d1-binding")
    if not kv_entry.id:
        raise ConfigError(
            f"KV binding {kv_entry.binding!r} has no id in the wrangler config: "
            "remote mode needs the namespace id (wrangler kv namespace list)"
        )
    # `RetryPolicy` is read from this module, where tests swap it for faster retries.
    client = client or CloudflareClient(
        RemoteCredentials.from_env(config.account_id, environ=environ), retry=RetryPolicy()
    )
    database_id = d1_entry.database_id or _database_id_by_name(client, d1_entry)
    source = {
        "kind": "remote",
        "account_id": client.credentials.account_id,
        "base_url": client.credentials.base_url,
        "kv_binding": kv_entry.binding,
        "kv_namespace_id": kv_entry.id,
        "d1_binding": d1_entry.binding,
        "d1_database_id": database_id,
        "d1_database_name": d1_entry.database_name,
    }
    d1 = RemoteD1(client, database_id, name=d1_entry.database_name)
    return RemoteKv(client, kv_entry.id, as_of=as_of), d1, source


def _pick(entries: Sequence[_Binding], name: str | None, section: str, option: str) -> _Binding:
    """The binding called `name`, or the only one when `name` is None."""
    names = ", ".join(entry.binding for entry in entries) or "none"
    if name is None and len(entries) == 1:
        return entries[0]
    if name is None:
        raise ConfigError(
            f"the wrangler config has {len(entries)} [[{section}]] bindings "
            f"({names}): choose one with {option}"
        )
    for entry in entries:
        if entry.binding == name:
            return entry
    raise ConfigError(
        f"no binding {name!r} in [[{section}]] of the wrangler config (it has: "
        f"{names}); check {option}"
    )


def _database_id_by_name(client: CloudflareClient, entry: D1DatabaseBinding) -> str:
    if not entry.database_name:
        raise ConfigError(
            f"D1 binding {entry.binding!r} has neither database_id nor "
            "database_name in the wrangler config"
        )
    return resolve_d1_database_id(client, entry.database_name)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pk(value: Any, table: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            f"table {table} cannot be paged: its key column holds {value!r}, not an integer"
        )
    return value


def _raw_rows(result: Any) -> list[tuple[Any, ...]]:
    """The rows of one `/raw` statement result (none for a write)."""
    results = result.get("results") if isinstance(result, dict) else None
    rows = results.get("rows") if isinstance(results, dict) else None
    return [tuple(row) for row in rows or [] if isinstance(row, list)]


def _changes(result: Any) -> int:
    meta = result.get("meta") if isinstance(result, dict) else None
    changes = meta.get("changes") if isinstance(meta, dict) else None
    return int(changes) if isinstance(changes, int | float) else 0


# One SQL token: string literal, quoted identifier, comment, parameter, or other text.
_SQL_PIECE = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|\Z)"
    r"|\?\d*|[^'\"`\[\-/?]+|.",
    re.S,
)


def _statement(sql: str, params: Sequence[Any], *, index: int = 0) -> dict[str, Any]:
    """One `{sql, params}` item within D1's limits; `params` is left out when empty."""
    sql, bound = _bind_as_text(sql, params)
    where = f"statement {index + 1}"
    if len(bound) > D1_MAX_PARAMS:
        raise ApiError(
            f"{where} binds {len(bound)} parameters; D1 allows at most "
            f"{D1_MAX_PARAMS} per statement: split it into smaller statements"
        )
    if (size := len(sql.encode("utf-8"))) > D1_MAX_SQL_BYTES:
        raise ApiError(
            f"{where} is {size:,} bytes of SQL; D1 allows at most "
            f"{D1_MAX_SQL_BYTES:,} bytes per statement: split it into smaller statements"
        )
    return {"sql": sql, "params": bound} if bound else {"sql": sql}


def _bind_as_text(sql: str, params: Sequence[Any]) -> tuple[str, list[str]]:
    """Keep text values as `?` parameters; write every other value into the SQL as a literal."""
    values = list(params)
    if all(isinstance(value, str) for value in values):
        return sql, values
    pieces: list[str] = []
    bound: list[str] = []
    for piece in _SQL_PIECE.findall(sql):
        if not piece.startswith("?"):
            pieces.append(piece)
            continue
        if piece != "?":
            raise ApiError(f"cannot bind non-text values to {piece!r}: use plain `?` placeholders")
        if not values:
            raise ApiError(
                f"the statement has more `?` placeholders than its {len(params)} parameters"
            )
        value = values.pop(0)
        pieces.append("?" if isinstance(value, str) else _sql_literal(value))
        if isinstance(value, str):
            bound.append(value)
    if values:
        raise ApiError(
            f"the statement has fewer `?` placeholders than its {len(params)} parameters"
        )
    return "".join(pieces), bound


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float) and math.isfinite(value):
        text = str(value) if isinstance(value, int) else repr(value)
        # in brackets when negative: `x-?` must not become the comment `x--5`
        return f"({text})" if text.startswith("-") else text
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex() + "'"
    raise ApiError(f"cannot send the parameter {value!r} to D1: only text, numbers, bytes and None")
