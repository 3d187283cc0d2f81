"""A loopback Cloudflare REST API for integration tests: Workers KV and D1 backed by SQLite.

CloudflareStub        the account's state (namespaces, keys, databases) and the request logic
├── FaultPlan         seeded faults: 429 (Retry-After seconds or date), 5xx, dropped bodies,
│                     non-JSON answers, slow answers
├── ServerRateLimit   optional enforcement: N requests per sliding window → 429, both header styles
└── OpenApiContract   checks each request and JSON answer against the OpenAPI subset
serve(stub)           a ThreadingHTTPServer on 127.0.0.1:0 in a background thread
FakeClock, ScaledClock  clocks for tests: one moves only when slept on, one runs faster than real

Behaviour follows shared/reference/cloudflare-api.md §5. Where the reference leaves an error code
unverified (KV validation: 10001 here), the code is this stub's choice; clients must not rely on it.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import json
import math
import random
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
from jsonschema.exceptions import best_match

TOKEN = "cf-test-token-7Hq2ZrX9pLk4Vw1s"  # distinctive, so a leak is easy to grep for
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
NAMESPACE = "0f2ac74b498b48028cb68387c421e279"
API_PREFIX = "/client/v4"
MAX_BODY = 110 * 1024 * 1024
KV_BAD_REQUEST = 10001  # unverified (reference §6): the stub's code for KV validation errors
KV = "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}"
D1 = "/accounts/{account_id}/d1/database/{database_id}"
_TRANSACTION_SQL = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


class CfError(Exception):
    """An API error answer: HTTP status, envelope code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    kind: str
    handler: str
    in_subset: bool = True

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        return re.compile(regex + r"\Z")


ROUTES = (
    Route("GET", KV + "/keys", "list", "kv_list"),
    Route("GET", KV + "/values/{key_name}", "get_value", "kv_get_value"),
    Route("PUT", KV + "/values/{key_name}", "put_value", "kv_put_value"),
    Route("DELETE", KV + "/values/{key_name}", "delete_value", "kv_delete_value"),
    Route("GET", KV + "/metadata/{key_name}", "get_metadata", "kv_get_metadata"),
    Route("PUT", KV + "/bulk", "bulk_put", "kv_bulk_put"),
    Route("DELETE", KV + "/bulk", "bulk_delete", "kv_bulk_delete"),
    Route("POST", KV + "/bulk/delete", "bulk_delete", "kv_bulk_delete"),
    Route("POST", KV + "/bulk/get", "bulk_get", "kv_bulk_get"),
    Route("POST", D1 + "/query", "d1_query", "d1_query"),
    Route("POST", D1 + "/raw", "d1_raw", "d1_raw"),
    Route("GET", "/accounts/{account_id}/d1/database", "d1_list", "d1_list", in_subset=False),
    Route("GET", D1 + "/time_travel/bookmark", "d1_bookmark", "d1_bookmark", in_subset=False),
)
_PATTERNS = tuple((route, route.pattern) for route in ROUTES)


def _route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route, pattern in _PATTERNS:
        if route.method == method and (found := pattern.match(path)):
            return route, {name: unquote(value) for name, value in found.groupdict().items()}
    return None


@dataclass
class Request:
    method: str
    path: str
    route: Route
    params: dict[str, str]
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CfError(
                400,
                7400 if "/d1/" in self.path else KV_BAD_REQUEST,
                "Invalid request body: not JSON",
            ) from None


