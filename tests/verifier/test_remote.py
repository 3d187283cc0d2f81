"""Remote mode against the Cloudflare REST contract.

Unit tests fake HTTP with `httpx.MockTransport`; integration tests run against the loopback
server in tests/cfserver.py, which checks every request and answer against the OpenAPI subset.
No test sleeps for real unless it says so: waits go to a FakeClock or a ScaledClock.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cfserver import (
    ACCOUNT,
    NAMESPACE,
    TOKEN,
    CloudflareStub,
    FakeClock,
    FaultPlan,
    ScaledClock,
    ServerRateLimit,
)
from verifier.errors import ApiError, ConfigError
from verifier.model import KvEntry
from verifier.sources.remote import (
    DEFAULT_BASE_URL,
    CloudflareClient,
    RateLimiter,
    RemoteCredentials,
    RemoteD1,
    RemoteKv,
    RetryPolicy,
    open_remote_sources,
    resolve_d1_database_id,
)

pytest_plugins = ("tests.remote_fixtures",)

BASE = "https://api.test/client/v4"
WALL = 1_800_000_000.0
KV_PATH = f"/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{NAMESPACE}"
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(
    stub: CloudflareStub, clock: FakeClock | ScaledClock, *, token: str = TOKEN, **options: Any
) -> CloudflareClient:
    """A client of the loopback API whose waits go to `clock`."""
    options.setdefault("retry", RetryPolicy(timeout_s=5.0))
    options.setdefault("limiter", RateLimiter(clock=clock.now, sleep=clock.sleep))
    return CloudflareClient(
        RemoteCredentials(token, ACCOUNT, stub.base_url),
        sleep=clock.sleep,
        clock=clock.now,
        **options,
    )


def mock_client(
    handler: Handler, *, clock: FakeClock | None = None, **options: Any
) -> CloudflareClient:
    clock = clock or FakeClock()
    return CloudflareClient(
        RemoteCredentials(TOKEN, ACCOUNT, BASE),
        transport=httpx.MockTransport(handler),
        sleep=clock.sleep,
        clock=clock.now,
        wall_clock=lambda: WALL,
        **options,
    )


def ok(result: Any, info: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    body = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return httpx.Response(200, json=body, headers=headers)


def failure(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return httpx.Response(status, json=body, headers=headers)


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with `responses` in turn (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


def error_texts(exc: BaseException) -> list[str]:
    """The message, repr and args of `exc` and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current), *map(str, current.args)]
        current = current.__cause__ or current.__context__
    return texts


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_come_from_the_environment_then_the_config() -> None:
    only_token = RemoteCredentials.from_env("cfg-account", environ={"CLOUDFLARE_API_TOKEN": TOKEN})
    assert only_token == RemoteCredentials(TOKEN, "cfg-account", DEFAULT_BASE_URL)
    everything = {
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_ACCOUNT_ID": "env-account",
        "CLOUDFLARE_API_BASE_URL": "http://127.0.0.1:9/client/v4/",
    }
    assert RemoteCredentials.from_env("cfg-account", environ=everything) == RemoteCredentials(
        TOKEN, "env-account", "http://127.0.0.1:9/client/v4"
    )
    assert_no_token(repr(only_token), str(only_token), repr(mock_client(scripted(ok(None))[0])))


@pytest.mark.parametrize(
    ("environ", "config_account", "variable"),
    [
        ({}, "acct", "set CLOUDFLARE_API_TOKEN"),
        ({"CLOUDFLARE_API_TOKEN": "  "}, "acct", "set CLOUDFLARE_API_TOKEN"),
        ({"CLOUDFLARE_API_TOKEN": TOKEN}, None, "set CLOUDFLARE_ACCOUNT_ID or account_id"),
    ],
)
def test_missing_credentials_say_which_variable_to_set(
    environ: dict[str, str], config_account: str | None, variable: str
) -> None:
    with pytest.raises(ApiError, match=variable) as caught:
        RemoteCredentials.from_env(config_account, environ=environ)
    assert_no_token(*error_texts(caught.value))


# --- envelopes and errors ------------------------------------------------------------------------


def test_listing_sends_the_prefix_every_time_and_survives_short_and_empty_pages() -> None:
    handle, seen = scripted(
        ok(
            [{"name": "a:1", "expiration": 1577836800, "metadata": {"m": 1}}],
            {"count": 1, "cursor": "c1"},
        ),
        ok([], {"count": 0, "cursor": "c2"}),
        ok([{"name": "a:2"}, {"name": "a:3"}], {"count": 2, "cursor": None}),
    )
    keys = list(RemoteKv(mock_client(handle), NAMESPACE).iter_keys("a:"))
    assert [(k.name, k.expiration, k.metadata) for k in keys] == [
        ("a:1", 1577836800, {"m": 1}),
        ("a:2", None, None),
        ("a:3", None, None),
    ]
    assert [dict(r.url.params) for r in seen] == [
        {"limit": "1000", "prefix": "a:"},
        {"limit": "1000", "prefix": "a:", "cursor": "c1"},
        {"limit": "1000", "prefix": "a:", "cursor": "c2"},
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)


