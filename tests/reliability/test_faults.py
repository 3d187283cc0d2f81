"""Fault matrix rows not covered elsewhere: the loopback API misbehaving, D1 batches failing.

Every test checks that nothing was lost or duplicated and records the figures in
`reliability_counts`; tests/reliability/matrix.py points at the rows older tests already cover.
"""

from __future__ import annotations

import errno
import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill import sqlfile
from backfill.sqlfile import write_job
from tests.cfserver import FaultPlan
from tests.conftest import ReliabilityCounts
from tests.reliability.conftest import NOW, RemoteWorld, findings_of, kv2d1, small_worker
from verifier.sources import remote
from verifier.sources.remote import RetryPolicy
from verifier.sources.snapshot import open_snapshot_sources

pytest_plugins = ("tests.remote_fixtures",)

EXECUTION_KEY = "SELECT job_type, execution_date, execution_time FROM job_executions"
SYMBOL_KEY = (
    "SELECT e.job_type, e.execution_date, e.execution_time, r.symbol FROM analysis_results r "
    "JOIN job_executions e ON e.id = r.execution_id"
)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Every row `sql` selects from the SQLite file at `path`."""
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql))


def check_snapshot(world: RemoteWorld, snapshot: Path, counts: ReliabilityCounts) -> None:
    """The snapshot holds every KV key and D1 row of the worker, each exactly once."""
    kv, d1, _ = open_snapshot_sources(snapshot)
    local_kv = [
        r[0] for r in rows(world.files.v3_dir / _kv_file(world), "SELECT key FROM _mf_entries")
    ]
    counts.record(expected=local_kv, actual=[k.name for k in kv.iter_keys()])
    counts.record(
        expected=rows(world.files.d1_path, EXECUTION_KEY), actual=list(d1.query(EXECUTION_KEY))
    )
    assert (counts.lost, counts.duplicated) == (0, 0)


def _kv_file(world: RemoteWorld) -> Path:
    [path] = (world.files.v3_dir / "kv").glob("miniflare-KVNamespaceObject/*.sqlite")
    return path.relative_to(world.files.v3_dir)


FAULTS = {
    "429 with Retry-After seconds": FaultPlan(
        seed=1, rate_limited=0.3, retry_after="seconds", retry_after_s=0
    ),
    "429 with Retry-After as an HTTP date": FaultPlan(
        seed=2, rate_limited=0.3, retry_after="date", retry_after_s=0
    ),
    "429 without Retry-After": FaultPlan(seed=3, rate_limited=0.3, retry_after="none"),
    "HTTP 500/502/503": FaultPlan(seed=4, server_error=0.35),
    "connection dropped mid-body (truncated answer)": FaultPlan(seed=5, dropped=0.3),
    "non-JSON body on a 502": FaultPlan(seed=6, non_json=0.3, non_json_status=502),
}


@pytest.mark.reliability(
    kind="fault", case="remote API faults during a snapshot", expected="retry; same keys and rows"
)
@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_a_remote_snapshot_under_api_faults_keeps_every_key_and_row_once(
    remote_world: RemoteWorld, reliability_counts: ReliabilityCounts, fault: str
) -> None:
    remote_world.stub.set_faults(FAULTS[fault])
    out = remote_world.tmp / "faulty.sqlite"
    result = kv2d1(
        "snapshot", "--remote", "--config", str(remote_world.remote_config), "-q", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    assert any(entry.fault for entry in remote_world.stub.log)  # the faults really happened
    check_snapshot(remote_world, out, reliability_counts)


@pytest.mark.reliability(
    kind="fault",
    case="cursor pages short, empty and capped during a snapshot",
    expected="every key read once",
)
def test_short_and_empty_cursor_pages_lose_no_key(
    remote_world: RemoteWorld, reliability_counts: ReliabilityCounts
) -> None:
    remote_world.stub.list_page_caps = (3, 0, 1, 0, 2)
    out = remote_world.tmp / "paged.sqlite"
    result = kv2d1(
        "snapshot", "--remote", "--config", str(remote_world.remote_config), "-q", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    check_snapshot(remote_world, out, reliability_counts)


def backfill_remote(world: RemoteWorld) -> Any:
    """`kv2d1 backfill --remote` over the world's whole window."""
    return kv2d1(
        "backfill", "--remote", "--config", str(world.remote_config), "-q", "--as-of", NOW.isoformat(),
        "--ledger-dir", str(world.tmp / "runs"),
    )  # fmt: skip


def check_d1_complete(world: RemoteWorld, counts: ReliabilityCounts, expected: list[Any]) -> None:
    """The remote D1 holds every expected execution once, and verify finds nothing missing."""
    conn = world.stub.d1(world.copy.database_id)
    counts.record(expected=expected, actual=list(conn.execute(EXECUTION_KEY)))
    verified = kv2d1("verify", "--remote", "--config", str(world.remote_config), "-q", "--format", "json",
                     "--as-of", NOW.isoformat())  # fmt: skip
    assert [f for f in findings_of(verified) if f["category"] == "missing_in_d1"] == []
    assert (counts.lost, counts.duplicated) == (0, 0)


