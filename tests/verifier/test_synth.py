"""The synthetic worker: payloads of every shape, the calendar, determinism, laziness, the files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import sqlite3
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Wrangler
from verifier import synth
from verifier.calendar import is_trading_day
from verifier.d1 import run_of
from verifier.model import Category, KvEntry, KvRecord
from verifier.normalise import InvalidPayload, normalise_entry
from verifier.profile import load_profile
from verifier.shapes import detect_shape

UNTIL = dt.date(2026, 11, 27)  # Friday after Thanksgiving (2026-11-26, no jobs)
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
PROFILE = load_profile()
ANALYSIS_SHAPES = ("B", "A", "E", "D", "C")


@pytest.fixture(scope="module")
def worker() -> synth.SyntheticWorker:
    return synth.generate(until=UNTIL, business_days=20, seed=7, unrelated_per_job=2, now=NOW)


@pytest.fixture(scope="module")
def entries(worker: synth.SyntheticWorker) -> list[KvEntry]:
    return list(worker.iter_kv_entries())


def normalised(entry: KvEntry) -> KvRecord | InvalidPayload | None:
    match = PROFILE.match(entry.key)
    return None if match is None else normalise_entry(entry, match, PROFILE)


def digest(items: Iterator[object]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(repr(item).encode())
    return h.hexdigest()


# --- payload builders ----------------------------------------------------------------------

_VIEWS = synth.draw_views(random.Random(1), synth.DEFAULT_SYMBOLS, failures=2)
_AT = dt.datetime(2026, 11, 16, 13, 30, 4, tzinfo=dt.UTC)
BUILT = {
    "A": synth.payload_a(_VIEWS, instant=_AT, duration_ms=51234),
    "B": synth.payload_b(_VIEWS, instant=_AT, duration_ms=48211, era="head"),
    "B-kv": synth.payload_b(_VIEWS, instant=_AT, duration_ms=48211, era="kv", stamp="last_updated"),
    "C": synth.payload_c(_VIEWS, date="2026-11-16", instant=_AT),
    "D": synth.payload_d(_VIEWS, instant=_AT),
    "E": synth.payload_e(_VIEWS, instant=_AT),
    "G": synth.payload_g(_VIEWS, date="2026-11-16", instant=_AT),
    "I": synth.payload_i(_VIEWS, date="2026-11-16", instant=_AT),
    "EOD": synth.payload_eod(_VIEWS, date="2026-11-16", instant=_AT),
    "W": synth.payload_w("2026-11-22", instant=_AT, daily_accuracy=[60, 80], symbols=("AAPL",)),
    "W-default": synth.payload_w("2026-11-22", instant=_AT, daily_accuracy=[], symbols=("AAPL",)),
    "STATUS": synth.payload_status("analysis", instant=_AT, views=_VIEWS, duration_ms=1),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_each_builder_matches_exactly_its_shape(name: str) -> None:
    shape = name.split("-")[0]
    every = ("A", "B", "C", "D", "E", "G", "I", "EOD", "W", "STATUS", "F", "C_PRIME")
    assert [s for s in every if detect_shape(BUILT[name], (s,))] == [shape]


def test_failed_symbols_are_marked_the_way_each_shape_marks_them() -> None:
    failed = [v.symbol for v in _VIEWS if v.failed]
    assert len(failed) == 2
    a, b, b_kv, d = BUILT["A"], BUILT["B"], BUILT["B-kv"], BUILT["D"]
    assert set(a["symbols_analyzed"]) - set(a["sentiment_signals"]) == set(failed)  # A: omitted
    for s in failed:
        assert b["trading_signals"][s]["analysis_type"] == "failed"  # B at HEAD
        assert b["trading_signals"][s]["confidence"] is None
        assert b_kv["trading_signals"][s]["confidence"] == 0.5  # B in the KV era: a fake 0.5
        assert b_kv["trading_signals"][s]["trading_signals"]["signal_type"] == "ERROR"
        assert d["trading_signals"][s]["status"] == "skipped"  # D: kept, skipped, null
        assert d["trading_signals"][s]["signal"]["confidence"] is None


@pytest.mark.parametrize("shape", ["A", "B", "B-kv", "D", "E"])
def test_the_normaliser_counts_two_failures_in_every_analysis_shape(shape: str) -> None:
    entry = KvEntry("analysis_2026-11-16", synth.kv_bytes(BUILT[shape]))
    record = normalised(entry)
    assert isinstance(record, KvRecord)
    assert (record.job.symbols_processed, record.job.symbols_failed) == (5, 2)


def test_analysis_payloads_are_a_few_kilobytes() -> None:
    sizes = {name: len(synth.kv_bytes(BUILT[name])) for name in ("A", "B", "C", "D", "E")}
    assert 1500 <= sizes["A"] <= 3000
    assert all(500 <= size <= 8000 for size in sizes.values()), sizes


def test_kv_era_stamps_are_new_york_wall_clock_labelled_z() -> None:
    # 13:30:04 UTC on 2026-11-16 is 08:30:04 EST (reference §7.1); the cron id is the true instant.
    assert BUILT["B-kv"]["last_updated"] == "2026-11-16T08:30:04.000Z"
    assert BUILT["B-kv"]["cron_execution_id"] == f"cron_{int(_AT.timestamp() * 1000)}"


def test_symbols_can_be_counted() -> None:
    assert synth.resolve_symbols(3) == ("AAPL", "MSFT", "GOOGL")
    many = synth.resolve_symbols(60)
    assert len(set(many)) == 60 and many[:5] == synth.DEFAULT_SYMBOLS
    assert all(re.fullmatch(r"[A-Z.]{1,6}", s) for s in many)  # never mistaken for a run time


# --- the worker's calendar and keys ----------------------------------------------------------


def test_window_holds_the_last_business_days_and_their_sundays(
    worker: synth.SyntheticWorker,
) -> None:
    trading = [d for d in worker.dates if dt.date.fromisoformat(d).weekday() != 6]
    assert len(trading) == 20 and trading[-1] == UNTIL.isoformat()
    assert all(is_trading_day(dt.date.fromisoformat(d)) for d in trading)
    assert "2026-11-26" not in worker.dates  # Thanksgiving
    sundays = [d for d in worker.dates if dt.date.fromisoformat(d).weekday() == 6]
    assert sundays == ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]
    assert (worker.window.since, worker.window.until) == (trading[0], UNTIL.isoformat())


def test_keys_follow_the_profile_and_the_calendar(
    worker: synth.SyntheticWorker, entries: list[KvEntry]
) -> None:
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    assert not any("2026-11-26" in k for k in keys)
    weekly = sorted(k for k in keys if PROFILE.match(k) and k.startswith("weekly_"))
    assert weekly == [
        f"weekly_{d}" for d in ("2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22")
    ]
    runs = [k for k in keys if re.fullmatch(r"analysis_\d{4}-\d\d-\d\d_\d{6}", k)]
    assert runs and all(f"analysis_{k[9:19]}" in keys for k in runs)  # daily key alongside
    # Cron runs at 12:30 / 16:00 / 20:05 UTC: 08:30 / 12:00 / 16:05 EDT, 07:30 / 11:00 / 15:05 EST.
    clocks = {k[20:24] for k in runs}
    assert clocks <= {"0830", "1200", "1605", "0730", "1100", "1505"}
    assert {k[20:24] for k in runs if k[9:19] >= "2026-11-02"} <= {"0730", "1100", "1505"}


def test_every_shape_appears_and_every_job_key_normalises(entries: list[KvEntry]) -> None:
    shapes: Counter[str] = Counter()
    invalid = []
    for entry in entries:
        record = normalised(entry)
        if isinstance(record, InvalidPayload):
            invalid.append(entry.key)
        elif record is not None:
            shapes[record.shape] += 1
    assert set(shapes) == {*ANALYSIS_SHAPES, "G", "I", "EOD", "W", "STATUS"}
    assert len(invalid) == 2  # the seeded invalid_kv_payload ones


def test_status_values_are_sometimes_double_encoded(entries: list[KvEntry]) -> None:
    statuses = [
        json.loads(e.value)
        for e in entries
        if e.key.startswith(("status:analysis:", "status:morning"))
    ]
    assert {type(s) for s in statuses} == {dict, str}
    assert all((json.loads(s) if isinstance(s, str) else s)["status"] == "done" for s in statuses)


def test_unrelated_keys_are_skipped_by_pattern(
    worker: synth.SyntheticWorker, entries: list[KvEntry]
) -> None:
    mapped = [e for e in entries if PROFILE.match(e.key)]
    skipped = [e for e in entries if not PROFILE.match(e.key)]
    assert len(skipped) == 2 * len(mapped)  # unrelated_per_job=2
    assert any(e.key.startswith("analysis_2026-11-16_AAPL") for e in skipped)  # granular C′
    assert any(e.key.startswith("status:kv_test:") for e in skipped)


def test_keys_stay_live_except_the_expiring_one(entries: list[KvEntry]) -> None:
    horizon = (NOW + dt.timedelta(hours=48)).timestamp()
    soon = [e.key for e in entries if e.expiration is not None and e.expiration < horizon]
    assert soon == ["weekly_2026-11-22"]
    assert all(e.expiration is not None and e.expiration > NOW.timestamp() for e in entries)


def test_d1_is_written_once_per_job(worker: synth.SyntheticWorker) -> None:
    jobs = list(worker.iter_d1_jobs())
    ids = [j.execution.row_id for j in jobs]
    assert ids == list(range(1, len(jobs) + 1))
    runs = Counter(
        f"{j.execution.values['job_type']}/{j.execution.values['execution_date']}/"
        f"{run_of(j.execution.values['execution_time'])}"
        for j in jobs
    )
    duplicates = [d.natural_key for d in worker.seeded if d.category is Category.DUPLICATE_IN_D1]
    assert [k for k, n in runs.items() if n > 1] == duplicates
    symbol_ids = [s.row_id for j in jobs for s in j.symbols]
    assert symbol_ids == list(range(1, len(symbol_ids) + 1))
    assert all(s.values["execution_id"] == j.execution.row_id for j in jobs for s in j.symbols)


# --- seeded defects, determinism, laziness ---------------------------------------------------


def test_seeded_defects_cover_every_category_inside_the_window(
    worker: synth.SyntheticWorker,
) -> None:
    assert {d.category for d in worker.seeded} == set(Category)
    dates = {re.search(r"\d{4}-\d\d-\d\d", d.natural_key) for d in worker.seeded}
    inside = {m.group() for m in dates if m}
    assert inside and all(worker.window.contains(d) for d in inside)
    invalid_rows = [d.natural_key for d in worker.seeded if d.category is Category.INVALID_D1_ROW]
    assert (
        all(re.fullmatch(r"analysis_results#\d+", k) for k in invalid_rows)
        and len(invalid_rows) == 2
    )


def test_seeded_row_ids_point_at_the_broken_rows(worker: synth.SyntheticWorker) -> None:
    wanted = {
        int(d.natural_key.split("#")[1])
        for d in worker.seeded
        if d.category is Category.INVALID_D1_ROW
    }
    rows = {
        s.row_id: s.values for j in worker.iter_d1_jobs() for s in j.symbols if s.row_id in wanted
    }
    broken = sorted(
        (v["confidence"] == 1.7, v["signals"] is not None and v["signals"].startswith("[{'"))
        for v in rows.values()
    )
    assert broken == [(False, True), (True, False)]


def test_the_same_seed_gives_the_same_worker() -> None:
    def build(seed: int) -> tuple[str, str, list[synth.SeededDefect]]:
        w = synth.generate(until=UNTIL, business_days=12, seed=seed, now=NOW)
        return digest(iter(w.iter_kv_entries())), digest(iter(w.iter_d1_jobs())), w.seeded

    assert build(3) == build(3)
    assert build(3)[0] != build(4)[0]


def test_a_clean_worker_seeds_nothing() -> None:
    worker = synth.generate(until=UNTIL, business_days=5, defects=False, now=NOW)
    assert worker.seeded == []
    jobs = list(worker.iter_d1_jobs())
    assert len(jobs) == 5 * 4 + 1  # four jobs a trading day, one weekly


def test_bulk_is_streamed_lazily() -> None:
    started = time.perf_counter()
    worker = synth.generate(until=UNTIL, business_days=20_000, unrelated_per_job=50, now=NOW)
    kv, d1 = worker.iter_kv_entries(), worker.iter_d1_jobs()
    assert isinstance(kv, Iterator) and isinstance(d1, Iterator)
    assert next(kv).key.startswith("analysis_") and next(d1).execution.row_id == 1
    assert time.perf_counter() - started < 10  # no eager pass over 80 years of keys


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 8 trading days"):
        synth.generate(until=UNTIL, business_days=5, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        synth.generate(until=UNTIL, business_days=10, now=dt.datetime(2026, 11, 28))
    with pytest.raises(ValueError, match="business_days"):
        synth.generate(until=UNTIL, business_days=0, now=NOW)


# --- the files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, worker: synth.SyntheticWorker
) -> synth.WorkerFiles:
    return synth.write_worker(tmp_path_factory.mktemp("worker"), worker)


def test_wrangler_toml_declares_both_bindings(files: synth.WorkerFiles) -> None:
    config = tomllib.loads(files.config.read_text())
    assert config["name"] == "tft-trading-system" and config["compatibility_date"]
    [kv] = config["kv_namespaces"]
    [d1] = config["d1_databases"]
    assert kv["binding"] == "MARKET_ANALYSIS_CACHE" and re.fullmatch(r"[0-9a-f]{32}", kv["id"])
    assert d1["binding"] == "PREDICT_JOBS_DB" and d1["database_name"] == "predict-jobs"
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", d1["database_id"])
    assert (kv["id"], d1["database_id"]) == (files.kv_namespace_id, files.d1_database_id)


def test_d1_file_holds_the_rows_with_intact_foreign_keys(
    files: synth.WorkerFiles, worker: synth.SyntheticWorker
) -> None:
    assert files.d1_path.parent.name == "miniflare-D1DatabaseObject"
    with sqlite3.connect(files.d1_path) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in files.d1_rows}
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        first = conn.execute(
            "SELECT created_at, metadata FROM job_executions WHERE id = 1"
        ).fetchone()
    assert counts == files.d1_rows
    assert counts["job_executions"] == sum(1 for _ in worker.iter_d1_jobs())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first[0]) and '"kv2d1"' not in first[1]


def test_seeded_defects_file_lists_them(
    files: synth.WorkerFiles, worker: synth.SyntheticWorker
) -> None:
    document = json.loads((files.directory / "SEEDED_DEFECTS.json").read_text())
    assert document["window"] == worker.window.to_json()
    assert document["defects"] == [d.to_json() for d in worker.seeded]
    assert files.kv_keys == sum(1 for _ in worker.iter_kv_entries())


def test_write_worker_refuses_existing_state(
    files: synth.WorkerFiles, worker: synth.SyntheticWorker
) -> None:
    with pytest.raises(FileExistsError, match="empty directory"):
        synth.write_worker(files.directory, worker)


@pytest.mark.wrangler
@pytest.mark.slow
def test_wrangler_reads_the_written_state(wrangler: Wrangler, tmp_path: Path) -> None:
    worker = synth.generate(until=UNTIL, business_days=3, defects=False, now=NOW)
    files = synth.write_worker(tmp_path, worker)
    got = wrangler.binary(tmp_path, "kv", "key", "get", "--binding", "MARKET_ANALYSIS_CACHE", "--local",
                          f"end_of_day_summary_{UNTIL}")  # fmt: skip
    expected = next(
        e.value for e in worker.iter_kv_entries() if e.key == f"end_of_day_summary_{UNTIL}"
    )
    assert got.stdout == expected
    done = wrangler(tmp_path, "d1", "execute", "predict-jobs", "--local", "--json",
                    "--command", "SELECT count(*) AS n FROM job_executions")  # fmt: skip
    assert json.loads(done.stdout)[0]["results"] == [{"n": files.d1_rows["job_executions"]}]
