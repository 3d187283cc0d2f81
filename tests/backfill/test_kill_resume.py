"""SIGKILL a real `kv2d1 backfill` before, inside and between its batches, start it again: the
same database as an uninterrupted run, no duplicate natural key, nothing missing, one run id, an
exact ledger."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from verifier.synth import WorkerFiles, generate, write_worker

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
TABLES = ("job_executions", "analysis_results", "report_snapshots")
BATCH_ROWS = 30  # KV2D1_BATCH_ROWS: the run spans several batches


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> WorkerFiles:
    """A synthetic worker whose D1 lost every other execution (and its children)."""
    directory = tmp_path_factory.mktemp("kill") / "worker"
    worker = generate(until=dt.date(2026, 11, 27), business_days=20, now=NOW)
    files = write_worker(directory, worker)
    with sqlite3.connect(files.d1_path) as conn:
        lost = "SELECT id FROM job_executions WHERE id % 2 = 0"
        conn.execute(f"DELETE FROM analysis_results WHERE execution_id IN ({lost})")
        conn.execute(f"DELETE FROM report_snapshots WHERE execution_id IN ({lost})")
        conn.execute("DELETE FROM job_executions WHERE id % 2 = 0")
    return files


def kv2d1(
    directory: Path, *args: str, kill_after: int | None = None, batch_rows: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KV2D1_KILL_AFTER_STATEMENTS", None)
    env.pop("KV2D1_BATCH_ROWS", None)
    if kill_after is not None:
        env["KV2D1_KILL_AFTER_STATEMENTS"] = str(kill_after)
    if batch_rows is not None:
        env["KV2D1_BATCH_ROWS"] = str(batch_rows)
    argv = [sys.executable, "-c", "from kv2d1.cli import main; main()", *args,
            "--config", str(directory / "wrangler.toml"), "--as-of", NOW.isoformat(), "-q"]
    return subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def copy_of(files: WorkerFiles, target: Path) -> Path:
    shutil.copytree(files.directory, target)
    return target


def d1_path(directory: Path, files: WorkerFiles) -> Path:
    return directory / files.d1_path.relative_to(files.directory)


def content(path: Path) -> tuple[dict[str, list[tuple[Any, ...]]], set[str]]:
    """Every row but `created_at` (run ids masked), and the run ids the metadata names."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    run_ids: set[str] = set()
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                     if r[1] != "created_at"]
            found = conn.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY id").fetchall()
            rows[table] = [tuple(_mask(v, run_ids) for v in row) for row in found]
    return rows, run_ids


def _mask(value: Any, run_ids: set[str]) -> Any:
    if isinstance(value, str) and value.startswith('{"kv2d1"'):
        run_id = json.loads(value)["kv2d1"]["run_id"]
        run_ids.add(run_id)
        return value.replace(run_id, "RUN")
    return value


def duplicates(path: Path) -> list[tuple[Any, ...]]:
    """Natural keys held by more than one row (the seeded duplicate aside, found by verify)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT 'job', job_type, execution_date, substr(execution_time, 1, 19), count(*) "
            "FROM job_executions WHERE metadata LIKE '{\"kv2d1\"%' "
            "GROUP BY job_type, execution_date, substr(execution_time, 1, 19) HAVING count(*) > 1 "
            "UNION ALL SELECT 'symbol', execution_id, symbol, '', count(*) FROM analysis_results "
            "GROUP BY execution_id, symbol HAVING count(*) > 1 "
            "UNION ALL SELECT 'report', execution_id, report_type, '', count(*) FROM report_snapshots "
            "GROUP BY execution_id, report_type HAVING count(*) > 1"
        ).fetchall()


def missing_after(directory: Path) -> list[str]:
    done = kv2d1(directory, "verify", "--format", "json")
    doc = json.loads(done.stdout)
    return [f["natural_key"] for f in doc["findings"]
            if f["category"] in ("missing_in_d1", "expiring_soon")]


def kill_points(ledger: Path) -> dict[str, list[int]]:
    """Every statement count to die after: before the first statement is sent (its batch
    announced), inside a batch (rolled back), after a batch committed (its `done` lines not
    written yet)."""
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    sizes = [int(e["statements"]) for e in events if e["event"] == "batch"]
    ends = list(itertools.accumulate(sizes))
    inside = [k for k in range(1, ends[-1]) if k not in ends]
    return {"before": [0], "inside": inside, "between": ends}


@pytest.mark.slow
def test_a_backfill_killed_anywhere_resumes_to_the_same_database(
    base: WorkerFiles, tmp_path: Path
) -> None:
    reference = copy_of(base, tmp_path / "reference")
    plan = json.loads(kv2d1(reference, "backfill", "--dry-run").stdout)["backfill"]
    planned = plan["rows"]["planned"]["total"]
    assert planned > 150 and plan["jobs"]["planned"] > 40  # a run worth interrupting
    done = kv2d1(reference, "backfill")  # default batches: the whole run in one request
    assert done.returncode == 0, done.stderr
    expected, _ = content(d1_path(reference, base))
    small = copy_of(base, tmp_path / "small-batches")
    assert kv2d1(small, "backfill", batch_rows=BATCH_ROWS).returncode == 0
    assert content(d1_path(small, base))[0] == expected  # batching changes nothing written
    [small_ledger] = (small / ".kv2d1" / "runs").glob("*.jsonl")
    points = kill_points(small_ledger)
    assert len(points["between"]) >= 5 and len(points["inside"]) >= 10
    for kind, k in ((kind, k) for kind, ks in points.items() for k in ks):
        worker = copy_of(base, tmp_path / f"killed-{kind}-{k}")
        killed = kv2d1(worker, "backfill", kill_after=k, batch_rows=BATCH_ROWS)
        assert killed.returncode == -signal.SIGKILL, (k, killed.stderr)
        ledgers = list((worker / ".kv2d1" / "runs").glob("*.jsonl"))
        resumed = kv2d1(worker, "backfill", "--format", "json")  # default batches
        assert resumed.returncode == 0, (k, resumed.stderr)
        block = json.loads(resumed.stdout)["backfill"]
        assert block["resumed"] and [block["run_id"]] == [p.stem for p in ledgers]
        rows, run_ids = content(d1_path(worker, base))
        assert rows == expected, f"killed {kind} batches after {k} statements"
        assert run_ids == {block["run_id"]}  # one run id: the killed run's, reused
        assert duplicates(d1_path(worker, base)) == []
        # the ledger knows every row the run inserted, across the kill: the rows of a batch
        # that committed before its `done` lines are recovered, nothing else is
        recovered = _reconciled_rows(ledgers[0])
        assert (recovered > 0) == (kind == "between"), (kind, k, recovered)
        revert = json.loads(kv2d1(worker, "backfill", "--revert", block["run_id"],
                                  "--format", "json").stdout)["backfill"]
        assert sum(revert["rows"].values()) == planned, f"killed {kind} after {k} statements"
    assert missing_after(worker) == []


def _reconciled_rows(ledger: Path) -> int:
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    return sum(len(e["rows"]) for e in events if e.get("reconciled"))