def test_a_cursor_that_does_not_move_stops_the_listing() -> None:
    handle, seen = scripted(ok([], {"count": 0, "cursor": "same"}))
    with pytest.raises(ApiError, match="same cursor twice"):
        list(RemoteKv(mock_client(handle), NAMESPACE).iter_keys())
    assert len(seen) == 2


def test_two_alternating_cursors_stop_the_listing_after_one_request_more() -> None:
    handle, seen = scripted(
        ok([{"name": "a"}], {"cursor": "A"}),
        ok([{"name": "b"}], {"cursor": "B"}),
        ok([{"name": "c"}], {"cursor": "A"}),
        ok([{"name": "d"}], {"cursor": "B"}),
    )
    yielded: list[str] = []
    with pytest.raises(ApiError) as caught:
        yielded.extend(k.name for k in RemoteKv(mock_client(handle), NAMESPACE).iter_keys())
    assert str(caught.value) == (
        "the API returned a cursor it had already given (page 3) while listing the keys of KV "
        f"namespace {NAMESPACE}: stopping rather than listing forever; run again later"
    )
    assert len(seen) == 3
    assert yielded == ["a", "b", "c"]
    assert_no_token(*error_texts(caught.value))


def test_a_rewound_cursor_stops_the_listing() -> None:
    handle, seen = scripted(
        ok([{"name": "a"}], {"cursor": "c1"}),
        ok([{"name": "b"}], {"cursor": "c2"}),
        ok([{"name": "c"}], {"cursor": "c3"}),
        ok([{"name": "d"}], {"cursor": "c1"}),
        ok([{"name": "e"}], {"cursor": ""}),
    )
    with pytest.raises(ApiError, match=r"a cursor it had already given \(page 4\)"):
        list(RemoteKv(mock_client(handle), NAMESPACE).iter_keys("a"))
    assert len(seen) == 4
    assert [r.url.params.get("cursor") for r in seen] == [None, "c1", "c2", "c3"]


def test_a_page_that_repeats_the_page_before_is_refused_before_its_keys_count() -> None:
    page = [{"name": "k1"}, {"name": "k2"}]
    handle, seen = scripted(ok(page, {"cursor": "c1"}), ok(page, {"cursor": ""}))
    yielded: list[str] = []
    with pytest.raises(ApiError) as caught:
        yielded.extend(k.name for k in RemoteKv(mock_client(handle), NAMESPACE).iter_keys())
    assert str(caught.value) == (
        "the API listed the key 'k1' after the key 'k2' (page 2) while listing the keys of KV "
        f"namespace {NAMESPACE}: the listing repeated or reordered keys (they must come in "
        "strictly increasing UTF-8 byte order), so the key count would be wrong; run again later"
    )
    assert yielded == ["k1", "k2"]  # fewer than the 4 the server sent; none twice
    assert len(seen) == 2


def test_keys_out_of_byte_order_within_one_page_are_refused() -> None:
    # Expired keys are checked too: the order is the server's, not what is yielded.
    handle, seen = scripted(
        ok(
            [{"name": "a"}, {"name": "é", "expiration": 1}, {"name": "z"}, {"name": "zz"}],
            {"cursor": ""},
        )
    )
    kv = RemoteKv(mock_client(handle), NAMESPACE, as_of=dt.datetime.fromtimestamp(WALL, dt.UTC))
    yielded: list[str] = []
    with pytest.raises(ApiError, match=r"listed the key 'z' after the key 'é' \(page 1\)"):
        yielded.extend(k.name for k in kv.iter_keys())
    assert yielded == ["a"]
    assert len(seen) == 1


def test_a_key_equal_to_the_token_is_redacted_from_the_order_error() -> None:
    handle, _ = scripted(ok([{"name": "zzz"}, {"name": TOKEN}], {"cursor": ""}))
    with pytest.raises(ApiError, match=r"the key '\[redacted\]' after the key 'zzz'") as caught:
        list(RemoteKv(mock_client(handle), NAMESPACE).iter_keys())
    assert_no_token(*error_texts(caught.value))


def test_a_well_behaved_multi_page_listing_yields_every_key_once_in_byte_order() -> None:
    # "é" (C3 A9) sorts after "z" (7A) in UTF-8 bytes, and "\U0001f600" (F0 9F ...) after
    # "\uffff" (EF BF BF), where UTF-16 (a JavaScript sort) would put it before.
    handle, seen = scripted(
        ok([{"name": "a"}, {"name": "z"}], {"cursor": "c1"}),
        ok([{"name": "é"}, {"name": "\uffff"}], {"cursor": "c2"}),
        ok([], {"cursor": "c3"}),
        ok([{"name": "\U0001f600"}], {"cursor": ""}),
    )
    names = [k.name for k in RemoteKv(mock_client(handle), NAMESPACE).iter_keys()]
    assert names == ["a", "z", "é", "\uffff", "\U0001f600"]
    assert len(seen) == 4


def _list(client: CloudflareClient) -> None:
    list(RemoteKv(client, NAMESPACE).iter_keys())


