"""Property and fuzz tests: records survive D1 rows, backfill keeps D1 complete, fuzz never crashes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import payload_examples as pe
from tests.conftest import ReliabilityCounts
from tests.kv2d1.test_cli_verify import D1_ID, KV_ID, make_worker
from tests.reliability.test_bad_inputs import run
from verifier.calendar import iso_utc
from verifier.canonical import canonical_json
from verifier.d1 import (
    JOB_TYPES,
    STATUSES,
    build_d1_job,
    job_row,
    row_problems,
    run_of,
    symbol_row,
)
from verifier.model import JobKey, JobRecord, KvEntry, SymbolResult
from verifier.normalise import InvalidPayload, normalise_entry
from verifier.profile import load_profile
from verifier.sources.local import d1_sqlite_path
from verifier.sources.localwriter import LocalKvWriter

FAST = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PROFILE = load_profile()
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
json_text = json_values.map(canonical_json)
small_text = st.none() | st.text(max_size=20)
counter = st.none() | st.integers(0, 10_000)
instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=dt.UTC)
)


@st.composite
def jobs(draw: st.DrawFn) -> JobRecord:
    """A JobRecord as D1 would hold it: an execution time, enums from the schema."""
    executed = iso_utc(draw(instants))
    date = draw(st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31))).isoformat()
    key = JobKey(date, draw(st.sampled_from(sorted(JOB_TYPES))), str(run_of(executed)))
    return JobRecord(
        key=key, execution_time=executed, status=draw(st.sampled_from(sorted(STATUSES))),
        duration_ms=draw(counter), symbols_processed=draw(counter), symbols_successful=draw(counter),
        symbols_failed=draw(counter), error_message=draw(small_text), metadata=draw(st.none() | json_text),
    )  # fmt: skip


symbols = st.builds(
    SymbolResult,
    symbol=st.text(min_size=1, max_size=6),
    sentiment=small_text,
    confidence=st.none() | st.floats(0.0, 1.0),
    direction=small_text,
    reasoning=small_text,
    signals=st.none() | json_text,
    technical_data=st.none() | json_text,
    news_count=counter,
)


def through_sqlite(values: list[Any]) -> tuple[Any, ...]:
    """The values as SQLite stores and returns them (its type affinities left aside)."""
    with sqlite3.connect(":memory:") as conn:
        row: tuple[Any, ...] = conn.execute(
            "SELECT " + ", ".join("?" * len(values)), values
        ).fetchone()
    return row


@pytest.mark.reliability(
    kind="bad_input",
    case="random JobRecord/SymbolResult → D1 rows → model",
    expected="the same records, no problem",
)
@FAST
@given(job=jobs(), results=st.lists(symbols, max_size=3))
def test_records_survive_a_round_trip_through_d1_rows(
    job: JobRecord, results: list[SymbolResult]
) -> None:
    row = through_sqlite([1, *job_row(job, metadata=job.metadata).values()])
    symbol_rows = [through_sqlite([1, i, *symbol_row(r).values()]) for i, r in enumerate(results)]
    back = build_d1_job(row, symbol_rows, [])
    assert row_problems(back, ()) == ()  # every JSON text parsed too
    assert back.job == job
    assert [s.result for s in back.symbols] == results


KEYS = ["analysis_2026-11-16", "analysis_2026-11-16_093000", "status:analysis:2026-11-16",
        "end_of_day_summary_2026-11-16", "weekly_2026-11-16"]  # fmt: skip


@pytest.mark.reliability(
    kind="bad_input",
    case="fuzzed KV payloads (random JSON, random bytes)",
    expected="a record or invalid_kv_payload; never an exception",
)
@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(KEYS),
    value=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_fuzzed_payloads_never_crash_the_normaliser(key: str, value: bytes) -> None:
    match = PROFILE.match(key)
    assert match is not None
    outcome = normalise_entry(KvEntry(key, value), match, PROFILE)
    assert isinstance(outcome, InvalidPayload) or outcome.job is not None or outcome.status_only


DATES = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
EVERY_ROW = "SELECT * FROM job_executions ORDER BY id"
NATURAL = "SELECT job_type, execution_date, execution_time FROM job_executions"


def d1_rows(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(d1_sqlite_path(root / ".wrangler" / "state" / "v3", D1_ID)) as conn:
        return list(conn.execute(sql))


@pytest.mark.reliability(
    kind="fault",
    case="random KV/D1 side pairs: backfill (twice) then verify",
    expected="no missing_in_d1; existing rows unchanged; no duplicates",
)
@FAST
@given(kv_dates=st.sets(st.sampled_from(DATES), min_size=1), data=st.data())
def test_backfill_completes_d1_and_never_changes_an_existing_row(
    kv_dates: set[str], data: st.DataObject, reliability_counts: ReliabilityCounts
) -> None:
    in_d1 = data.draw(st.sets(st.sampled_from(sorted(kv_dates))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_worker(
            root, [KvEntry(f"analysis_{d}", pe.kv_value(pe.shape_b(d))) for d in sorted(in_d1)]
        )
        assert run(root, "backfill").exit_code == 0
        with sqlite3.connect(d1_sqlite_path(root / ".wrangler" / "state" / "v3", D1_ID)) as conn:
            conn.execute("UPDATE job_executions SET duration_ms = 4242")  # D1 now disagrees with KV
        before = d1_rows(root, EVERY_ROW)
        with LocalKvWriter(root / ".wrangler" / "state" / "v3", KV_ID) as writer:
            writer.put_many(
                [
                    KvEntry(f"analysis_{d}", pe.kv_value(pe.shape_b(d)))
                    for d in sorted(kv_dates - in_d1)
                ]
            )
        for _ in range(2):
            assert run(root, "backfill").exit_code == 0
        after = d1_rows(root, EVERY_ROW)
        assert after[: len(before)] == before  # never changed, never deleted
        reliability_counts.record(expected=[r[1:4] for r in before], actual=d1_rows(root, NATURAL))
        verified = run(
            root, "verify", "--format", "json", "--since", DATES[0], "--until", DATES[-1]
        )
        missing = [
            f for f in json.loads(verified.stdout)["findings"] if f["category"] == "missing_in_d1"
        ]
        assert missing == []
        assert len(after) == len(kv_dates) and reliability_counts.duplicated == 0
