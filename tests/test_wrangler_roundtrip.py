"""Round trips with the real wrangler 4.86.0: what it writes kv2d1 reads, what kv2d1 writes it reads.

Each wrangler command costs about 2 s, so each direction uses a handful: one bulk put carries
every text key.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kv2d1.config import load_wrangler_config, local_d1_id, local_kv_id, persist_root
from verifier.model import KeyInfo, KvEntry
from verifier.sources.local import (
    LocalD1,
    LocalKv,
    d1_sqlite_path,
    kv_sqlite_path,
    open_local_sources,
)
from verifier.sources.localwriter import LocalKvWriter, create_local_d1

if TYPE_CHECKING:
    from tests.conftest import Wrangler

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]

SCHEMA_SQL = Path(__file__).resolve().parents[1] / "schema" / "scheduled-jobs.sql"
LONG_KEY = "long/" + "é" * 253 + "x"  # exactly 512 bytes of UTF-8, KV's longest key
TEXT_VALUES = {
    "analysis_2026-11-16": '{"symbols":["AAPL"],"confidence":0.82}',
    "status:analysis:2026-11-16": "success",
    "reports/pre-market/2026-11-16": "<p>pre-market</p>",
    "100% done & more?": "percent",
    "with  two spaces ": "spaces",
    "Ünïcødé-キー-🙂": "värde 🙂",
    "B-upper": "B",
    "a-lower": "a",
    "\uffff-last-bmp": "U+FFFF sorts before 🙂 in UTF-8, after it in UTF-16",
    LONG_KEY: "long",
}
METADATA = {"status:analysis:2026-11-16": {"src": "cron", "tags": ["é", 1, None, 2.5]}}
ABSOLUTE = {"reports/pre-market/2026-11-16": 2_000_000_000}  # wrangler refuses > 2**31 - 1
TTL = {"analysis_2026-11-16": 3600}
BINARY = bytes(range(256)) + b"\xff\xfe\x00\x80 not UTF-8"


def utf8_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode())


def json_out(text: str) -> Any:
    """The JSON document in wrangler's stdout (`kv bulk get` appends `Success!`)."""
    start = min(i for i in (text.find("["), text.find("{")) if i >= 0)
    return json.JSONDecoder().raw_decode(text[start:])[0]


def assert_ttl(expiration: int | None, before: int, ttl: int, after: int) -> None:
    assert expiration is not None
    assert before + ttl <= expiration <= after + ttl


# --- wrangler writes, kv2d1 reads -------------------------------------------------------------

WRITTEN_BY_WRANGLER = """\
name = "kv2d1-roundtrip"
compatibility_date = "2026-04-01"

[[kv_namespaces]]
binding = "TRADING_RESULTS"
id = "0f2ac74b498b48028cb68387c421e279"
preview_id = "preview-namespace"

[[d1_databases]]
binding = "PREDICT_JOBS_DB"
database_name = "cct-predict-jobs"
database_id = "00000000-0000-4000-8000-000000000001"
"""

SEED_SQL = """
INSERT INTO job_executions (job_type, execution_date, execution_time, status, duration_ms,
  symbols_processed, error_message, metadata)
VALUES ('analysis', '2026-11-16', '2026-11-16T12:30:00.000Z', 'success', 1234, 5, NULL,
  '{"src":"é 🙂"}');
INSERT INTO analysis_results (execution_id, symbol, sentiment, confidence, signals, news_count)
VALUES (1, 'AAPL', 'bullish', 0.825, '["rsi","macd"]', 7);
INSERT INTO report_snapshots (execution_id, report_type, report_date, content, high_confidence_count)
VALUES (1, 'pre-market', '2026-11-16', '{"top":["AAPL"]}', 1);
"""


def bulk_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for key, value in TEXT_VALUES.items():
        item: dict[str, Any] = {"key": key, "value": value}
        if key in METADATA:
            item["metadata"] = METADATA[key]
        if key in ABSOLUTE:
            item["expiration"] = ABSOLUTE[key]
        if key in TTL:
            item["expiration_ttl"] = TTL[key]
        items.append(item)
    return items