def _d1_read(client: CloudflareClient) -> None:
    list(RemoteD1(client, "db-1").query("SELECT 1"))


def _d1_write(client: CloudflareClient) -> None:
    RemoteD1(client, "db-1").execute_batch([("INSERT INTO t VALUES (?)", ["x"])])


@pytest.mark.parametrize(
    ("operation", "answer", "expected", "status", "code"),
    [
        (
            _list,
            failure(401, 10000, "Authentication error"),
            "the API refused the token (HTTP 401, code 10000: Authentication error) while "
            f"listing the keys of KV namespace {NAMESPACE}: give the token in "
            f"CLOUDFLARE_API_TOKEN the 'Workers KV Storage Read' permission on account {ACCOUNT}",
            401,
            10000,
        ),
        (
            _d1_read,
            failure(403, 10000, "Authentication error"),
            "the 'D1 Read' permission",
            403,
            10000,
        ),
        (
            _d1_write,
            failure(403, 10000, "Authentication error"),
            "the 'D1 Write' permission",
            403,
            10000,
        ),
        (
            _list,
            failure(404, 10013, "list keys: 'namespace not found'"),
            "the KV namespace was not found (HTTP 404, code 10013",
            404,
            10013,
        ),
        (
            _d1_read,
            failure(404, 7404, "The database db-1 could not be found"),
            "the D1 database was not found (HTTP 404, code 7404",
            404,
            7404,
        ),
        (
            _d1_write,
            failure(400, 7500, "no such column: asdf at offset 7"),
            "D1 rejected the SQL (HTTP 400, code 7500: no such column: asdf at offset 7) while "
            "running a batch of 1 statements",
            400,
            7500,
        ),
        (
            _list,
            httpx.Response(502, text="<html>bad gateway</html>", headers={"x-should-retry": "false"}),
            f"the API answered with non-JSON (HTTP 502) while listing the keys of KV namespace "
            f"{NAMESPACE}",
            502,
            None,
        ),
        (
            _list,
            httpx.Response(403, text="<html>", headers={"cf-mitigated": "challenge"}),
            "a Cloudflare challenge page",
            403,
            None,
        ),
    ],
)
def test_error_answers_become_one_api_error_that_says_what_to_do(
    operation: Callable[[CloudflareClient], None],
    answer: httpx.Response,
    expected: str,
    status: int,
    code: int | None,
) -> None:
    handle, seen = scripted(answer)
    with pytest.raises(ApiError) as caught:
        operation(mock_client(handle))
    assert expected in str(caught.value)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert len(seen) == 1


def test_the_token_is_redacted_even_when_the_api_or_the_network_repeats_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo, _ = scripted(failure(400, 1001, f"bad header Authorization: Bearer {TOKEN}"))
    dropped, _ = scripted(httpx.ConnectError(f"cannot connect with {TOKEN}"))
    texts: list[str] = []
    for handle in (echo, dropped):
        with pytest.raises(ApiError) as caught:
            _list(mock_client(handle, retry=RetryPolicy(max_attempts=2)))
        texts += error_texts(caught.value)
    assert any("[redacted]" in text for text in texts)
    assert_no_token(*texts, caplog.text)


# --- retries and waits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "7"}, 7, 7),
        ({"Retry-After": formatdate(WALL + 12, usegmt=True)}, 12, 12),
        ({"retry-after-ms": "1500", "Retry-After": "99"}, 1.5, 1.5),
        ({"Ratelimit": '"default";r=0;t=9'}, 9, 9),
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": formatdate(WALL + 5, usegmt=True)},
            5,
            5,
        ),
        ({}, 0.375, 0.5),
    ],
)
def test_a_429_waits_as_long_as_the_api_asks(
    headers: dict[str, str], low: float, high: float
) -> None:
    clock = FakeClock()
    handle, seen = scripted(failure(429, 971, "Please wait", **headers), ok([], {"cursor": ""}))
    client = mock_client(handle, clock=clock)
    _list(client)
    assert len(seen) == 2
    assert low <= sum(clock.sleeps) <= high
    assert (client.stats.list, client.stats.rate_limited, client.stats.retries) == (2, 1, 1)


def test_a_wait_beyond_the_ceiling_fails_at_once_with_the_reason() -> None:
    handle, seen = scripted(failure(429, 971, "Please wait", **{"Retry-After": "301"}))
    with pytest.raises(ApiError, match=r"asks to wait 301 s, more than the ceiling of 300 s"):
        _list(mock_client(handle))
    assert len(seen) == 1


