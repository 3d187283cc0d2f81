"""Remote mode: Workers KV and D1 through the Cloudflare REST API, with few requests.

Request budget: listing L keys costs ⌈L/1000⌉ requests (more only when the API returns short
pages), reading N text values ⌈N/100⌉ bulk gets, a D1 table of R rows ⌈(R+1)/page⌉ queries.
Every request passes one client-side sliding-window limiter (default 1,200 per 300 s, the
account's limit). A 429 waits for `Retry-After` (seconds, HTTP date or `retry-after-ms`) up to a
ceiling; 408/409/5xx, timeouts and dropped connections back off exponentially with jitter, a
bounded number of times. Each failure becomes one `ApiError` that says what was being fetched.
The API token travels only in the `Authorization` header: it is never in a message, log or repr.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import tenacity

from verifier.errors import ApiError, ConfigError
from verifier.model import KeyInfo, KvEntry

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
KV_READ = "Workers KV Storage Read"
D1_READ = "D1 Read"
D1_WRITE = "D1 Write"
LIST_PAGE_MAX = 1000
BULK_GET_MAX = 100
D1_MAX_PARAMS = 100
D1_MAX_SQL_BYTES = 100_000
_BULK_GET_REFUSALS = frozenset({400, 413, 422})
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class RemoteCredentials:
    """What remote mode needs to reach the API; the token is left out of `repr`."""

    api_token: str = field(repr=False)
    account_id: str
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_env(
        cls, config_account_id: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> RemoteCredentials:
        """Read CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID (else the config's) and the base URL."""
        env = os.environ if environ is None else environ
        token = env.get("CLOUDFLARE_API_TOKEN", "").strip()
        if not token:
            raise ApiError(
                f"remote mode needs an API token: set CLOUDFLARE_API_TOKEN to a token with the "
                f"'{KV_READ}' and '{D1_READ}' permissions ('{D1_WRITE}' to backfill)"
            )
        account = env.get("CLOUDFLARE_ACCOUNT_ID", "").strip() or (config_account_id or "").strip()
        if not account:
            raise ApiError(
                "remote mode needs the account id: set CLOUDFLARE_ACCOUNT_ID "
                "or account_id in the wrangler config"
            )
        base_url = env.get("CLOUDFLARE_API_BASE_URL", "").strip() or DEFAULT_BASE_URL
        return cls(token, account, base_url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts per request, the longest wait the API may ask for, backoff."""

    max_attempts: int = 6
    max_wait_s: float = 300.0
    backoff_s: float = 0.5
    backoff_cap_s: float = 30.0
    timeout_s: float = 60.0


class RateLimiter:
    """A thread-safe sliding window: at most `max_requests` request starts in any `window_s`.

    `pause(seconds)` holds every caller back (after a 429, or when the API says no requests
    remain), so parallel workers wait together instead of each hitting the limit.
    """

    def __init__(
        self,
        *,
        max_requests: int = 1200,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_requests < 1 or window_s <= 0:
            raise ValueError("a rate limit needs max_requests >= 1 and window_s > 0")
        self.max_requests = max_requests
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._paused_until = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a free slot and take it; return the seconds waited."""
        waited = 0.0
        while (delay := self._try_take()) > 0:
            self._sleep(delay)
            waited += delay
        return waited

    def pause(self, seconds: float) -> None:
        """Let no request start for `seconds` from now."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _try_take(self) -> float:
        with self._lock:
            now = self._clock()
            # `start + window <= now`, the same sum as the delay below: a full window always
            # gives a positive delay, whatever the float rounding.
            while self._starts and self._starts[0] + self.window_s <= now:
                self._starts.popleft()
            if now < self._paused_until:
                return self._paused_until - now
            if len(self._starts) >= self.max_requests:
                return self._starts[0] + self.window_s - now
            self._starts.append(now)
            return 0.0


class RequestKind(enum.StrEnum):
    """What a request was for; `RequestStats` counts by it."""

    LIST = "list"
    BULK_GET = "bulk_get"
    GET_VALUE = "get_value"
    GET_METADATA = "get_metadata"
    D1_QUERY = "d1_query"
    D1_BATCH = "d1_batch"
    ACCOUNT = "account"


@dataclass
class RequestStats:
    """Requests sent by kind (each retry counts), plus retries, 429s and seconds waited."""

    list: int = 0
    bulk_get: int = 0
    get_value: int = 0
    get_metadata: int = 0
    d1_query: int = 0
    d1_batch: int = 0
    account: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    @property
    def requests(self) -> int:
        return sum(int(getattr(self, kind.value)) for kind in RequestKind)

    def to_json(self) -> dict[str, float]:
        counts: dict[str, float] = {kind.value: getattr(self, kind.value) for kind in RequestKind}
        counts.update(retries=self.retries, rate_limited=self.rate_limited)
        counts["waited_s"] = round(self.waited_s, 3)
        return counts


@dataclass(frozen=True, slots=True)
class Envelope:
    """A successful JSON answer: its `result` and `result_info` (empty when absent)."""

    result: Any
    result_info: Mapping[str, Any]


class _Transient(Exception):
    """A failure worth another attempt; `reason` is safe to show, `wait_s` overrides backoff."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        code: int | None = None,
        wait_s: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code
        self.wait_s = wait_s


class CloudflareClient:
    """The REST API of one account: envelopes, errors, retries and the rate limit in one place.

    `client` (an `httpx.Client`) or `transport` may be passed in; `sleep`, `clock` and
    `wall_clock` let tests run without waiting. The `httpx.Client` may be shared by threads.
    """

    def __init__(
        self,
        credentials: RemoteCredentials,
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep)
        self.stats = RequestStats()
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._owns_http = client is None
        self._http = client or httpx.Client(transport=transport, follow_redirects=False)
        self._timeout = httpx.Timeout(self.retry.timeout_s)

    def __repr__(self) -> str:
        creds = self.credentials
        return f"CloudflareClient(account_id={creds.account_id!r}, base_url={creds.base_url!r})"

    def __enter__(self) -> CloudflareClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def account_path(self, *segments: str) -> str:
        """`/accounts/{id}/…`, each segment percent-encoded as one path segment."""
        return "/".join(
            ["", "accounts", *(quote(s, safe="") for s in (self.credentials.account_id, *segments))]
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        what: str,
        permission: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Envelope:
        """One JSON request; its envelope's result, or an `ApiError` that names `what`."""
        response = self._send(method, path, kind=kind, what=what, params=params, body=body)
        return self._envelope(response, what=what, permission=permission)

    def fetch_bytes(
        self, path: str, *, kind: RequestKind, what: str, permission: str
    ) -> httpx.Response:
        """A GET whose success body is raw bytes (a KV value); errors as in `call`."""
        response = self._send("GET", path, kind=kind, what=what, accept="application/octet-stream")
        if response.status_code != 200:
            raise self._refusal(response, what=what, permission=permission)
        return response

    def _send(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        request = self._http.build_request(
            method,
            self.credentials.base_url + path,
            params=params,
            json=body,
            headers=self._headers(accept),
            timeout=self._timeout,
        )
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._backoff,
            retry=tenacity.retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=lambda state: self._note_retry(state, what),
            reraise=True,
        )
        try:
            return retrying(self._attempt, request, kind=kind, what=what)
        except _Transient as exc:
            raise self._api_error(
                f"{exc.reason} while {what}; gave up after {self.retry.max_attempts} attempts: "
                "check https://www.cloudflarestatus.com and run again later",
                status=exc.status,
                code=exc.code,
            ) from None  # the message carries the (redacted) reason; the chain adds nothing

    def _headers(self, accept: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.credentials.api_token}",
            "Accept": accept,
            "User-Agent": "kv2d1",
        }

    def _attempt(self, request: httpx.Request, *, kind: RequestKind, what: str) -> httpx.Response:
        self.stats.add("waited_s", self.limiter.acquire())
        self.stats.add(kind.value)
        response = self._send_once(request)
        if isinstance(response, str):
            raise _Transient(response)
        self._pause_if_exhausted(response.headers)
        self._raise_if_transient(response, what=what)
        return response

    def _send_once(self, request: httpx.Request) -> httpx.Response | str:
        """The answer, or why there was none (the httpx error is dropped here: its request
        carries the token, and the reason says all a user needs)."""
        try:
            return self._http.send(request)
        except httpx.TimeoutException:
            return f"the API did not answer within {self.retry.timeout_s:g} s"
        except httpx.TransportError as exc:
            return f"the connection failed ({self._redact(_exc_text(exc))})"

    def _raise_if_transient(self, response: httpx.Response, *, what: str) -> None:
        status = response.status_code
        hint = response.headers.get("x-should-retry", "").lower()
        if hint == "false":
            return
        if status == 429:
            self.stats.add("rate_limited")
            wait = self._rate_limit_wait(response.headers)
            if wait is not None and wait > self.retry.max_wait_s:
                raise self._api_error(
                    f"the API rate limit is exhausted (HTTP 429) and asks to wait {wait:.0f} s, "
                    f"more than the ceiling of {self.retry.max_wait_s:.0f} s, while {what}: "
                    "wait that long and run again, or raise the ceiling",
                    status=429,
                )
            if wait is not None:
                self.limiter.pause(wait)
            raise _Transient(
                "the API rate limit is exhausted (HTTP 429)",
                status=429,
                wait_s=None if wait is None else 0.0,
            )
        if hint == "true" or status in (408, 409) or status >= 500:
            raise _Transient(
                self._redact(_describe(response)), status=status, code=_error_detail(response)[0]
            )

    def _rate_limit_wait(self, headers: httpx.Headers) -> float | None:
        now = self._wall_clock()
        if (ms := _float_or_none(headers.get("retry-after-ms"))) is not None:
            return max(ms / 1000, 0.0)
        if (seconds := _delay_s(headers.get("retry-after"), now)) is not None:
            return seconds
        return _rate_headers(headers, now)[1]

    def _pause_if_exhausted(self, headers: httpx.Headers) -> None:
        remaining, reset_s = _rate_headers(headers, self._wall_clock())
        if remaining == 0 and reset_s:
            self.limiter.pause(min(reset_s, self.retry.max_wait_s))

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.wait_s is not None:
            return exc.wait_s
        policy = self.retry
        backoff = min(policy.backoff_cap_s, policy.backoff_s * 2.0 ** (state.attempt_number - 1))
        return backoff * self._rng.uniform(0.75, 1.0)

    def _note_retry(self, state: tenacity.RetryCallState, what: str) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.stats.add("retries")
        self.stats.add("waited_s", delay)
        reason = exc.reason if isinstance(exc, _Transient) else "unknown"
        log.info(
            "retrying in %.2f s (attempt %d) while %s: %s",
            delay,
            state.attempt_number + 1,
            what,
            reason,
        )

    def _envelope(self, response: httpx.Response, *, what: str, permission: str) -> Envelope:
        if response.status_code in (204, 205) and not response.content:
            return Envelope(None, {})
        body = _json_or_none(response)
        if (
            response.status_code >= 300
            or not isinstance(body, dict)
            or body.get("success") is not True
        ):
            raise self._refusal(response, what=what, permission=permission)
        info = body.get("result_info")
        return Envelope(body.get("result"), info if isinstance(info, dict) else {})

    def _refusal(self, response: httpx.Response, *, what: str, permission: str) -> ApiError:
        status = response.status_code
        body = _json_or_none(response)
        if body is None:
            challenge = response.headers.get("cf-mitigated") == "challenge"
            why = " (a Cloudflare challenge page: a firewall rule blocked the request)"
            return self._api_error(
                f"the API answered with non-JSON (HTTP {status}) while "
                f"{what}{why if challenge else ''}",
                status=status,
            )
        code, message = _error_detail(response)
        said = (
            f"HTTP {status}"
            + (f", code {code}" if code else "")
            + (f": {message}" if message else "")
        )
        return self._api_error(
            _advice(status, code, said, what, permission, self.credentials),
            status=status,
            code=code,
        )

    def _api_error(
        self, message: str, *, status: int | None = None, code: int | None = None
    ) -> ApiError:
        return ApiError(self._redact(message), status=status, code=code)

    def _redact(self, text: str) -> str:
        return text.replace(self.credentials.api_token, "[redacted]")


def _advice(
    status: int,
    code: int | None,
    said: str,
    what: str,
    permission: str,
    credentials: RemoteCredentials,
) -> str:
    """The message for an error answer: what failed, and what to do about it."""
    if status in (401, 403):
        return (
            f"the API refused the token ({said}) while {what}: give the token in "
            f"CLOUDFLARE_API_TOKEN the '{permission}' permission on account "
            f"{credentials.account_id} (CLOUDFLARE_ACCOUNT_ID), or check that it has not expired"
        )
    if code == 10013:
        return (
            f"the KV namespace was not found ({said}) while {what}: check the binding's id "
            "in the wrangler config and CLOUDFLARE_ACCOUNT_ID"
        )
    if code == 7404:
        return (
            f"the D1 database was not found ({said}) while {what}: check database_id in "
            "the wrangler config and CLOUDFLARE_ACCOUNT_ID"
        )
    if code == 10009:
        return f"the key was not found ({said}) while {what}"
    if code == 7500:
        return f"D1 rejected the SQL ({said}) while {what}"
    if status >= 500:
        return f"the API failed ({said}) while {what}"
    return f"the API refused the request ({said}) while {what}"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _error_detail(response: httpx.Response) -> tuple[int | None, str]:
    """The first envelope error's (code, message); also reads the non-standard {code, error}."""
    body = _json_or_none(response)
    if not isinstance(body, dict):
        return None, ""
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else body
    if not isinstance(first, dict):
        return None, ""
    code = first.get("code")
    message = first.get("message", first.get("error", ""))
    return (code if isinstance(code, int) else None), str(message or "")


def _describe(response: httpx.Response) -> str:
    """A failed answer in a few words, for a retry log line or the final message."""
    if _json_or_none(response) is None:
        return f"the API answered with non-JSON (HTTP {response.status_code})"
    code, message = _error_detail(response)
    return (
        f"the API answered HTTP {response.status_code}"
        + (f", code {code}" if code else "")
        + (f": {message}" if message else "")
    )


def _exc_text(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_RATELIMIT_FIELD = re.compile(r";\s*([a-z]+)\s*=\s*([0-9.]+)")


def _rate_headers(headers: httpx.Headers, now: float) -> tuple[int | None, float | None]:
    """(remaining, seconds to reset) from `Ratelimit: "default";r=..;t=..` or `X-RateLimit-*`."""
    if value := headers.get("ratelimit"):
        fields = dict(_RATELIMIT_FIELD.findall(value))
        return _int_or_none(fields.get("r")), _float_or_none(fields.get("t"))
    reset = headers.get("x-ratelimit-reset")
    reset_s = _float_or_none(reset)
    if reset_s is not None and reset_s > 1e9:  # an epoch timestamp rather than a delay
        reset_s = max(reset_s - now, 0.0)
    elif reset_s is None:
        reset_s = _delay_s(reset, now)
    return _int_or_none(headers.get("x-ratelimit-remaining")), reset_s


def _delay_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a header holding seconds or an HTTP date (a past date gives 0)."""
    if not value:
        return None
    if (seconds := _float_or_none(value)) is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def _float_or_none(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int_or_none(value: str | None) -> int | None:
    number = _float_or_none(value)
    return None if number is None else int(number)


def _opt_int(value: Any) -> int | None:
    """An expiration as epoch seconds; absent, null or not a number gives None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    number = _float_or_none(str(value))
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
    ) -> None:
        if not 10 <= page_size <= LIST_PAGE_MAX or not 1 <= batch_size <= BULK_GET_MAX:
            raise ValueError("page_size must be 10..1000 and batch_size 1..100")
        self.client = client
        self.namespace_id = namespace_id
        self.page_size = page_size
        self.batch_size = batch_size
        self.parallel = max(parallel, 1)
        self.with_metadata = with_metadata

    def describe(self) -> str:
        return f"KV namespace {self.namespace_id}"

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        """Every live key starting with `prefix`, page after page until the cursor is empty."""
        what = f"listing the keys of {self.describe()}" + (
            f" with prefix {prefix!r}" if prefix else ""
        )
        cursor = ""
        while True:
            envelope = self.client.call(
                "GET",
                self._path("keys"),
                kind=RequestKind.LIST,
                what=what,
                permission=KV_READ,
                params=self._list_params(prefix, cursor),
            )
            yield from (_key_info(item, what) for item in _as_list(envelope.result, what))
            next_cursor = envelope.result_info.get("cursor") or ""
            if not next_cursor:
                return
            if next_cursor == cursor:
                raise ApiError(
                    f"the API returned the same cursor twice while {what}: "
                    "stopping rather than listing forever; run again later"
                )
            cursor = next_cursor

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        """The entries of `keys` in the order given; keys that no longer exist are left out."""
        batches = _chunks(keys, self.batch_size)
        if len(keys) <= self.batch_size or self.parallel == 1:
            for batch in batches:
                yield from self._read_batch(batch)
            return
        for entries in _in_order(self._read_batch, batches, workers=self.parallel):
            yield from entries

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
        if not statements:
            return []
        batch = [_statement(sql, params, index=i) for i, (sql, params) in enumerate(statements)]
        what = f"running a batch of {len(batch)} statements on {self.describe()}"
        envelope = self.client.call(
            "POST",
            self._path("query"),
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
        return [_changes(result) for result in results]

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
    client = client or CloudflareClient(
        RemoteCredentials.from_env(config.account_id, environ=environ)
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
    return RemoteKv(client, kv_entry.id), d1, source


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