def test_state_written_by_wrangler_is_read_intact(
    wrangler: Wrangler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wrangler.toml").write_text(WRITTEN_BY_WRANGLER)
    (tmp_path / "bulk.json").write_text(json.dumps(bulk_items(), ensure_ascii=False))
    (tmp_path / "value.bin").write_bytes(BINARY)
    (tmp_path / "seed.sql").write_text(SCHEMA_SQL.read_text() + SEED_SQL)
    persist = ("--local", "--persist-to", "state")
    before = int(time.time())

    bulk_put = ["kv", "bulk", "put", "bulk.json", "--binding", "TRADING_RESULTS"]
    binary_put = ["kv", "key", "put", "binary/key", "--path", "value.bin", "--ttl", "7200"]
    binary_put += ["--binding", "TRADING_RESULTS", "--preview", "--metadata", '{"binary":true}']
    wrangler(tmp_path, *bulk_put, "--preview", "false", *persist)
    wrangler(tmp_path, *binary_put, *persist)
    wrangler(tmp_path, "d1", "execute", "cct-predict-jobs", "--file", "seed.sql", *persist)
    after = int(time.time()) + 1

    # wrangler leaves its latest writes in the WAL (workerd exits without a checkpoint).
    d1_file = d1_sqlite_path(tmp_path / "state" / "v3", "00000000-0000-4000-8000-000000000001")
    assert Path(f"{d1_file}-wal").stat().st_size > 0

    monkeypatch.chdir(tmp_path)
    config = load_wrangler_config(None, env=None)
    kv, d1, source = open_local_sources(
        config, kv_binding=None, d1_binding=None, persist_to=Path("state"), preview=None,
        now_ms=int(time.time() * 1000),  # wrangler wrote the TTLs from the real clock
    )
    keys = {k.name: k for k in kv.iter_keys()}

    # KV: every key, in UTF-8 byte order, with its expiration and metadata; every value.
    assert source["kv_namespace_id"] == "0f2ac74b498b48028cb68387c421e279"
    assert list(keys) == utf8_order(list(TEXT_VALUES))
    assert len(LONG_KEY.encode()) == 512 and LONG_KEY in keys
    for key in TEXT_VALUES:
        if key in TTL:
            assert_ttl(keys[key].expiration, before, TTL[key], after)
        else:
            assert keys[key].expiration == ABSOLUTE.get(key)
        assert keys[key].metadata == METADATA.get(key)
    values = {e.key: e.value for e in kv.get_many(list(TEXT_VALUES))}
    assert values == {k: v.encode() for k, v in TEXT_VALUES.items()}

    # `--preview` wrote to preview_id's namespace: kv2d1 finds it by the same rule.
    preview = LocalKv(tmp_path / "state" / "v3", local_kv_id(config.kv_binding(), preview=True),
                      now_ms=int(time.time() * 1000))
    (binary,) = preview.get_many(["binary/key"])
    assert (binary.value, binary.metadata) == (BINARY, {"binary": True})
    assert_ttl(binary.expiration, before, 7200, after)
    assert "binary/key" not in keys

    # D1: every row, read through a read-only connection that sees the WAL.
    assert d1.path == d1_file
    d1.check_plan_schema()
    jobs = d1.query(
        "SELECT job_type, execution_date, execution_time, status, duration_ms,"
        " symbols_processed, error_message, metadata FROM job_executions"
    )
    results = d1.query(
        "SELECT execution_id, symbol, sentiment, confidence, signals, news_count"
        " FROM analysis_results"
    )
    reports = d1.query(
        "SELECT report_type, report_date, content, high_confidence_count FROM report_snapshots"
    )
    assert list(jobs) == [
        ("analysis", "2026-11-16", "2026-11-16T12:30:00.000Z", "success", 1234, 5, None,
         '{"src":"é 🙂"}')
    ]  # fmt: skip
    assert list(results) == [(1, "AAPL", "bullish", 0.825, '["rsi","macd"]', 7)]
    assert list(reports) == [("pre-market", "2026-11-16", '{"top":["AAPL"]}', 1)]


# --- kv2d1 writes, wrangler reads -------------------------------------------------------------

WRITTEN_BY_KV2D1 = """\
name = "kv2d1-roundtrip"
compatibility_date = "2026-04-01"

[[kv_namespaces]]
binding = "KV"
id = "fresh-ns"

[[d1_databases]]
binding = "DB"
database_name = "cct-predict-jobs"
database_id = "11111111-1111-1111-1111-111111111111"
"""


def test_state_written_by_kv2d1_is_read_by_wrangler(wrangler: Wrangler, tmp_path: Path) -> None:
    (tmp_path / "wrangler.toml").write_text(WRITTEN_BY_KV2D1)
    config = load_wrangler_config(tmp_path / "wrangler.toml", env=None)
    v3 = persist_root(config, None) / "v3"
    now = int(time.time())
    entries = [
        KvEntry(k, v.encode(), ABSOLUTE.get(k) or (now + TTL[k] if k in TTL else None),
                METADATA.get(k))
        for k, v in TEXT_VALUES.items()
    ]  # fmt: skip
    namespace = local_kv_id(config.kv_binding(), preview=None)
    with LocalKvWriter(v3, namespace) as writer:
        writer.put_many([*entries, KvEntry("binary/key", BINARY, metadata={"binary": True})])
        writer.put_many([KvEntry("expired", b"gone", expiration=now - 10)])
    d1_path = create_local_d1(v3, local_d1_id(config.d1_binding()))
    with sqlite3.connect(d1_path) as conn:
        conn.executescript(SCHEMA_SQL.read_text())
    with LocalD1(d1_path, readonly=False) as d1:
        d1.execute_batch([
            ("INSERT INTO job_executions (job_type, execution_date, execution_time, status,"
             " duration_ms, metadata) VALUES (?, ?, ?, ?, ?, ?)",
             ("weekly", "2026-11-20", "2026-11-20T22:00:00.000Z", "partial", None, '{"é":1}')),
            ("INSERT INTO analysis_results (execution_id, symbol, confidence, reasoning)"
             " VALUES (?, ?, ?, ?)", (1, "MSFT", 0.1 + 0.2, "キー 🙂")),
        ])  # fmt: skip
    (tmp_path / "keys.json").write_text(json.dumps(list(TEXT_VALUES), ensure_ascii=False))

    listed = json_out(wrangler(tmp_path, "kv", "key", "list", "--binding", "KV").stdout)
    got = json_out(wrangler(tmp_path, "kv", "bulk", "get", "keys.json", "--binding", "KV").stdout)
    binary = wrangler.binary(tmp_path, "kv", "key", "get", "binary/key", "--binding", "KV").stdout
    rows = json_out(wrangler(
        tmp_path, "d1", "execute", "DB", "--local", "--json", "--command",
        "SELECT je.job_type, je.status, je.duration_ms, je.metadata, ar.symbol, ar.confidence,"
        " ar.reasoning FROM job_executions je JOIN analysis_results ar ON ar.execution_id = je.id",
    ).stdout)  # fmt: skip

    expected = [
        KeyInfo(e.key, e.expiration, e.metadata)
        for e in [*entries, KvEntry("binary/key", b"", metadata={"binary": True})]
    ]
    assert [_key_info(item) for item in listed] == sorted(expected, key=lambda k: k.name.encode())
    assert got == {k: {"value": v} for k, v in TEXT_VALUES.items()}
    assert binary == BINARY
    assert rows[0]["results"] == [{
        "job_type": "weekly", "status": "partial", "duration_ms": None, "metadata": '{"é":1}',
        "symbol": "MSFT", "confidence": 0.1 + 0.2, "reasoning": "キー 🙂",
    }]  # fmt: skip
    # wrangler's list deleted the expired row (reads write there); kv2d1 only ever skips it.
    with sqlite3.connect(kv_sqlite_path(v3, namespace)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM _mf_entries WHERE key = 'expired'"
        ).fetchone() == (0,)


def _key_info(item: dict[str, Any]) -> KeyInfo:
    assert set(item) <= {"name", "expiration", "metadata"}
    return KeyInfo(item["name"], item.get("expiration"), item.get("metadata"))