def test_server_errors_back_off_exponentially_with_jitter_then_fail() -> None:
    clock = FakeClock()
    handle, seen = scripted(failure(503, 10043, "Service unavailable"))
    with pytest.raises(ApiError) as caught:
        _list(mock_client(handle, clock=clock))
    assert str(caught.value) == (
        "the API answered HTTP 503, code 10043: Service unavailable while listing the keys of KV "
        f"namespace {NAMESPACE}; gave up after 6 attempts: check https://www.cloudflarestatus.com "
        "and run again later"
    )
    assert len(seen) == 6
    assert len(clock.sleeps) == 5
    for attempt, slept in enumerate(clock.sleeps):
        assert 0.5 * 2**attempt * 0.75 <= slept <= 0.5 * 2**attempt


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadTimeout("timed out"),
    ],
)
def test_transport_failures_are_retried(fault: Exception) -> None:
    handle, seen = scripted(fault, fault, ok([{"name": "k"}], {"cursor": ""}))
    assert [k.name for k in RemoteKv(mock_client(handle), NAMESPACE).iter_keys()] == ["k"]
    assert len(seen) == 3


def test_a_server_that_says_do_not_retry_is_believed() -> None:
    handle, seen = scripted(failure(503, 10043, "busy", **{"x-should-retry": "false"}))
    with pytest.raises(ApiError, match="the API failed"):
        _list(mock_client(handle))
    assert len(seen) == 1


def test_no_requests_remaining_pauses_before_the_next_request() -> None:
    clock = FakeClock()
    handle, _ = scripted(
        ok([], {"cursor": "c"}, Ratelimit='"default";r=0;t=30'), ok([], {"cursor": ""})
    )
    _list(mock_client(handle, clock=clock))
    assert clock.sleeps == [30]


def test_the_limiter_keeps_every_window_under_its_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_requests=100, window_s=10, clock=clock.now, sleep=clock.sleep)
    starts = []
    for _ in range(1000):
        limiter.acquire()
        starts.append(clock.now())
    assert all(later - earlier >= 10 for earlier, later in zip(starts, starts[100:], strict=False))
    assert starts[-1] - starts[0] == pytest.approx(90)


def test_a_long_wait_is_announced_once_before_it_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_requests=3, window_s=300, clock=clock.now, sleep=clock.sleep)
    heard: list[float] = []
    limiter.on_wait = heard.append
    for _ in range(7):
        limiter.acquire()
    assert heard == [300, 300]  # before the 4th and the 7th request, once each
    assert clock.sleeps == [300, 300]


def test_the_limiter_is_shared_safely_by_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_requests=50, window_s=5, clock=clock.now, sleep=clock.sleep)
    starts: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(100):
            limiter.acquire()
            with lock:
                starts.append(clock.now())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert len(starts) == 400
    assert all(
        later - earlier >= 5 - 1e-9 for earlier, later in zip(starts, starts[50:], strict=False)
    )


@settings(max_examples=40, deadline=None)
@given(limit=st.integers(1, 20), window=st.floats(0.5, 100), gaps=st.lists(st.floats(0, 5)))
def test_no_window_ever_holds_more_than_the_limit(
    limit: int, window: float, gaps: list[float]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_requests=limit, window_s=window, clock=clock.now, sleep=clock.sleep)
    starts = []
    for gap in gaps:
        clock.sleep(gap)
        limiter.acquire()
        starts.append(clock.now())
    assert all(b - a >= window - 1e-6 for a, b in zip(starts, starts[limit:], strict=False))


# --- D1 statements -------------------------------------------------------------------------------


def test_text_is_bound_and_other_values_are_written_as_literals() -> None:
    handle, seen = scripted(ok([{"success": True, "results": [], "meta": {"changes": 1}}] * 2))
    changes = RemoteD1(mock_client(handle), "db-1").execute_batch(
        [
            (
                "INSERT INTO t VALUES (?, ?, ?, ?, ?, 'why?', ?, 1-?) -- a comment?",
                [None, 7, 0.25, True, b"\x00\xff", "x", -2],
            ),
            ("SELECT 1", []),
        ]
    )
    assert changes == [1, 1]
    assert json.loads(seen[0].content) == {
        "batch": [
            {
                "sql": "INSERT INTO t VALUES (NULL, 7, 0.25, 1, X'00ff', 'why?', ?, 1-(-2)) "
                "-- a comment?",
                "params": ["x"],
            },
            {"sql": "SELECT 1"},
        ]
    }


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        (
            "INSERT INTO t VALUES " + ",".join(["(?)"] * 101),
            ["v"] * 101,
            "statement 1 binds 101 parameters; D1 allows at most 100",
        ),
        ("SELECT '" + "x" * 100_000 + "'", [], "statement 1 is 100,009 bytes of SQL"),
        ("SELECT ?, ?", [None], "more `?` placeholders"),
        ("SELECT ?1", [None], "use plain `?` placeholders"),
        ("SELECT ?", [None, "x"], "fewer `?` placeholders"),
    ],
)
def test_statements_beyond_d1_limits_are_refused_before_sending(
    sql: str, params: list[Any], message: str
) -> None:
    handle, seen = scripted(ok([]))
    with pytest.raises(ApiError, match=re.escape(message)):
        RemoteD1(mock_client(handle), "db-1").execute_batch([(sql, params)])
    assert seen == []