@dataclass
class Reply:
    status: int = 200
    payload: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def ok(cls, result: Any, result_info: dict[str, Any] | None = None) -> Reply:
        payload = {"success": True, "errors": [], "messages": [], "result": result}
        if result_info is not None:
            payload["result_info"] = result_info
        return cls(payload=payload)

    @classmethod
    def error(cls, status: int, code: int, message: str) -> Reply:
        errors = [{"code": code, "message": message}]
        return cls(status, {"success": False, "errors": errors, "messages": [], "result": None})

    def body(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.payload).encode()


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail, drawn from a seeded RNG; each rate is a fraction of all requests.

    `dropped` requests are carried out, then the connection closes halfway through the answer.
    """

    seed: int = 0
    rate_limited: float = 0.0
    server_error: float = 0.0
    dropped: float = 0.0
    non_json: float = 0.0
    retry_after: str = "seconds"  # "seconds", "date", "mixed" or "none"
    retry_after_s: int = 1
    non_json_status: int = 200
    delay_s: float = 0.0
    kinds: frozenset[str] | None = None


class ServerRateLimit:
    """At most `max_requests` per sliding `window_s` of `clock` (scalable in tests); then 429.

    `style` picks the headers: "ratelimit" (`Ratelimit: "default";r=..;t=..`), "x-ratelimit"
    (`X-RateLimit-*`, reset as a date) or "none" (only `Retry-After`, on the 429).
    """

    def __init__(
        self,
        *,
        max_requests: int,
        window_s: float,
        style: str = "ratelimit",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests, self.window_s, self.style, self._clock = (
            max_requests,
            window_s,
            style,
            clock,
        )
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            now = self._clock()
            while self._starts and self._starts[0] <= now - self.window_s:
                self._starts.popleft()
            if len(self._starts) >= self.max_requests:
                wait = self._starts[0] + self.window_s - now
                return False, {
                    **self._headers(0, wait),
                    "Retry-After": str(max(math.ceil(wait), 1)),
                }
            self._starts.append(now)
            reset = self._starts[0] + self.window_s - now
            return True, self._headers(self.max_requests - len(self._starts), reset)

    def _headers(self, remaining: int, reset_s: float) -> dict[str, str]:
        if self.style == "none":
            return {}
        if self.style == "ratelimit":
            return {
                "Ratelimit": f'"default";r={remaining};t={math.ceil(reset_s)}',
                "Ratelimit-Policy": f'"burst";q={self.max_requests};w={math.ceil(self.window_s)}',
            }
        return {
            "X-RateLimit-Limit": str(self.max_requests),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": formatdate(time.time() + math.ceil(reset_s), usegmt=True),
        }


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    kind: str
    status: int
    fault: str | None


@dataclass
class _Database:
    uuid: str
    name: str
    conn: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: int = 0

    def run(self, statements: list[tuple[str, list[str]]], *, raw: bool) -> list[dict[str, Any]]:
        """Every statement in one transaction: all or nothing, as a D1 batch."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                results = [self._one(sql, params, raw=raw) for sql, params in statements]
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise CfError(400, 7500, f"{exc}: SQLITE_ERROR [code: 7500]") from None
            self.conn.execute("COMMIT")
            self.version += any(result["meta"]["changed_db"] for result in results)
            return results

    def _one(self, sql: str, params: list[str], *, raw: bool) -> dict[str, Any]:
        before, started = self.conn.total_changes, time.perf_counter()
        cursor = self.conn.execute(sql, params)
        rows = [[list(v) if isinstance(v, bytes) else v for v in row] for row in cursor.fetchall()]
        columns = [d[0] for d in cursor.description or ()]
        changes = self.conn.total_changes - before
        ms = (time.perf_counter() - started) * 1000
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        results: Any = (
            {"columns": columns, "rows": rows}
            if raw
            else [dict(zip(columns, row, strict=True)) for row in rows]
        )
        meta = {
            "changed_db": changes > 0,
            "changes": changes,
            "duration": ms,
            "last_row_id": cursor.lastrowid or 0,
            "rows_read": len(rows),
            "rows_written": changes,
            "size_after": pages * 4096,
            "served_by_colo": "LHR",
            "served_by_primary": True,
            "served_by_region": "WEUR",
            "timings": {"sql_duration_ms": ms},
        }
        return {"success": True, "results": results, "meta": meta}