@pytest.mark.reliability(
    kind="fault",
    case="D1 answers lost after the batch committed (dropped, 5xx)",
    expected="retry; guarded inserts add no duplicate",
)
def test_a_remote_backfill_whose_answers_are_dropped_duplicates_nothing(
    remote_world: RemoteWorld, reliability_counts: ReliabilityCounts
) -> None:
    before = list(remote_world.stub.d1(remote_world.copy.database_id).execute(EXECUTION_KEY))
    remote_world.stub.set_faults(
        FaultPlan(seed=9, dropped=0.3, server_error=0.1, kinds=frozenset({"d1_query", "d1_raw"}))
    )
    result = backfill_remote(remote_world)
    assert result.exit_code == 0, result.output
    assert any(e.fault == "drop" for e in remote_world.stub.log)
    remote_world.stub.set_faults(FaultPlan())
    check_d1_complete(remote_world, reliability_counts, before)


@pytest.mark.reliability(
    kind="fault",
    case="a D1 batch that times out (committed server-side)",
    expected="one Error line; rerun completes without duplicates",
)
def test_a_d1_batch_that_times_out_fails_clearly_and_a_rerun_duplicates_nothing(
    remote_world: RemoteWorld,
    reliability_counts: ReliabilityCounts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = list(remote_world.stub.d1(remote_world.copy.database_id).execute(EXECUTION_KEY))
    stub = remote_world.stub
    original = stub.d1_query

    def slow_writes(request: Any) -> Any:
        answer = original(request)  # committed, then the answer is late
        if b"INSERT" in request.body:
            stub._stopping.wait(0.4)
        return answer

    monkeypatch.setattr(stub, "d1_query", slow_writes)
    monkeypatch.setattr(
        remote,
        "RetryPolicy",
        functools.partial(RetryPolicy, max_attempts=2, timeout_s=0.2, backoff_s=0.001),
    )
    result = backfill_remote(remote_world)
    assert (result.exit_code == 1 and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setattr(stub, "d1_query", original)
    rerun = backfill_remote(remote_world)
    assert rerun.exit_code == 0, rerun.output
    check_d1_complete(remote_world, reliability_counts, before)


@pytest.fixture
def local_worker(tmp_path: Path) -> Iterator[Any]:
    """A small local worker with gaps for backfill to fill."""
    yield small_worker(tmp_path / "w")


def backfill_local(files: Any, *args: str) -> Any:
    return kv2d1("backfill", "--config", str(files.config), "-q", "--as-of", NOW.isoformat(), *args)


@pytest.mark.reliability(
    kind="fault",
    case="D1 error 7500 on one statement of a batch",
    expected="one Error line; batch rolled back; rerun completes",
)
def test_one_failing_statement_rolls_its_batch_back_and_a_rerun_completes(
    local_worker: Any, reliability_counts: ReliabilityCounts
) -> None:
    d1 = local_worker.d1_path
    before = rows(d1, EXECUTION_KEY)
    with sqlite3.connect(d1) as conn:
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON analysis_results "
                     "BEGIN SELECT RAISE(ABORT, 'SQLITE_CONSTRAINT: injected [code: 7500]'); END")  # fmt: skip
    failed = backfill_local(local_worker)
    assert failed.exit_code == 1 and failed.stderr.startswith("Error: "), failed.output
    assert "Traceback" not in failed.output
    partial = rows(d1, "SELECT e.id FROM job_executions e WHERE NOT EXISTS (SELECT 1 FROM analysis_results r "
                       "WHERE r.execution_id = e.id) AND e.job_type = 'analysis' AND e.metadata LIKE '%backfill%'")  # fmt: skip
    assert partial == []  # no execution without its symbols: the batch is all or nothing
    with sqlite3.connect(d1) as conn:
        conn.execute("DROP TRIGGER boom")
    assert backfill_local(local_worker).exit_code == 0
    after = rows(d1, EXECUTION_KEY)
    reliability_counts.record(expected=before, actual=after)
    assert reliability_counts.duplicated == 0 and reliability_counts.lost == 0


@pytest.mark.reliability(
    kind="fault",
    case="disk full while writing the backfill SQL file",
    expected="one Error line, exit 1, D1 untouched",
)
def test_a_full_disk_while_writing_the_sql_file_is_one_error_and_d1_is_untouched(
    local_worker: Any, reliability_counts: ReliabilityCounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = rows(local_worker.d1_path, EXECUTION_KEY)
    written = 0

    def full_after_one_job(out: Any, *args: Any) -> list[str]:
        nonlocal written
        written += 1
        if written > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_job(out, *args)

    monkeypatch.setattr(sqlfile, "write_job", full_after_one_job)
    sql = local_worker.directory / "backfill.sql"
    result = backfill_local(local_worker, "--sql-out", str(sql))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: cannot write the SQL file {sql}: No space left on device\n"
    assert not sql.exists() and not list(local_worker.directory.glob("*.partial"))
    after = rows(local_worker.d1_path, EXECUTION_KEY)
    reliability_counts.record(expected=before, actual=after)
    assert after == before