def test_a_value_bulk_get_cannot_give_as_text_is_read_as_bytes_under_one_path_segment() -> None:
    key = "a/b?c#d%e fé"
    handle, seen = scripted(
        ok({"values": {key: {"value": "\ufffd\ufffd", "metadata": None}, "gone": None}}),
        httpx.Response(200, content=b"\xff\xfe", headers={"expiration": "1900000000"}),
        ok({"m": 1}),
    )
    entries = list(RemoteKv(mock_client(handle), NAMESPACE).get_many([key, "gone"]))
    assert entries == [KvEntry(key, b"\xff\xfe", 1900000000, {"m": 1})]
    encoded = "a%2Fb%3Fc%23d%25e%20f%C3%A9"
    assert [r.url.raw_path.decode() for r in seen[1:]] == [
        f"{KV_PATH}/values/{encoded}",
        f"{KV_PATH}/metadata/{encoded}",
    ]


# --- against the loopback server -----------------------------------------------------------------

WORDS = ["analysis", "status", "report", "é", "z", "ä", "😀", "a/b", "A"]


def seed_keys(stub: CloudflareStub, count: int, *, matching: int = 0) -> list[str]:
    """`count` keys of mixed scripts, the first `matching` of them starting with `analysis_`."""
    keys = [f"analysis_{i:05d}" for i in range(matching)]
    keys += [f"{WORDS[i % len(WORDS)]}:{i:05d}" for i in range(count - matching)]
    for index, key in enumerate(keys):
        stub.kv_put(
            NAMESPACE,
            key,
            json.dumps({"key": key, "n": index}),
            expiration=4_000_000_000 if index % 3 == 0 else None,
            metadata={"n": index} if index % 2 else None,
        )
    return sorted(keys, key=lambda k: k.encode())


