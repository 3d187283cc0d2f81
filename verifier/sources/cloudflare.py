"""The Cloudflare REST API of one account: credentials, envelopes, errors, retries, rate limit.

Every request passes one client-side sliding-window limiter (default 1,200 per 300 s, the
account's limit). A 429 waits for `Retry-After` (seconds, HTTP date or `retry-after-ms`) up to a
ceiling; 408/409/5xx, timeouts and dropped connections back off exponentially with jitter, a
bounded number of times. Each failure becomes one `ApiError` that says what was being fetched.
The API token travels only in the `Authorization` header: it is never in a message, log or repr.

The sources built on this client (`RemoteKv`, `RemoteD1`) live in `verifier.sources.remote`,
which re-exports the names here that callers import from it.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import tenacity

from verifier.clock import wall_seconds
from verifier.errors import ApiError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
KV_READ = "Workers KV Storage Read"
D1_READ = "D1 Read"
D1_WRITE = "D1 Write"


_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no white space


@dataclass(frozen=True, slots=True)
class RemoteCredentials:
    """What remote mode needs to reach the API; the token is left out of `repr`."""

    api_token: str = field(repr=False)
    account_id: str
    base_url: str = DEFAULT_BASE_URL

    def __post_init__(self) -> None:
        """Refuse, before any request, what no request could carry: a token that is not
        printable ASCII without white space (a pasted newline would become a header of its own),
        or a base URL that is not http(s) with a host. The token is never echoed."""
        if not _TOKEN.fullmatch(self.api_token):
            raise ApiError(
                "CLOUDFLARE_API_TOKEN is not a valid token: it must be printable ASCII without "
                "spaces or line breaks (check for a pasted newline or quote)"
            )
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ApiError(
                f"CLOUDFLARE_API_BASE_URL {self.base_url!r} is not an http(s) URL with a host: "
                f"unset it to use {DEFAULT_BASE_URL}"
            )

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


NOTICE_AFTER_S = 2.0


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
        self.on_wait: Callable[[float], None] | None = None

    def acquire(self) -> float:
        """Wait for a free slot and take it; return the seconds waited.

        A wait of `NOTICE_AFTER_S` or more is announced to `on_wait` first (the CLI says why
        it pauses, rather than sitting silent for minutes).
        """
        waited = 0.0
        while (delay := self._try_take()) > 0:
            if not waited and delay >= NOTICE_AFTER_S and self.on_wait is not None:
                self.on_wait(delay)
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
        wall_clock: Callable[[], float] = wall_seconds,
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
        if _glitched(request, response):
            raise _Transient(f"the API answered HTTP {response.status_code} with a body that is "
                             "not JSON (cut short, or a proxy's page)", status=response.status_code)
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
        if (ms := float_or_none(headers.get("retry-after-ms"))) is not None:
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


_PARSED = "kv2d1.json"  # where a response keeps its parsed body (`httpx.Response.extensions`)


def _json_or_none(response: httpx.Response) -> Any:
    """The parsed body, or None when it is not JSON; parsed once per response (the glitch check,
    the envelope and the error text all ask)."""
    if _PARSED not in response.extensions:
        try:
            response.extensions[_PARSED] = json.loads(response.content)
        except ValueError:
            response.extensions[_PARSED] = None
    return response.extensions[_PARSED]


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


def _glitched(request: httpx.Request, response: httpx.Response) -> bool:
    """A success answer to a JSON request whose body is not JSON: a truncated body or a proxy's
    page, retried like a 5xx (a Cloudflare challenge page is an answer, not a glitch)."""
    return (
        response.status_code < 300
        and request.headers.get("accept") == "application/json"
        and bool(response.content)
        and response.headers.get("cf-mitigated") != "challenge"
        and _json_or_none(response) is None
    )


def _rate_headers(headers: httpx.Headers, now: float) -> tuple[int | None, float | None]:
    """(remaining, seconds to reset) from `Ratelimit: "default";r=..;t=..` or `X-RateLimit-*`."""
    if value := headers.get("ratelimit"):
        fields = dict(_RATELIMIT_FIELD.findall(value))
        return _int_or_none(fields.get("r")), float_or_none(fields.get("t"))
    reset = headers.get("x-ratelimit-reset")
    reset_s = float_or_none(reset)
    if reset_s is not None and reset_s > 1e9:  # an epoch timestamp rather than a delay
        reset_s = max(reset_s - now, 0.0)
    elif reset_s is None:
        reset_s = _delay_s(reset, now)
    return _int_or_none(headers.get("x-ratelimit-remaining")), reset_s


def _delay_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a header holding seconds or an HTTP date (a past date gives 0)."""
    if not value:
        return None
    if (seconds := float_or_none(value)) is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def float_or_none(value: str | None) -> float | None:
    """A finite number from header (or other) text; None when absent or not one."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int_or_none(value: str | None) -> int | None:
    number = float_or_none(value)
    return None if number is None else int(number)