class CloudflareStub:
    """One account of the Cloudflare API: KV namespaces and D1 databases, faults, a request log.

    Set state directly (`add_namespace`, `kv_put`, `add_database`) or through HTTP. `tokens`
    maps each accepted token to its scopes ("kv", "d1"): a token without the scope gets 403.
    """

    def __init__(
        self,
        *,
        token: str,
        account_id: str,
        contract: OpenApiContract | None = None,
        tokens: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.account_id = account_id
        self.tokens = {token: frozenset({"kv", "d1"}), **(tokens or {})}
        self.contract = contract
        self.rate_limit: ServerRateLimit | None = None
        self.list_page_caps: tuple[int, ...] = ()
        self.log: list[LoggedRequest] = []
        self.violations: list[str] = []
        self.base_url = ""
        self._faults = FaultPlan()
        self._rng = random.Random(0)
        self._lists = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._namespaces: set[str] = set()
        self._databases: dict[str, _Database] = {}
        self._kv = sqlite3.connect(":memory:", check_same_thread=False)
        self._kv.execute(
            "CREATE TABLE kv (ns TEXT, key BLOB, value BLOB, expiration INTEGER, "
            "metadata TEXT, PRIMARY KEY (ns, key)) WITHOUT ROWID"
        )

    # --- state ---------------------------------------------------------------------------------

    def set_faults(self, plan: FaultPlan) -> None:
        with self._lock:
            self._faults, self._rng = plan, random.Random(plan.seed)

    def add_namespace(self, namespace_id: str) -> None:
        self._namespaces.add(namespace_id)

    def kv_put(
        self,
        namespace_id: str,
        key: str,
        value: bytes | str,
        *,
        expiration: int | None = None,
        metadata: Any = None,
    ) -> None:
        data = value.encode() if isinstance(value, str) else value
        _check_entry(key, data, metadata)
        with self._lock:
            self._kv.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                (
                    namespace_id,
                    key.encode(),
                    data,
                    expiration,
                    None if metadata is None else json.dumps(metadata),
                ),
            )

    def add_database(self, name: str, *, schema_sql: str = "") -> str:
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.executescript(schema_sql)
        database = _Database(str(uuid.uuid4()), name, conn)
        self._databases[database.uuid] = database
        return database.uuid

    def d1(self, database_id: str) -> sqlite3.Connection:
        """The database's connection, to set up or read back rows (not while requests run)."""
        return self._databases[database_id].conn

    def counts(self) -> Counter[str]:
        return Counter(entry.kind for entry in self.log)

    def stop(self) -> None:
        self._stopping.set()

    # --- HTTP ----------------------------------------------------------------------------------

    def respond(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        body = _read_body(http)
        path = split.path.removeprefix(API_PREFIX) if split.path.startswith(API_PREFIX) else ""
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        matched = _route(http.command, path)
        if matched is None:
            self._note(http.command, path, query, "unknown", 404, None)
            return _send(http, Reply.error(404, 7003, "No route for the URI"), drop=False)
        route, params = matched
        request = Request(http.command, path, route, params, query, http.headers, body)
        if route.in_subset and self.contract:
            self._violations(self.contract.check_request(request))
        try:
            reply, fault = self._answer(request)
        except Exception as exc:  # a bug in the stub: fail the test, not just this request
            self._violations([f"{request.method} {path}: the stub crashed: {exc!r}"])
            reply, fault = Reply.error(500, 10001, "stub crashed"), "crash"
        # Injected faults and 429s imitate Cloudflare's edge (its rate limiter answers code 971,
        # below the spec's minimum of 1000), not the operation: the contract does not cover them.
        if (
            route.in_subset
            and self.contract
            and reply.raw is None
            and fault in (None, "drop")
            and reply.status != 429
        ):
            self._violations(self.contract.check_response(request, reply.status, reply.payload))
        self._note(http.command, path, query, route.kind, reply.status, fault)
        _send(http, reply, drop=fault == "drop")

    def _answer(self, request: Request) -> tuple[Reply, str | None]:
        extra: dict[str, str] = {}
        if self.rate_limit is not None:
            admitted, extra = self.rate_limit.admit()
            if not admitted:
                reply = Reply.error(
                    429, 971, "Please wait and consider throttling your request speed"
                )
                reply.headers.update(extra)
                return reply, None
        fault = self._draw_fault(request.route.kind)
        if fault not in (None, "drop"):
            return self._fault_reply(fault), fault
        if self._faults.delay_s:
            self._stopping.wait(self._faults.delay_s)
        try:
            self._authorise(request)
            reply = getattr(self, request.route.handler)(request)
        except CfError as exc:
            reply = Reply.error(exc.status, exc.code, exc.message)
        reply.headers.update(extra)
        return reply, fault

    def _authorise(self, request: Request) -> None:
        auth = request.headers.get("Authorization") or ""
        scopes = (
            self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        )
        if scopes is None:
            raise CfError(401, 10000, "Authentication error")
        needed = "kv" if "/storage/kv/" in request.route.template else "d1"
        if request.params.get("account_id") != self.account_id or needed not in scopes:
            raise CfError(403, 10000, "Authentication error")

    def _draw_fault(self, kind: str) -> str | None:
        plan = self._faults
        if plan.kinds is not None and kind not in plan.kinds:
            return None
        with self._lock:
            draw, pick = self._rng.random(), self._rng.random()
        for name, rate in (
            ("429", plan.rate_limited),
            ("5xx", plan.server_error),
            ("drop", plan.dropped),
            ("non_json", plan.non_json),
        ):
            if draw < rate:
                return ("500", "502", "503")[min(int(pick * 3), 2)] if name == "5xx" else name
            draw -= rate
        return None

    def _fault_reply(self, fault: str) -> Reply:
        plan = self._faults
        if fault == "429":
            reply = Reply.error(429, 971, "Please wait and consider throttling your request speed")
            style = plan.retry_after
            if style == "mixed":
                with self._lock:
                    style = "date" if self._rng.random() < 0.5 else "seconds"
            if style == "date":
                reply.headers["Retry-After"] = formatdate(
                    time.time() + plan.retry_after_s, usegmt=True
                )
            elif style == "seconds":
                reply.headers["Retry-After"] = str(plan.retry_after_s)
            return reply
        if fault == "502":
            return Reply(
                502, raw=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if fault in ("500", "503"):
            return Reply.error(
                int(fault), 10001 if fault == "500" else 10043, "Internal server error"
            )
        html = b"<!DOCTYPE html><html><body>Attention Required! | Cloudflare</body></html>"
        return Reply(plan.non_json_status, raw=html, content_type="text/html")

    def _note(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        kind: str,
        status: int,
        fault: str | None,
    ) -> None:
        with self._lock:
            self.log.append(LoggedRequest(method, path, query, kind, status, fault))

    def _violations(self, problems: list[str]) -> None:
        if problems:
            with self._lock:
                self.violations.extend(problems)

    # --- KV --------------------------------------------------------------------------------------

    def _namespace(self, request: Request, operation: str) -> str:
        namespace = request.params["namespace_id"]
        if namespace not in self._namespaces:
            raise CfError(404, 10013, f"{operation}: 'namespace not found'")
        return namespace

    def kv_list(self, request: Request) -> Reply:
        namespace = self._namespace(request, "list keys")
        limit = _int_query(request.query.get("limit", "1000"), "limit")
        if not 10 <= limit <= 1000:
            raise CfError(400, KV_BAD_REQUEST, f"Invalid key_limit of {limit}: 10 to 1000 allowed")
        prefix = request.query.get("prefix", "").encode()
        after, turn = _decode_cursor(request.query.get("cursor", ""))
        page = min(limit, self._page_cap())
        rows = self._kv_page(namespace, prefix, after, page + 1)
        shown, more = rows[:page], len(rows) > page
        last = shown[-1][0] if shown else after
        cursor = _encode_cursor(last, turn + 1) if more else ""
        keys = [_key_item(key, expiration, metadata) for key, expiration, metadata in shown]
        return Reply.ok(keys, {"count": len(keys), "cursor": cursor})

    def _page_cap(self) -> int:
        with self._lock:
            self._lists += 1
            caps = self.list_page_caps
            return caps[(self._lists - 1) % len(caps)] if caps else 1000

    def _kv_page(self, namespace: str, prefix: bytes, after: bytes, limit: int) -> list[Any]:
        sql = (
            "SELECT key, expiration, metadata FROM kv WHERE ns = ? AND key > ? "
            "AND (expiration IS NULL OR expiration > ?) AND substr(key, 1, ?) = ? "
            "ORDER BY key LIMIT ?"
        )
        with self._lock:
            return self._kv.execute(
                sql, (namespace, after, int(time.time()), len(prefix), prefix, limit)
            ).fetchall()

    def _kv_row(self, namespace: str, key: str) -> tuple[bytes, int | None, Any] | None:
        with self._lock:
            row = self._kv.execute(
                "SELECT value, expiration, metadata FROM kv WHERE ns = ? AND key = ? "
                "AND (expiration IS NULL OR expiration > ?)",
                (namespace, key.encode(), int(time.time())),
            ).fetchone()
        return None if row is None else (row[0], row[1], _loads(row[2]))

    def kv_get_value(self, request: Request) -> Reply:
        row = self._kv_row(self._namespace(request, "get"), request.params["key_name"])
        if row is None:
            raise CfError(404, 10009, "get: 'key not found'")
        headers = {"expiration": str(row[1])} if row[1] is not None else {}
        return Reply(raw=row[0], content_type="application/octet-stream", headers=headers)

    def kv_get_metadata(self, request: Request) -> Reply:
        row = self._kv_row(self._namespace(request, "get metadata"), request.params["key_name"])
        if row is None:
            raise CfError(404, 10009, "get metadata: 'key not found'")
        return Reply.ok(row[2])

    def kv_put_value(self, request: Request) -> Reply:
        namespace = self._namespace(request, "put")
        content_type = request.headers.get("Content-Type") or ""
        value, metadata = request.body, None
        if content_type.startswith("multipart/form-data"):
            parts = _multipart(content_type, request.body)
            if "value" not in parts:
                raise CfError(400, KV_BAD_REQUEST, "multipart body without a 'value' part")
            value, metadata = parts["value"], _loads(parts.get("metadata"))
        expiration = _expiration(
            request.query.get("expiration"), request.query.get("expiration_ttl")
        )
        self.kv_put(
            namespace, request.params["key_name"], value, expiration=expiration, metadata=metadata
        )
        return Reply.ok(None)

    def kv_delete_value(self, request: Request) -> Reply:
        self._delete(self._namespace(request, "delete"), [request.params["key_name"]])
        return Reply.ok(None)

    def kv_bulk_put(self, request: Request) -> Reply:
        namespace = self._namespace(request, "bulk put")
        items = _json_list(request.json(), 10_000, "bulk write")
        for item in items:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("key"), str)
                or not isinstance(item.get("value"), str)
            ):
                raise CfError(400, KV_BAD_REQUEST, "each item needs a string 'key' and 'value'")
            value = item["value"].encode()
            if item.get("base64"):
                value = base64.b64decode(item["value"], validate=True)
            expiration = _expiration(item.get("expiration"), item.get("expiration_ttl"))
            self.kv_put(
                namespace, item["key"], value, expiration=expiration, metadata=item.get("metadata")
            )
        return Reply.ok({"successful_key_count": len(items), "unsuccessful_keys": []})

    def kv_bulk_delete(self, request: Request) -> Reply:
        namespace = self._namespace(request, "bulk delete")
        keys = _json_list(request.json(), 10_000, "bulk delete")
        if not all(isinstance(key, str) for key in keys):
            raise CfError(400, KV_BAD_REQUEST, "bulk delete takes an array of key names")
        self._delete(namespace, keys)
        return Reply.ok({"successful_key_count": len(keys), "unsuccessful_keys": []})

    def _delete(self, namespace: str, keys: list[str]) -> None:
        with self._lock:
            self._kv.executemany(
                "DELETE FROM kv WHERE ns = ? AND key = ?",
                [(namespace, key.encode()) for key in keys],
            )

    def kv_bulk_get(self, request: Request) -> Reply:
        namespace = self._namespace(request, "bulk get")
        body = request.json()
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise CfError(400, KV_BAD_REQUEST, "bulk get needs 'keys', an array of key names")
        if len(keys) > 100:
            raise CfError(400, KV_BAD_REQUEST, "You can request a maximum of 100 keys")
        as_type, with_metadata = body.get("type", "text"), body.get("withMetadata", False)
        if as_type not in ("text", "json"):
            raise CfError(400, KV_BAD_REQUEST, f"Invalid type {as_type!r}: 'text' or 'json'")
        values = {key: self._bulk_item(namespace, key, as_type, with_metadata) for key in keys}
        return Reply.ok({"values": values})

    def _bulk_item(self, namespace: str, key: str, as_type: str, with_metadata: bool) -> Any:
        row = self._kv_row(namespace, key)
        if row is None:
            return None
        try:
            text = row[0].decode("utf-8")
            value = json.loads(text) if as_type == "json" else text
        except ValueError:
            raise CfError(
                400,
                KV_BAD_REQUEST,
                f"The value of key {key!r} is not valid "
                f"{'JSON' if as_type == 'json' else 'UTF-8 text'}",
            ) from None
        if not with_metadata:
            return value
        item = {"value": value, "metadata": row[2]}
        return item if row[1] is None else {**item, "expiration": row[1]}

    # --- D1 --------------------------------------------------------------------------------------

    def _database(self, request: Request) -> _Database:
        database_id = request.params["database_id"]
        if database_id not in self._databases:
            raise CfError(404, 7404, f"The database {database_id} could not be found")
        return self._databases[database_id]

    def d1_query(self, request: Request) -> Reply:
        database = self._database(request)
        return Reply.ok(database.run(_d1_statements(request.json()), raw=False))

    def d1_raw(self, request: Request) -> Reply:
        database = self._database(request)
        return Reply.ok(database.run(_d1_statements(request.json()), raw=True))

    def d1_list(self, request: Request) -> Reply:
        name = request.query.get("name", "")
        found = [
            {
                "uuid": db.uuid,
                "name": db.name,
                "version": "production",
                "num_tables": 0,
                "file_size": 0,
                "created_at": "2026-01-01T00:00:00Z",
            }
            for db in self._databases.values()
            if name in db.name
        ]
        info = {"page": 1, "per_page": 100, "count": len(found), "total_count": len(found)}
        return Reply.ok(found, info)

    def d1_bookmark(self, request: Request) -> Reply:
        database = self._database(request)
        return Reply.ok(
            {
                "bookmark": f"{database.version:08x}-0000024c-00004c6d-"
                f"{database.uuid.replace('-', '')[:32]}"
            }
        )