def test_listing_through_short_and_empty_pages_returns_every_key_in_byte_order(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    expected = seed_keys(cf_server, 2345)
    cf_server.list_page_caps = (1000, 0, 7, 0, 0, 1000, 3)
    kv = RemoteKv(client_for(cf_server, fake_clock), NAMESPACE)
    assert [key.name for key in kv.iter_keys()] == expected
    pages = [e for e in cf_server.log if e.kind == "list"]
    assert len(pages) > math.ceil(2345 / 1000)
    assert [key.name for key in kv.iter_keys("é")] == [k for k in expected if k.startswith("é")]
    assert all(e.query.get("prefix") == "é" for e in cf_server.log[len(pages) :])


def read_everything(
    stub: CloudflareStub, clock: FakeClock, *, page_size: int = 1000, batch_size: int = 100
) -> tuple[list[KvEntry], dict[str, Any]]:
    """List all keys, then bulk-read those starting with `analysis_`: the verify workload."""
    client = client_for(stub, clock)
    kv = RemoteKv(client, NAMESPACE, page_size=page_size, batch_size=batch_size)
    wanted = [key.name for key in kv.iter_keys() if key.name.startswith("analysis_")]
    entries = list(kv.get_many(wanted))
    return entries, client.stats.to_json()


def test_listing_and_reading_cost_the_minimum_number_of_requests(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    seed_keys(cf_server, 2500, matching=350)
    entries, stats = read_everything(cf_server, fake_clock)
    assert [entry.key for entry in entries] == [f"analysis_{i:05d}" for i in range(350)]
    assert entries[0] == KvEntry(
        "analysis_00000", b'{"key": "analysis_00000", "n": 0}', 4_000_000_000, None
    )
    assert (stats["list"], stats["bulk_get"]) == (math.ceil(2500 / 1000), math.ceil(350 / 100))
    assert (stats["get_value"], stats["retries"]) == (0, 0)
    assert cf_server.counts() == {"list": 3, "bulk_get": 4}


def test_faults_change_the_cost_but_not_the_results(
    cf_server: CloudflareStub, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seed_keys(cf_server, 2500, matching=350)
    small = {"page_size": 10, "batch_size": 10}  # ~290 requests, so that every fault occurs
    clean, clean_stats = read_everything(cf_server, fake_clock, **small)
    cf_server.set_faults(
        FaultPlan(seed=7, rate_limited=0.05, server_error=0.05, dropped=0.03, retry_after="mixed")
    )
    faulty, stats = read_everything(cf_server, fake_clock, **small)
    assert faulty == clean
    faults = Counter(entry.fault for entry in cf_server.log if entry.fault)
    assert {"429", "drop", "500", "502", "503"} <= set(faults)
    assert stats["retries"] == faults.total() > 0
    assert stats["list"] + stats["bulk_get"] == clean_stats["list"] + clean_stats["bulk_get"] + (
        faults.total()
    )
    assert_no_token(caplog.text)


def test_a_binary_value_among_text_values_is_read_exactly(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    keys = seed_keys(cf_server, 150, matching=150)
    cf_server.kv_put(NAMESPACE, "analysis_00042", b"\x89PNG\xff\x00", metadata={"type": "png"})
    client = client_for(cf_server, fake_clock)
    entries = {e.key: e for e in RemoteKv(client, NAMESPACE).get_many(keys)}
    assert len(entries) == 150
    assert entries["analysis_00042"] == KvEntry(
        "analysis_00042", b"\x89PNG\xff\x00", None, {"type": "png"}
    )
    assert client.stats.get_value == 1
    assert client.stats.bulk_get <= 2 + 2 * math.ceil(math.log2(100))


def test_writes_through_the_api_read_back_the_same(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    base = f"{cf_server.base_url}{KV_PATH.removeprefix('/client/v4')}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    odd_key = "a/b?c#d%e f"
    with httpx.Client(headers=auth) as http:
        bulk = [
            {"key": "b64", "value": base64.b64encode(b"\xff\x00").decode(), "base64": True},
            {"key": "plain", "value": "text", "metadata": {"m": 1}, "expiration_ttl": 600},
            {"key": "doomed", "value": "x"},
            {"key": "doomed-too", "value": "y"},
            {"key": "doomed-three", "value": "z"},
        ]
        assert http.put(f"{base}/bulk", json=bulk).json()["result"]["successful_key_count"] == 5
        put = http.put(
            f"{base}/values/{quote(odd_key, safe='')}",
            files={"value": (None, b"multi"), "metadata": (None, b'{"k": 2}')},
        )
        assert put.status_code == 200
        assert http.post(f"{base}/bulk/delete", json=["doomed"]).json()["success"] is True
        assert http.request("DELETE", f"{base}/bulk", json=["doomed-too"]).status_code == 200
        assert http.delete(f"{base}/values/doomed-three").json()["result"] is None
        missing = http.get(f"{base}/values/doomed-three")
        assert (missing.status_code, missing.json()["errors"][0]["code"]) == (404, 10009)
    kv = RemoteKv(client_for(cf_server, fake_clock), NAMESPACE)
    listed = {key.name: key for key in kv.iter_keys()}
    assert sorted(listed) == ["a/b?c#d%e f", "b64", "plain"]
    assert listed["plain"].expiration is not None and listed["plain"].metadata == {"m": 1}
    got = {e.key: (e.value, e.metadata) for e in kv.get_many(sorted(listed))}
    assert got == {
        odd_key: (b"multi", {"k": 2}),
        "b64": (b"\xff\x00", None),
        "plain": (b"text", {"m": 1}),
    }


def test_refusals_name_the_permission_or_the_missing_resource(
    cf_server: CloudflareStub, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cf_server.tokens["kv-only-token-Zx81"] = frozenset({"kv"})
    database = cf_server.add_database("prod")
    cases: list[tuple[Callable[[], None], str, str]] = [
        (
            lambda: _list(client_for(cf_server, fake_clock, token="wrong-token-Qm2")),
            "HTTP 401, code 10000: Authentication error",
            "'Workers KV Storage Read'",
        ),
        (
            lambda: _d1_read_on(
                client_for(cf_server, fake_clock, token="kv-only-token-Zx81"), database
            ),
            "HTTP 403, code 10000",
            "'D1 Read'",
        ),
        (
            lambda: _list_on(client_for(cf_server, fake_clock), "ffffffffffffffffffffffffffffffff"),
            "code 10013: list keys: 'namespace not found'",
            "check the binding's id",
        ),
        (
            lambda: _d1_read_on(client_for(cf_server, fake_clock), "no-such-db"),
            "code 7404: The database no-such-db could not be found",
            "check database_id",
        ),
    ]
    for run, said, advice in cases:
        with pytest.raises(ApiError) as caught:
            run()
        assert said in str(caught.value) and advice in str(caught.value)
        assert_no_token(*error_texts(caught.value))
    assert_no_token(caplog.text)


def _list_on(client: CloudflareClient, namespace: str) -> None:
    list(RemoteKv(client, namespace).iter_keys())


def _d1_read_on(client: CloudflareClient, database_id: str) -> None:
    list(RemoteD1(client, database_id).query("SELECT 1"))


def test_a_non_json_success_answer_is_retried_then_one_error(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    """A 200 whose body is not JSON (cut short, a proxy's page) is a glitch: retried like a 5xx,
    a bounded number of times, then one error that says what happened."""
    cf_server.set_faults(FaultPlan(non_json=1.0))
    with pytest.raises(ApiError) as caught:
        _list(client_for(cf_server, fake_clock))
    assert str(caught.value).startswith(
        "the API answered HTTP 200 with a body that is not JSON (cut short, or a proxy's page) "
        f"while listing the keys of KV namespace {NAMESPACE}; gave up after 6 attempts"
    )
    assert cf_server.counts() == {"list": 6}


@pytest.mark.parametrize(
    "glitch",
    [httpx.Response(200, text="<html>hello</html>"), httpx.Response(200, text='{"success": tr')],
    ids=["html page", "truncated JSON"],
)
def test_one_glitched_success_answer_costs_one_retry_not_the_run(glitch: httpx.Response) -> None:
    handle, seen = scripted(glitch, ok([{"name": "k"}], {"cursor": ""}))
    assert [k.name for k in RemoteKv(mock_client(handle), NAMESPACE).iter_keys()] == ["k"]
    assert len(seen) == 2


def test_an_api_slower_than_the_timeout_is_one_error(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    cf_server.set_faults(FaultPlan(delay_s=1.0))
    client = client_for(cf_server, fake_clock, retry=RetryPolicy(max_attempts=2, timeout_s=0.1))
    with pytest.raises(
        ApiError,
        match=r"did not answer within 0\.1 s while listing .*gave up "
        r"after 2 attempts",
    ):
        _list(client)
    assert client.stats.list == 2


@pytest.mark.parametrize("style", ["ratelimit", "x-ratelimit"])
def test_the_client_limiter_keeps_under_the_server_limit(
    cf_server: CloudflareStub, style: str
) -> None:
    clock = ScaledClock(100)  # 30 s windows pass in 0.3 s
    cf_server.rate_limit = ServerRateLimit(
        max_requests=20, window_s=30, style=style, clock=clock.now
    )
    seed_keys(cf_server, 500)
    # One under the server's limit: the server starts its window a request's latency later.
    limiter = RateLimiter(max_requests=19, window_s=30, clock=clock.now, sleep=clock.sleep)
    client = client_for(cf_server, clock, limiter=limiter)
    assert len(list(RemoteKv(client, NAMESPACE, page_size=10).iter_keys())) == 500
    assert cf_server.counts() == {"list": 50}
    assert [e for e in cf_server.log if e.status == 429] == []


@pytest.mark.parametrize(("style", "rejections"), [("ratelimit", False), ("none", True)])
def test_without_its_own_limit_the_client_follows_the_server(
    cf_server: CloudflareStub, style: str, rejections: bool
) -> None:
    """Told that no request remains, the client pauses; told nothing, it waits out each 429."""
    clock = ScaledClock(100)
    cf_server.rate_limit = ServerRateLimit(
        max_requests=20, window_s=30, style=style, clock=clock.now
    )
    seed_keys(cf_server, 350, matching=350)
    client = client_for(cf_server, clock)
    kv = RemoteKv(client, NAMESPACE, page_size=10)
    assert len(list(kv.get_many([k.name for k in kv.iter_keys()]))) == 350
    refused = [entry for entry in cf_server.log if entry.status == 429]
    assert bool(refused) is rejections
    assert client.stats.rate_limited == len(refused)
    assert client.stats.list + client.stats.bulk_get == 35 + 4 + len(refused)
    # 39 requests at 20 per 30 s window cannot end within one window, however slow the machine:
    # the client paused (waited) and the run spans more than 30 s of the scaled clock.
    assert client.stats.waited_s > 0 and clock.now() > 30


# --- D1 against the loopback server --------------------------------------------------------------

SCHEMA = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, score REAL, note TEXT UNIQUE);"
)


def test_tables_are_read_in_pages_of_primary_key_ranges(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    database = cf_server.add_database("prod", schema_sql=SCHEMA)
    rows = [(i, "a" if i % 3 else "b", i / 7, None) for i in range(1, 4001)]
    cf_server.d1(database).executemany("INSERT INTO jobs VALUES (?, ?, ?, ?)", rows)
    client = client_for(cf_server, fake_clock)
    d1 = RemoteD1(client, database)
    got = list(
        d1.iter_table(
            "jobs", ["kind", "score", "note"], where_sql="kind = ?", where_params=["a"], page=1000
        )
    )
    expected = [(kind, score, note) for _, kind, score, note in rows if kind == "a"]
    assert got == expected
    assert client.stats.d1_query == math.ceil((len(expected) + 1) / 1000)
    assert list(d1.query("SELECT count(*) FROM jobs WHERE kind = ?", ["b"])) == [(1333,)]


def test_a_batch_is_atomic_and_an_sql_error_rolls_it_all_back(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    database = cf_server.add_database("prod", schema_sql=SCHEMA)
    client = client_for(cf_server, fake_clock)
    d1 = RemoteD1(client, resolve_d1_database_id(client, "prod"), name="prod")
    before = d1.time_travel_bookmark()
    insert = "INSERT INTO jobs (kind, score, note) VALUES (?, ?, ?)"
    with pytest.raises(ApiError) as caught:
        d1.execute_batch([(insert, ["a", 0.5, "one"]), ("INSERT INTO jobs (nope) VALUES (1)", [])])
    assert caught.value.code == 7500 and "table jobs has no column named nope" in str(caught.value)
    assert cf_server.d1(database).execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert d1.time_travel_bookmark() == before
    guarded = (
        "INSERT INTO jobs (kind, score, note) SELECT ?, ?, ? WHERE NOT EXISTS "
        "(SELECT 1 FROM jobs WHERE note = ?)"
    )
    assert d1.execute_batch(
        [
            (insert, ["a", 0.5, "one"]),
            (insert, ["b", None, "two"]),
            (guarded, ["a", 1, "one", "one"]),
        ]
    ) == [1, 1, 0]
    assert cf_server.d1(database).execute("SELECT kind, score, note FROM jobs").fetchall() == [
        ("a", 0.5, "one"),
        ("b", None, "two"),
    ]
    assert d1.time_travel_bookmark() > before
    with pytest.raises(ApiError, match="no D1 database named 'staging'"):
        resolve_d1_database_id(client, "staging")


def test_oversized_statements_never_reach_the_api(
    cf_server: CloudflareStub, fake_clock: FakeClock
) -> None:
    database = cf_server.add_database("prod", schema_sql=SCHEMA)
    d1 = RemoteD1(client_for(cf_server, fake_clock), database)
    values = ",".join(["(?, ?, ?)"] * 34)
    with pytest.raises(ApiError, match="binds 102 parameters"):
        d1.execute_batch([(f"INSERT INTO jobs (kind, score, note) VALUES {values}", ["a"] * 102)])
    assert cf_server.log == []


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"sql": "SELECT 1", "params": None}, 7400, "Expected array, received null"),
        ({"sql": "BEGIN TRANSACTION"}, 7500, "To execute a transaction"),
        ({"sql": "SELECT " + ",".join(["?"] * 101), "params": ["1"] * 101}, 7500, "too many SQL"),
        ({"batch": [{"sql": "SELECT * FROM nowhere"}]}, 7500, "no such table: nowhere"),
    ],
)
def test_the_server_refuses_what_d1_refuses(
    cf_server: CloudflareStub, body: dict[str, Any], code: int, message: str
) -> None:
    database = cf_server.add_database("prod")
    url = f"{cf_server.base_url}/accounts/{ACCOUNT}/d1/database/{database}/query"
    answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert answer["success"] is False and answer["result"] is None
    assert answer["errors"][0]["code"] == code and message in answer["errors"][0]["message"]
    if cf_server.contract is not None and "params" in body and body["params"] is None:
        assert any(
            "body: params: None is not of type 'array'" in v for v in cf_server.violations
        ), cf_server.violations
        cf_server.violations.clear()  # the contract check saw the bad request too, as it should


def test_the_contract_check_catches_a_request_off_the_spec(cf_server: CloudflareStub) -> None:
    if cf_server.contract is None:
        pytest.skip("the OpenAPI subset is absent (see the warning); nothing to check with")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    keys = [f"k{i}" for i in range(101)]
    answer = httpx.post(
        f"{cf_server.base_url}{KV_PATH.removeprefix('/client/v4')}/bulk/get",
        json={"keys": keys, "type": "binary"},
        headers=headers,
    )
    assert answer.status_code == 400
    found = list(cf_server.violations)
    cf_server.violations.clear()
    assert any("is too long" in v for v in found) and any(
        "'binary' is not one of" in v for v in found
    )


# --- wiring from the wrangler config -------------------------------------------------------------


@dataclass(frozen=True)
class KvBinding:
    binding: str
    id: str | None


@dataclass(frozen=True)
class D1Binding:
    binding: str
    database_id: str | None = None
    database_name: str | None = None


@dataclass(frozen=True)
class Config:
    account_id: str | None
    kv_namespaces: tuple[KvBinding, ...]
    d1_databases: tuple[D1Binding, ...]


def test_the_config_bindings_open_both_sources(cf_server: CloudflareStub) -> None:
    database = cf_server.add_database("prod", schema_sql=SCHEMA)
    cf_server.kv_put(NAMESPACE, "analysis_2026-01-05", "{}")
    config = Config(ACCOUNT, (KvBinding("KV", NAMESPACE),), (D1Binding("DB", None, "prod"),))
    environ = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_BASE_URL": cf_server.base_url}
    kv, d1, source = open_remote_sources(config, environ=environ)
    assert [key.name for key in kv.iter_keys()] == ["analysis_2026-01-05"]
    assert list(d1.query("SELECT count(*) FROM jobs")) == [(0,)]
    assert source == {
        "kind": "remote",
        "account_id": ACCOUNT,
        "base_url": cf_server.base_url,
        "kv_binding": "KV",
        "kv_namespace_id": NAMESPACE,
        "d1_binding": "DB",
        "d1_database_id": database,
        "d1_database_name": "prod",
    }


@pytest.mark.parametrize(
    ("config", "kv_binding", "error", "message"),
    [
        (
            Config(ACCOUNT, (KvBinding("A", "1"), KvBinding("B", "2")), (D1Binding("DB", "x"),)),
            None,
            ConfigError,
            r"has 2 \[\[kv_namespaces\]\] bindings \(A, B\): choose one with --kv-binding",
        ),
        (
            Config(ACCOUNT, (KvBinding("A", "1"),), (D1Binding("DB", "x"),)),
            "CACHE",
            ConfigError,
            r"no binding 'CACHE' in \[\[kv_namespaces\]\] of the wrangler config \(it has: A\)",
        ),
        (
            Config(ACCOUNT, (KvBinding("A", None),), (D1Binding("DB", "x"),)),
            None,
            ConfigError,
            "KV binding 'A' has no id",
        ),
        (
            Config(None, (KvBinding("A", "1"),), (D1Binding("DB", "x"),)),
            None,
            ApiError,
            "set CLOUDFLARE_ACCOUNT_ID or account_id",
        ),
    ],
)
def test_unusable_bindings_say_what_to_change(
    config: Config, kv_binding: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        open_remote_sources(config, kv_binding=kv_binding, environ={"CLOUDFLARE_API_TOKEN": TOKEN})
