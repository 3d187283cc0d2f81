"""Local wrangler state: names, LocalKv, LocalD1, the writer, open_local_sources — on real files.

Round trips with the real wrangler are in tests/test_wrangler_roundtrip.py.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from kv2d1.config import D1Binding, KvBinding, WranglerConfig
from verifier.errors import (
    BackfillError,
    CorruptSourceError,
    D1SchemaError,
    SourceError,
    StateNotFoundError,
    TargetLockedError,
)
from verifier.model import KeyInfo, KvEntry
from verifier.sources import D1Source, KvSource
from verifier.sources.local import (
    D1_OBJECT_CLASS,
    KV_OBJECT_CLASS,
    LocalD1,
    LocalKv,
    d1_sqlite_path,
    durable_object_file_name,
    kv_sqlite_path,
    open_local_sources,
    sanitise_path,
)
from verifier.sources.localwriter import KV_SCHEMA, LocalKvWriter, create_local_d1, new_blob_id

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "schema" / "scheduled-jobs.sql"
NOW_MS = 1_795_000_000_000  # 2026-11-18
NOW_S = NOW_MS // 1000


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "object_id", "file_name"),
    [
        (D1_OBJECT_CLASS, "00000000-0000-0000-0000-000000000001",
         "a36f84ea60804f30bb0c7f7cad9f5336a6cca0165abdab8b9241d93dbf0b6006.sqlite"),
        (D1_OBJECT_CLASS, "11111111-1111-1111-1111-111111111111",
         "c917712ba74c5102d69ecf1555a42fe4d03ba423fee62c633ac82b645ae953eb.sqlite"),
        (KV_OBJECT_CLASS, "test-kv-id",
         "34a4203c3d2e8f2a2530bedce7b58dcf720ecea04cdc479e532f6095315162a6.sqlite"),
        (KV_OBJECT_CLASS, "fresh-ns",
         "001631ab70e04d28afa9bd5eaa5edea6626e4f29124e4ccf8c222ce8a502cde0.sqlite"),
    ],
)  # fmt: skip
def test_durable_object_file_name_matches_files_wrangler_made(
    class_name: str, object_id: str, file_name: str
) -> None:
    assert durable_object_file_name(class_name, object_id) == file_name


# Expected values printed by miniflare 4.20260426.0's own sanitisePath under Node 20.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0f2ac74b498b48028cb68387c421e279", "0f2ac74b498b48028cb68387c421e279"),
        ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"),
        ("my_ns-1", "my_ns-1"),
        ("a:b", "a_b"),
        ("..", "__"),
        ("a/../b", "a____b"),
        ("../..", "_____"),
        ("...", "___"),
        (".hidden", ".hidden"),
        ("a.b", "a.b"),
        ("x?y*z", "x_y_z"),
        ("CON", "_"),
        ("con.txt", "_"),
        ("Lpt9.log", "_"),
        ("comx", "comx"),
        (" lead", "_lead"),
        ("trail ", "trail_"),
        ("/abs/path\\", "_abs_path_"),
        ("tab\there", "tab_here"),
        ("ctl\u0085x", "ctl_x"),
        ("ns é:1%", "ns é_1%"),
        ("a<b>c|d\"e'f^g", "a_b_c_d_e_f_g"),
        ("..\n", ".._"),
        ("x" * 300, "x" * 255),
        ("é" * 300, "é" * 255),
    ],
)
def test_sanitise_path_matches_miniflare(name: str, expected: str) -> None:
    assert sanitise_path(name) == expected


def test_sanitise_path_drops_a_surrogate_pair_cut_in_half() -> None:
    assert sanitise_path("🙂" * 200) == "🙂" * 127  # 255 UTF-16 units end mid-pair


# --- KV: written by kv2d1's writer, read back -------------------------------------------------


def put(v3: Path, ns: str, *entries: KvEntry) -> None:
    with LocalKvWriter(v3, ns) as writer:
        writer.put_many(entries)


def kv_rows(v3: Path, ns: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(kv_sqlite_path(v3, ns)) as conn:
        return conn.execute(
            "SELECT key, blob_id, expiration, metadata FROM _mf_entries ORDER BY key"
        ).fetchall()


# Code-point order differs from UTF-16 order for U+FFFF vs 🙂: KV and SQLite sort UTF-8 bytes.
ORDER_KEYS = ["B", "a", "a%", "a/b", "a:b", "a_b", "ab", "é", "\uffff", "🙂"]


def test_keys_come_in_utf8_byte_order_with_metadata_and_expiration(tmp_path: Path) -> None:
    put(
        tmp_path, "ns",
        *(KvEntry(k, k.encode()) for k in reversed(ORDER_KEYS)),
        KvEntry("meta", b"{}", expiration=NOW_S + 3600, metadata={"src": "t", "n": [1, 2.5]}),
    )  # fmt: skip

    keys = list(LocalKv(tmp_path, "ns", now_ms=NOW_MS).iter_keys())

    assert [k.name for k in keys] == sorted([*ORDER_KEYS, "meta"], key=str.encode)
    assert KeyInfo("meta", NOW_S + 3600, {"src": "t", "n": [1, 2.5]}) in keys
    assert KeyInfo("a", None, None) in keys


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a", ["a", "a%", "a/b", "a:b", "a_b", "ab"]),
        ("a%", ["a%"]),  # LIKE wildcards are literal
        ("a_", ["a_b"]),
        ("A", []),  # case-sensitive
        ("é", ["é"]),
        ("", ORDER_KEYS),
        ("zz", []),
    ],
)
def test_prefix_is_an_exact_case_sensitive_prefix(
    tmp_path: Path, prefix: str, expected: list[str]
) -> None:
    put(tmp_path, "ns", *(KvEntry(k, b"v") for k in ORDER_KEYS))
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS, page_size=2)
    assert [k.name for k in kv.iter_keys(prefix)] == expected
    assert list(kv.iter_key_names(prefix)) == expected


def test_expired_keys_are_skipped_not_deleted(tmp_path: Path) -> None:
    put(
        tmp_path, "ns",
        KvEntry("dead", b"x", expiration=NOW_S - 1),
        KvEntry("edge", b"x", expiration=NOW_S),  # listed while expiration >= now (ms)
        KvEntry("live", b"x", expiration=NOW_S + 1),
        KvEntry("lasting", b"x"),  # no expiration at all
    )  # fmt: skip
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)

    assert [k.name for k in kv.iter_keys()] == ["edge", "lasting", "live"]
    assert list(kv.iter_key_names()) == ["edge", "lasting", "live"] and kv.count_keys() == 3
    # A get uses miniflare's stricter `expiration > now`, so `edge` is gone for it.
    assert [e.key for e in kv.get_many(["dead", "edge", "live"])] == ["live"]
    assert [row[0] for row in kv_rows(tmp_path, "ns")] == ["dead", "edge", "lasting", "live"]


def test_keys_are_read_in_pages(tmp_path: Path) -> None:
    put(tmp_path, "ns", *(KvEntry(f"k{i:05d}", b"v") for i in range(2500)))
    put(tmp_path, "ns", *(KvEntry(f"k{i:05d}x", b"v", expiration=1) for i in range(0, 2500, 7)))
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS, page_size=1000)
    statements: list[str] = []
    kv._conn.set_trace_callback(statements.append)

    first = list(itertools.islice(kv.iter_keys(), 1500))
    pages_for_1500 = len(statements)
    every = [k.name for k in kv.iter_keys()]

    assert first[-1].name == "k01499"
    assert pages_for_1500 == 2
    assert every == [f"k{i:05d}" for i in range(2500)]
    assert all("LIMIT" in s for s in statements)


def test_get_many_keeps_the_order_given_and_leaves_out_missing_keys(tmp_path: Path) -> None:
    binary = bytes(range(256)) + b"\xff\xfe\x00"
    put(
        tmp_path, "ns",
        KvEntry("a", b"A"),
        KvEntry("bin", binary, expiration=NOW_S + 60, metadata={"k": "é"}),
        KvEntry("c", b""),
    )  # fmt: skip
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)

    got = list(kv.get_many(["c", "nope", "bin", "a"]))

    assert got == [
        KvEntry("c", b""),
        KvEntry("bin", binary, NOW_S + 60, {"k": "é"}),
        KvEntry("a", b"A"),
    ]


@pytest.mark.parametrize("size", [65_535, 65_536, 65_537, 3 * 2**20 + 5])
def test_values_of_any_size_are_read_whole(tmp_path: Path, size: int) -> None:
    value = bytes(i % 251 for i in range(size))  # around the one-read size, and past it
    put(tmp_path, "ns", KvEntry("big", value), KvEntry("small", b"x"))
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)
    assert [e.value for e in kv.get_many(["big", "small", "big"])] == [value, b"x", value]
    kv.close()


def test_get_many_reads_more_keys_than_one_query_holds(tmp_path: Path) -> None:
    keys = [f"key-{i}" for i in range(1203)]
    put(tmp_path, "ns", *(KvEntry(k, k.encode()) for k in keys))
    got = list(LocalKv(tmp_path, "ns", now_ms=NOW_MS).get_many(keys[::-1]))
    assert [(e.key, e.value) for e in got] == [(k, k.encode()) for k in keys[::-1]]


def test_expiration_milliseconds_become_seconds(tmp_path: Path) -> None:
    put(tmp_path, "ns", KvEntry("k", b"v"))
    with sqlite3.connect(kv_sqlite_path(tmp_path, "ns")) as conn:
        conn.execute("UPDATE _mf_entries SET expiration = ?", (NOW_MS + 1999,))
    assert next(LocalKv(tmp_path, "ns", now_ms=NOW_MS).iter_keys()).expiration == NOW_S + 1


def test_writes_still_in_the_wal_are_read(tmp_path: Path) -> None:
    put(tmp_path, "ns", KvEntry("old", b"1"))
    path = kv_sqlite_path(tmp_path, "ns")
    writer = sqlite3.connect(path)  # kept open, as workerd is killed: no checkpoint
    writer.execute("PRAGMA journal_mode=wal")
    blob = new_blob_id()
    (tmp_path / "kv" / "ns" / "blobs" / blob).write_bytes(b"2")
    writer.execute("INSERT INTO _mf_entries VALUES ('new', ?, NULL, NULL)", (blob,))
    writer.commit()
    try:
        assert Path(f"{path}-wal").stat().st_size > 0
        kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)
        assert [e.value for e in kv.get_many(["old", "new"])] == [b"1", b"2"]
    finally:
        writer.close()


def test_local_kv_is_a_kv_source(tmp_path: Path) -> None:
    put(tmp_path, "ns", KvEntry("k", b"v"))
    source: KvSource = LocalKv(tmp_path, "ns", now_ms=NOW_MS)
    assert [k.name for k in source.iter_keys()] == ["k"]


# --- KV: errors -------------------------------------------------------------------------------


def test_no_state_at_all_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(StateNotFoundError) as caught:
        LocalKv(tmp_path / "v3", "my-ns", now_ms=NOW_MS)
    assert str(caught.value) == (
        f"no local KV state for namespace my-ns under {tmp_path / 'v3'}; run `wrangler dev` or "
        "`wrangler kv key put --local …` first, or pass --persist-to"
    )


def test_state_without_this_namespace_names_the_expected_file(tmp_path: Path) -> None:
    put(tmp_path, "other", KvEntry("k", b"v"))
    with pytest.raises(StateNotFoundError) as caught:
        LocalKv(tmp_path, "my-ns", now_ms=NOW_MS)
    assert (
        f"no local KV state for namespace my-ns: {kv_sqlite_path(tmp_path, 'my-ns')} does not exist"
        in str(caught.value)
    )
    assert "try --preview" in str(caught.value)


def test_a_corrupt_key_table_is_a_corrupt_source(tmp_path: Path) -> None:
    path = kv_sqlite_path(tmp_path, "ns")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database, just text " * 200)
    with pytest.raises(CorruptSourceError, match=f"{path} is not a readable SQLite database"):
        LocalKv(tmp_path, "ns", now_ms=NOW_MS)


def test_a_sqlite_file_without_the_key_table_is_a_corrupt_source(tmp_path: Path) -> None:
    path = kv_sqlite_path(tmp_path, "ns")
    path.parent.mkdir(parents=True)
    sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.close()
    with pytest.raises(CorruptSourceError, match="has no _mf_entries table"):
        LocalKv(tmp_path, "ns", now_ms=NOW_MS)


def test_a_row_without_its_blob_names_the_key(tmp_path: Path) -> None:
    put(tmp_path, "ns", KvEntry("a", b"1"), KvEntry("broken key", b"2"))
    blob = next(row[1] for row in kv_rows(tmp_path, "ns") if row[0] == "broken key")
    (tmp_path / "kv" / "ns" / "blobs" / str(blob)).unlink()
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)

    with pytest.raises(
        SourceError, match=r"KV key 'broken key' points at value file .* which is missing"
    ):
        list(kv.get_many(["a", "broken key"]))


def test_values_are_read_ahead_yet_come_in_order_with_errors_at_their_turn(
    tmp_path: Path,
) -> None:
    keys = [f"k{i:03d}" for i in range(150)]  # more than one read-ahead window
    put(tmp_path, "ns", *(KvEntry(k, k.encode()) for k in keys))
    blob = next(row[1] for row in kv_rows(tmp_path, "ns") if row[0] == "k100")
    (tmp_path / "kv" / "ns" / "blobs" / str(blob)).unlink()
    fds = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    kv = LocalKv(tmp_path, "ns", now_ms=NOW_MS)

    got: list[str] = []
    with pytest.raises(SourceError, match="KV key 'k100' points at value file"):
        got.extend(e.key for e in kv.get_many(keys))
    assert got == keys[:100]  # every value before the broken one, in order
    first = next(iter(kv.get_many(keys[::-1])))  # a reader that stops at once
    assert (first.key, first.value) == ("k149", b"k149")
    del first
    kv.close()
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds  # no value file left open


def test_metadata_that_is_not_json_names_the_key(tmp_path: Path) -> None:
    put(tmp_path, "ns", KvEntry("k", b"v", metadata={"a": 1}))
    with sqlite3.connect(kv_sqlite_path(tmp_path, "ns")) as conn:
        conn.execute("UPDATE _mf_entries SET metadata = '{broken'")
    with pytest.raises(CorruptSourceError, match=r"KV key 'k' .* has metadata that is not JSON"):
        list(LocalKv(tmp_path, "ns", now_ms=NOW_MS).iter_keys())


# --- the writer -------------------------------------------------------------------------------


def test_the_writer_makes_wranglers_table_blob_ids_and_rows(tmp_path: Path) -> None:
    before = time.time_ns() // 1_000_000
    put(
        tmp_path, "ns", KvEntry("k", b"v", expiration=NOW_S, metadata={"é": [1]}), KvEntry("n", b"")
    )
    after = time.time_ns() // 1_000_000

    with sqlite3.connect(kv_sqlite_path(tmp_path, "ns")) as conn:
        schema = [row[0] for row in conn.execute("SELECT sql FROM sqlite_master ORDER BY name")]
    (k_row, n_row) = kv_rows(tmp_path, "ns")
    blob = str(k_row[1])

    assert schema == [
        KV_SCHEMA.split(";")[0].strip().replace(" IF NOT EXISTS", ""),
        "CREATE INDEX _mf_entries_expiration_idx ON _mf_entries(expiration)",
        None,  # the primary key's autoindex
    ]
    assert len(blob) == 80 and all(c in "0123456789abcdef" for c in blob)
    assert before <= struct.unpack(">q", bytes.fromhex(blob[64:]))[0] <= after
    assert k_row[2:] == (NOW_MS, '{"é":[1]}')
    assert n_row[2:] == (None, None)
    assert (tmp_path / "kv" / "ns" / "blobs" / blob).read_bytes() == b"v"


def test_overwriting_deletes_the_replaced_blob_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    blobs = tmp_path / "kv" / "ns" / "blobs"
    put(tmp_path, "ns", KvEntry("k", b"1"), KvEntry("other", b"x"))
    put(tmp_path, "ns", KvEntry("k", b"2"), KvEntry("k", b"3"))  # twice in one batch too

    assert len(list(blobs.iterdir())) == 2
    assert [e.value for e in LocalKv(tmp_path, "ns", now_ms=NOW_MS).get_many(["k", "other"])] == [b"3", b"x"]


def test_the_writer_batches_many_entries(tmp_path: Path) -> None:
    with LocalKvWriter(tmp_path, "ns", batch=100) as writer:
        count = writer.put_many(KvEntry(f"k{i}", b"v") for i in range(250))
    assert count == 250
    assert len(kv_rows(tmp_path, "ns")) == 250


def test_the_writer_refuses_an_empty_key_and_writes_nothing_of_its_batch(tmp_path: Path) -> None:
    with (
        LocalKvWriter(tmp_path, "ns") as writer,
        pytest.raises(ValueError, match="cannot be empty"),
    ):
        writer.put_many([KvEntry("fine", b"v"), KvEntry("", b"v")])
    assert kv_rows(tmp_path, "ns") == []
    assert list((tmp_path / "kv" / "ns" / "blobs").iterdir()) == []


def test_the_writer_uses_the_sanitised_blob_directory(tmp_path: Path) -> None:
    put(tmp_path, "a:b", KvEntry("k", b"v"))
    assert (tmp_path / "kv" / "a_b" / "blobs").is_dir()
    assert [e.value for e in LocalKv(tmp_path, "a:b", now_ms=NOW_MS).get_many(["k"])] == [b"v"]


# --- D1 ---------------------------------------------------------------------------------------


def plan_db(v3: Path, database_id: str = "db-1") -> Path:
    path = create_local_d1(v3, database_id)
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_SQL.read_text())
    return path


JOB = (
    "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
    "VALUES (?, ?, ?, 'success')"
)


def test_create_local_d1_is_where_for_database_looks(tmp_path: Path) -> None:
    path = plan_db(tmp_path)
    assert path == d1_sqlite_path(tmp_path, "db-1")
    assert LocalD1.for_database(tmp_path, "db-1").path == path


def test_query_streams_tuples_and_execute_batch_counts_rows(tmp_path: Path) -> None:
    d1 = LocalD1(plan_db(tmp_path), readonly=False)

    changes = d1.execute_batch([
        (JOB, ("analysis", "2026-11-16", "2026-11-16T12:30:00Z")),
        (JOB, ("weekly", "2026-11-16", "2026-11-16T21:00:00Z")),
        ("UPDATE job_executions SET duration_ms = 5", ()),
        ("INSERT INTO analysis_results (execution_id, symbol, confidence) VALUES (1, 'AAPL', 0.5)", ()),
    ])  # fmt: skip
    rows = d1.query(
        "SELECT job_type, duration_ms FROM job_executions WHERE id > ? ORDER BY id", [0]
    )

    assert changes == [1, 1, 2, 1]
    assert next(rows) == ("analysis", 5)
    assert list(rows) == [("weekly", 5)]


def test_a_failing_statement_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    d1 = LocalD1(plan_db(tmp_path), readonly=False)
    with pytest.raises(
        BackfillError, match=r"statement 2 of the batch failed .*FOREIGN KEY constraint failed"
    ):
        d1.execute_batch([
            (JOB, ("analysis", "2026-11-16", "t")),
            ("INSERT INTO analysis_results (execution_id, symbol) VALUES (99, 'X')", ()),
        ])  # fmt: skip
    assert list(d1.query("SELECT count(*) FROM job_executions")) == [(0,)]


def test_read_only_refuses_to_write(tmp_path: Path) -> None:
    d1 = LocalD1(plan_db(tmp_path))
    with pytest.raises(BackfillError, match="was opened read-only"):
        d1.execute_batch([(JOB, ("analysis", "2026-11-16", "t"))])
    with pytest.raises(SourceError, match="attempt to write a readonly database"):
        list(d1.query("INSERT INTO job_executions (job_type) VALUES ('x')"))


def test_a_read_only_database_file_is_a_backfill_error(tmp_path: Path) -> None:
    d1 = LocalD1(plan_db(tmp_path), readonly=False)
    # Stands in for a file without write permission (which root, running CI here, ignores).
    d1._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(BackfillError) as caught:
        d1.execute_batch([(JOB, ("analysis", "2026-11-16", "t"))])
    assert f"D1 database {d1.path} is read-only" in str(caught.value)
    assert "--sql-out" in str(caught.value)


def test_a_locked_database_names_wrangler_dev(tmp_path: Path) -> None:
    path = plan_db(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        d1 = LocalD1(path, readonly=False, busy_timeout_ms=50)
        with pytest.raises(TargetLockedError) as caught:
            d1.execute_batch([(JOB, ("analysis", "2026-11-16", "t"))])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(caught.value) == (
        f"D1 database {path} is locked by another process (is `wrangler dev` running?); "
        "stop it and retry"
    )


def test_the_plan_schema_check(tmp_path: Path) -> None:
    LocalD1(plan_db(tmp_path), name="cct-predict-jobs").check_plan_schema()

    empty = create_local_d1(tmp_path, "empty")
    with sqlite3.connect(empty) as conn:
        conn.execute("CREATE TABLE job_executions (id INTEGER PRIMARY KEY, job_type TEXT)")
    with pytest.raises(D1SchemaError) as caught:
        LocalD1(empty, name="cct-predict-jobs").check_plan_schema()
    message = str(caught.value)

    assert "lacks the plan's tables analysis_results, report_snapshots" in message
    assert "columns job_executions.execution_date" in message
    assert (
        "`wrangler d1 execute cct-predict-jobs --local --file schema/scheduled-jobs.sql`" in message
    )


def test_a_query_on_a_missing_table_is_a_schema_error(tmp_path: Path) -> None:
    path = create_local_d1(tmp_path, "db")
    sqlite3.connect(path).close()
    d1 = LocalD1(path, name="db")
    with pytest.raises(
        D1SchemaError, match="no such table: job_executions; apply the plan's schema"
    ):
        list(d1.query("SELECT * FROM job_executions"))


def test_a_missing_or_corrupt_d1_file(tmp_path: Path) -> None:
    with pytest.raises(StateNotFoundError) as missing:
        LocalD1.for_database(tmp_path, "db-9", name="cct-predict-jobs")
    path = create_local_d1(tmp_path, "db-9")
    path.write_bytes(b"garbage " * 1000)
    with pytest.raises(CorruptSourceError) as corrupt:
        LocalD1(path)

    assert (
        f"(expected {path}); create it with `wrangler d1 execute cct-predict-jobs --local"
        in str(missing.value)
    )
    assert str(corrupt.value).startswith(
        f"{path} is not a readable SQLite database (file is not a database)"
    )


def test_d1_writes_still_in_the_wal_are_read(tmp_path: Path) -> None:
    path = plan_db(tmp_path)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=wal")
    writer.execute(JOB, ("analysis", "2026-11-16", "t"))
    writer.commit()
    try:
        assert list(LocalD1(path).query("SELECT job_type FROM job_executions")) == [("analysis",)]
    finally:
        writer.close()


def test_local_d1_is_a_d1_source(tmp_path: Path) -> None:
    source: D1Source = LocalD1(plan_db(tmp_path), name="x")
    assert source.describe() == f"local D1 database x ({d1_sqlite_path(tmp_path, 'db-1')})"


# --- open_local_sources -----------------------------------------------------------------------


def config_at(directory: Path) -> WranglerConfig:
    return WranglerConfig(
        path=directory / "wrangler.toml",
        directory=directory,
        name="predict",
        account_id=None,
        env=None,
        kv_namespaces=(KvBinding("KV", "kv-id", "kv-preview"), KvBinding("CACHE", "c")),
        d1_databases=(D1Binding("DB", "cct-predict-jobs", "db-1", None),),
    )


def test_open_local_sources_follows_the_binding_and_describes_the_choice(tmp_path: Path) -> None:
    v3 = tmp_path / ".wrangler" / "state" / "v3"
    put(v3, "kv-preview", KvEntry("p", b"1"))
    plan_db(v3, "db-1")

    kv, d1, source = open_local_sources(
        config_at(tmp_path), kv_binding="KV", d1_binding=None, persist_to=None, preview=True,
        now_ms=NOW_MS,
    )

    assert [k.name for k in kv.iter_keys()] == ["p"]
    assert d1.readonly
    assert source == {
        "kind": "local",
        "config": str(tmp_path / "wrangler.toml"),
        "env": None,
        "kv_binding": "KV",
        "kv_namespace_id": "kv-preview",
        "kv_rule": "wrangler kv key --local",
        "preview": True,
        "d1_binding": "DB",
        "d1_database_id": "db-1",
        "d1_database_name": "cct-predict-jobs",
        "persist_to": None,
        "state_dir": str(v3),
        "kv_file": str(kv_sqlite_path(v3, "kv-preview")),
        "kv_blobs": str(v3 / "kv" / "kv-preview" / "blobs"),
        "d1_file": str(d1_sqlite_path(v3, "db-1")),
        "snapshot": None,
    }


def test_open_local_sources_with_persist_to_and_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    v3 = tmp_path / "state" / "v3"
    put(v3, "kv-id", KvEntry("i", b"1"))
    plan_db(v3, "db-1")

    kv, d1, source = open_local_sources(
        config_at(tmp_path / "elsewhere"), kv_binding="KV", d1_binding="DB",
        persist_to=Path("state"), preview=None, writable=True, now_ms=NOW_MS,
    )  # fmt: skip

    assert [k.name for k in kv.iter_keys()] == ["i"]
    assert d1.execute_batch([(JOB, ("analysis", "2026-11-16", "t"))]) == [1]
    assert (source["persist_to"], source["kv_namespace_id"]) == ("state", "kv-id")


def test_open_local_sources_reports_missing_state(tmp_path: Path) -> None:
    with pytest.raises(StateNotFoundError, match="no local KV state for namespace c under"):
        open_local_sources(config_at(tmp_path), kv_binding="CACHE", d1_binding=None,
                           persist_to=None, preview=None, now_ms=NOW_MS)  # fmt: skip