# --- helpers -------------------------------------------------------------------------------------


def _read_body(http: BaseHTTPRequestHandler) -> bytes:
    length = int(http.headers.get("Content-Length") or 0)
    return http.rfile.read(min(length, MAX_BODY)) if length else b""


def _send(http: BaseHTTPRequestHandler, reply: Reply, *, drop: bool) -> None:
    data = reply.body()
    http.send_response(reply.status)
    http.send_header("Content-Type", reply.content_type)
    for name, value in reply.headers.items():
        http.send_header(name, value)
    http.send_header("Content-Length", str(len(data)))
    http.end_headers()
    if drop:  # a connection lost mid-body: headers promise more bytes than arrive
        http.wfile.write(data[: len(data) // 2])
        http.wfile.flush()
        http.close_connection = True
        return
    http.wfile.write(data)


def _check_entry(key: str, value: bytes, metadata: Any) -> None:
    if not key or key in (".", "..") or len(key.encode()) > 512:
        raise CfError(400, KV_BAD_REQUEST, "Key names must be 1 to 512 bytes, not '.' or '..'")
    if len(value) > 25 * 1024 * 1024:
        raise CfError(413, KV_BAD_REQUEST, "Values are limited to 25 MiB")
    if metadata is not None and len(json.dumps(metadata)) > 1024:
        raise CfError(413, KV_BAD_REQUEST, "Metadata is limited to 1024 bytes")


def _expiration(expiration: Any, ttl: Any) -> int | None:
    now = int(time.time())
    if ttl is not None and ttl != "":
        if _number(ttl) < 60:
            raise CfError(400, KV_BAD_REQUEST, f"Invalid expiration_ttl of {ttl}: at least 60")
        return now + int(_number(ttl))
    if expiration is not None and expiration != "":
        if _number(expiration) < now + 60:
            raise CfError(
                400,
                KV_BAD_REQUEST,
                f"Invalid expiration of {expiration}: at least 60 seconds in the future",
            )
        return int(_number(expiration))
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CfError(400, KV_BAD_REQUEST, f"{value!r} is not a number") from None


def _int_query(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CfError(400, KV_BAD_REQUEST, f"Invalid {name}: {value!r}") from None


def _encode_cursor(after: bytes, turn: int) -> str:
    raw = json.dumps({"after": after.hex(), "turn": turn}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[bytes, int]:
    if not cursor:
        return b"", 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return bytes.fromhex(data["after"]), int(data["turn"])
    except (ValueError, KeyError, TypeError):
        raise CfError(400, KV_BAD_REQUEST, "Invalid cursor") from None


def _key_item(key: bytes, expiration: int | None, metadata: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"name": key.decode()}
    if expiration is not None:
        item["expiration"] = expiration
    if metadata is not None:
        item["metadata"] = json.loads(metadata)
    return item


def _loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


def _json_list(body: Any, limit: int, what: str) -> list[Any]:
    if not isinstance(body, list):
        raise CfError(400, KV_BAD_REQUEST, f"{what} takes a JSON array")
    if len(body) > limit:
        raise CfError(400, KV_BAD_REQUEST, f"{what} takes at most {limit:,} items")
    return body


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts: dict[str, bytes] = {}
    for part in message.walk():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if name and not part.is_multipart():
            parts[str(name)] = payload if isinstance(payload, bytes) else b""
    return parts


def _d1_statements(body: Any) -> list[tuple[str, list[str]]]:
    """The statements of a `/query` or `/raw` body, validated as D1 does."""
    if not isinstance(body, dict):
        raise CfError(400, 7400, "Invalid request body: expected an object")
    items = body.get("batch", [body])
    if not isinstance(items, list) or not items:
        raise CfError(400, 7400, "Invalid property: batch => Expected a non-empty array")
    return [statement for item in items for statement in _d1_item(item)]


def _d1_item(item: Any) -> list[tuple[str, list[str]]]:
    if not isinstance(item, dict) or not isinstance(item.get("sql"), str):
        raise CfError(400, 7400, "Invalid property: sql => Required")
    params = item.get("params", [])
    if params is None:
        raise CfError(400, 7400, "Invalid property: params => Expected array, received null")
    if not isinstance(params, list):
        raise CfError(
            400,
            7400,
            f"Invalid property: params => Expected array, received {type(params).__name__}",
        )
    for index, value in enumerate(params):
        if not isinstance(value, str):
            raise CfError(400, 7400, f"Invalid property: params.{index} => Expected string")
    statements = _split_sql(item["sql"])
    if len(statements) > 1 and params:
        raise CfError(400, 7500, "params cannot be bound to several statements [code: 7500]")
    for sql in statements:
        _check_statement(sql, params)
    return [(sql, params) for sql in statements]


def _check_statement(sql: str, params: list[str]) -> None:
    if len(sql.encode()) > 100_000:
        raise CfError(400, 7500, "Statement too long: SQLITE_TOOBIG [code: 7500]")
    if len(params) > 100:
        raise CfError(400, 7500, "too many SQL variables: SQLITE_ERROR [code: 7500]")
    if _TRANSACTION_SQL.match(sql):
        raise CfError(
            400,
            7500,
            "To execute a transaction, please use the state.storage."
            "transaction() API instead of the SQL BEGIN TRANSACTION or "
            "SAVEPOINT statements [code: 7500]",
        )


def _split_sql(sql: str) -> list[str]:
    """The statements of `sql`, split at semicolons that end a complete statement."""
    statements, start = [], 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statements.append(sql[start : index + 1].strip())
            start = index + 1
    if sql[start:].strip():
        statements.append(sql[start:].strip())
    return [s for s in statements if s.strip(" ;\n\t")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection ends; no handler thread waits forever
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        self.server.stub.respond(self)

    do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the stub keeps its own request log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: CloudflareStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hang up (timeouts, dropped connections); loud otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


@contextmanager
def serve(stub: CloudflareStub) -> Iterator[CloudflareStub]:
    """Serve `stub` on 127.0.0.1 (a free port) until the block ends; sets `stub.base_url`."""
    server = _Server(stub)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cfserver", daemon=True
    )
    thread.start()
    stub.base_url = f"http://127.0.0.1:{server.server_port}{API_PREFIX}"
    try:
        yield stub
    finally:
        stub.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeClock:
    """A monotonic clock that moves only when something sleeps on it (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)


class ScaledClock:
    """Real time, `factor` times faster: one second on this clock is 1/factor real seconds."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.factor

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0) / self.factor)


# --- the OpenAPI contract -----------------------------------------------------------------------


@dataclass(frozen=True)
class SpecPatch:
    """A place where the published schema contradicts the API's documented behaviour."""

    pointer: str
    value: Any
    reason: str


_BULK_GET_200 = (
    "/paths/~1accounts~1{account_id}~1storage~1kv~1namespaces~1{namespace_id}"
    "~1bulk~1get/post/responses/200/content/application~1json/schema/allOf/1/"
    "properties/result"
)
SPEC_PATCHES = (
    SpecPatch(
        "/components/schemas/d1_api-response-common/properties/result",
        None,
        "`result: object` contradicts every D1 operation's `result: array` in the same "
        "allOf, so no answer could match; D1 answers carry an array",
    ),
    SpecPatch(
        "/components/schemas/d1_raw-result-response/properties/results/properties/rows/"
        "items/items/nullable",
        True,
        "SQL NULL cells come back as JSON null, which the cell anyOf leaves out",
    ),
    SpecPatch(
        "/components/schemas/workers-kv_bulk-get-result/properties/values/"
        "additionalProperties/nullable",
        True,
        "missing keys map to null (reference §2.7; Miniflare's copy C marks them nullable)",
    ),
    SpecPatch(
        _BULK_GET_200,
        {
            "anyOf": [
                {"$ref": "#/components/schemas/workers-kv_bulk-get-result"},
                {"$ref": "#/components/schemas/workers-kv_bulk-get-result-with-metadata"},
            ]
        },
        "`oneOf` rejects every with-metadata answer, which also matches the plain result "
        "(its values may be objects)",
    ),
)
_ANNOTATIONS = frozenset(
    {
        "nullable",
        "example",
        "readOnly",
        "writeOnly",
        "deprecated",
        "discriminator",
        "xml",
        "externalDocs",
    }
)


class OpenApiContract:
    """Checks requests and JSON answers against the OpenAPI 3.0 subset with `jsonschema`.

    Schemas become JSON Schema (draft 7): `nullable` turns into a null alternative, annotations
    go. `$ref`s resolve inside the document, so the recursive `workers-kv_any` is followed only
    as deep as the instance goes. `SPEC_PATCHES` are applied first, each with its reason.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        patched = copy.deepcopy(document)
        for patch in SPEC_PATCHES:
            _set_pointer(patched, patch.pointer, patch.value)
        self._doc: dict[str, Any] = _to_json_schema(patched)
        self._validators: dict[int, jsonschema.Draft7Validator] = {}

    @classmethod
    def load(cls, path: Path) -> OpenApiContract:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def check_request(self, request: Request) -> list[str]:
        operation = self._operation(request)
        where = f"{request.method} {request.route.template} request"
        problems = [] if _has_credentials(request.headers) else [f"{where}: no credentials"]
        declared = {(p["in"], p["name"]): p["schema"] for p in operation.get("parameters", [])}
        for place, values in (("path", request.params), ("query", request.query)):
            for name, value in values.items():
                schema = declared.get((place, name))
                if schema is None:
                    problems.append(f"{where}: undeclared {place} parameter {name!r}")
                    continue
                instance = _coerce(value, self._resolve(schema))
                problems += self._check(f"{where} {place} {name}", schema, instance)
        return problems + self._check_body(operation, request, where)

    def check_response(self, request: Request, status: int, payload: Any) -> list[str]:
        responses = self._operation(request)["responses"]
        spec = responses.get(str(status)) or responses.get(f"{status // 100}XX")
        where = f"{request.method} {request.route.template} response {status}"
        if spec is None:
            return [f"{where}: status not documented"]
        schema = spec.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return [f"{where}: a JSON answer where the spec has {sorted(spec.get('content', {}))}"]
        return self._check(where, schema, payload)

    def _operation(self, request: Request) -> dict[str, Any]:
        operation: dict[str, Any] = self._doc["paths"][request.route.template][
            request.method.lower()
        ]
        return operation

    def _check_body(self, operation: dict[str, Any], request: Request, where: str) -> list[str]:
        spec = operation.get("requestBody") or {}
        content: dict[str, Any] = spec.get("content", {})
        if not request.body:
            needed = spec.get("required") and any("schema" in c for c in content.values())
            return [f"{where}: the body is required"] if needed else []
        media = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if media not in content:
            return [f"{where}: content type {media!r}, the spec has {sorted(content)}"]
        schema = content[media].get("schema")
        if schema is None or media == "application/octet-stream":
            return []
        try:
            instance = _body_instance(media, request)
        except ValueError as exc:
            return [f"{where}: unreadable {media} body ({exc})"]
        return self._check(f"{where} body", schema, instance)

    def _check(self, where: str, schema: Any, instance: Any) -> list[str]:
        key = id(schema)
        if key not in self._validators:
            wrapper = {"allOf": [schema], "components": self._doc["components"]}
            self._validators[key] = jsonschema.Draft7Validator(wrapper)
        # best_match looks inside anyOf/oneOf failures for the error that explains them best.
        errors = [best_match([e]) or e for e in self._validators[key].iter_errors(instance)]
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {_short(e.message)}"
            for e in errors
        ]

    def _resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            node: Any = self._doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema = node
        return schema


def _short(text: str) -> str:
    """A validation message, its quoted instance cut in the middle when long."""
    return text if len(text) <= 240 else f"{text[:120]} … {text[-100:]}"


def _has_credentials(headers: Message) -> bool:
    return bool(
        (headers.get("Authorization") or "").startswith("Bearer ")
        or (headers.get("X-Auth-Email") and headers.get("X-Auth-Key"))
        or headers.get("X-Auth-User-Service-Key")
    )


def _coerce(value: str, schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    try:
        return float(value) if kind == "number" else int(value) if kind == "integer" else value
    except ValueError:
        return value


def _body_instance(media: str, request: Request) -> Any:
    if media == "multipart/form-data":
        parts = _multipart(request.headers.get("Content-Type") or "", request.body)
        instance: dict[str, Any] = {
            name: data.decode("utf-8", "replace") for name, data in parts.items()
        }
        if "metadata" in parts:
            instance["metadata"] = json.loads(parts["metadata"])
        return instance
    return json.loads(request.body)


def _set_pointer(document: Any, pointer: str, value: Any) -> None:
    """Set (or, with None, delete) the member at a JSON pointer; the parent must exist."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects (anywhere in the document) as JSON Schema draft 7."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "properties" and isinstance(value, dict):
            converted[key] = {name: _to_json_schema(schema) for name, schema in value.items()}
        else:
            converted[key] = _to_json_schema(value)
    return {"anyOf": [{"type": "null"}, converted]} if node.get("nullable") is True else converted
