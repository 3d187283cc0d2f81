"""The probe: the plan's queries, nearest-rank percentiles, local and remote timing."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports.probe import (
    LocalTimer,
    ProbeQuery,
    QueryKind,
    RemoteTimer,
    Sample,
    discover_queries,
    percentile,
    plan_queries,
    probe,
    run_probe,
)
from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub
from tests.reports.datasets import World
from verifier.profile import schema_dir
from verifier.sources.remote import CloudflareClient, RemoteCredentials, RemoteD1, RetryPolicy

pytest_plugins = ("tests.remote_fixtures",)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]  # 1 … 20
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile(values, 100) == 20.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 95)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_percentiles_are_samples_and_ordered(values: list[float]) -> None:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    assert p50 in values and p95 in values
    assert min(values) <= p50 <= p95 <= max(values)


def test_plan_queries_are_the_plans_sql() -> None:
    queries = {q.name: q for q in plan_queries(last_date="2026-11-23", recent_ids=[42, 41])}
    assert queries["history"].statements == (
        ("SELECT * FROM job_executions WHERE 1=1 ORDER BY execution_time DESC LIMIT 50", ()),
    )
    assert queries["history?dates=last 7 days"].statements == (
        (
            "SELECT * FROM job_executions WHERE 1=1 AND execution_date >= ? AND execution_date <= ? "
            "ORDER BY execution_time DESC LIMIT 50",
            ("2026-11-17", "2026-11-23"),
        ),
    )
    assert queries["history?status=success"].statements[0][1] == ("success",)
    assert queries["history?limit=20"].statements[0][0].endswith("LIMIT 20")
    latest = [q for q in queries.values() if q.kind is QueryKind.LATEST]
    assert {q.statements[0][1] for q in latest} == {
        ("analysis",),
        ("pre-market",),
        ("intraday",),
        ("end-of-day",),
        ("weekly",),
    }
    detail = queries["detail/42"].statements
    assert [sql for sql, _ in detail] == [
        "SELECT * FROM job_executions WHERE id = 42",
        "SELECT * FROM analysis_results WHERE execution_id = 42 ORDER BY symbol",
        "SELECT * FROM report_snapshots WHERE execution_id = 42",
    ]


class ScriptedTimer:
    """Returns the given round trips in turn, one per statement."""

    def __init__(self, values: Iterator[float], d1: float | None = None) -> None:
        self.values, self.d1, self.calls = values, d1, 0

    def run(self, sql: str, params: tuple[str, ...]) -> Sample:
        self.calls += 1
        return Sample(next(self.values), self.d1)


def test_run_probe_warms_up_then_times_every_query_each_round() -> None:
    queries = [
        ProbeQuery("a", QueryKind.HISTORY, (("SELECT 1", ()),)),
        ProbeQuery("b", QueryKind.DETAIL, (("SELECT 1", ()), ("SELECT 2", ()))),
    ]
    timer = ScriptedTimer(itertools.chain([1000.0] * 3, itertools.cycle([1.0, 2.0, 3.0])))
    result = run_probe(timer, queries, repeat=4)
    assert timer.calls == 3 + 4 * 3  # warm-up round, then 4 rounds of 3 statements
    by_name = {q.query.name: q for q in result.queries}
    assert by_name["a"].round_trip.n == 4 and by_name["a"].round_trip.max == 1.0
    assert by_name["b"].round_trip.p95 == 5.0  # detail = the sum of its statements
    assert result.round_trip.n == 8 and result.d1 is None
    assert result.basis == "round_trip" and result.p95_ms == 5.0


def test_local_probe_on_a_d1_file(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    newest = [
        r[0]
        for r in world.d1.conn.execute(
            "SELECT id FROM job_executions ORDER BY execution_time DESC LIMIT 3"
        )
    ]
    details = [q.name for q in discover_queries(world.d1) if q.kind is QueryKind.DETAIL]
    assert details == [f"detail/{i}" for i in newest]
    result = probe(world.d1, repeat=3, timer=LocalTimer(world.d1))
    assert len(result.queries) == 5 + 5 + 3
    assert all(q.round_trip.n == 3 and q.round_trip.p95 >= 0 for q in result.queries)
    doc = result.to_json()
    assert doc["basis"] == "round_trip" and doc["overall"]["d1"] is None


def test_remote_probe_reports_d1_duration_and_round_trip(cf_server: CloudflareStub) -> None:
    ddl = (schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8")
    database = cf_server.add_database("prod", schema_sql=ddl)
    conn: sqlite3.Connection = cf_server.d1(database)
    conn.execute(
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status) "
        "VALUES ('analysis', '2026-11-23', '2026-11-23T13:30:00.000Z', 'success')"
    )
    client = CloudflareClient(
        RemoteCredentials(TOKEN, ACCOUNT, cf_server.base_url), retry=RetryPolicy(timeout_s=5.0)
    )
    d1 = RemoteD1(client, database, name="prod")
    result = probe(d1, repeat=2, timer=RemoteTimer(d1))
    assert result.basis == "d1_duration" and result.d1 is not None
    assert all(q.d1 is not None and q.d1.n == 2 for q in result.queries)
    assert result.round_trip.p95 >= result.d1.p95  # the round trip includes D1's own time
    raw = [r for r in cf_server.log if r.kind == "d1_raw"]
    # discovery (2) + warm-up and 2 rounds of 5 history + 5 latest + 1 detail × 3 statements
    assert len(raw) == 2 + 3 * (5 + 5 + 3)
    assert TOKEN not in repr(result.to_json())


def test_probe_reads_wranglers_local_d1_file(tmp_path: Path) -> None:
    from verifier.sources.local import LocalD1, d1_sqlite_path

    world = World.create(tmp_path)
    path = d1_sqlite_path(tmp_path / "v3", "a3f9c1d2-0000-4000-8000-000000000001")
    path.parent.mkdir(parents=True)
    world.d1.conn.execute("VACUUM INTO ?", (str(path),))
    d1 = LocalD1(path, name="predict-jobs")
    result = probe(d1, repeat=2)  # the timer that fits a local file
    assert result.basis == "round_trip" and len(result.queries) == 13
    assert {q.query.name for q in result.queries} >= {"history", "latest?type=weekly"}
