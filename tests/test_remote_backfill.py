"""A remote backfill through the loopback Cloudflare API: guarded, complete, fault-proof.

The same synthetic worker as tests/test_remote_e2e.py is loaded into the loopback API; a
`kv2d1 backfill --remote` (also under injected 429s, 5xx and dropped connections) must end
with nothing missing and no duplicate natural key, and a second one must insert nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.cfserver import FaultPlan
from tests.test_remote_e2e import (  # noqa: F401  (fixtures)
    NOW,
    TOKEN,
    World,
    fast_retries,
    kv2d1,
    verify,
    worker,
    world,
)

pytest_plugins = ("tests.remote_fixtures",)

MISSING = ("missing_in_d1", "expiring_soon")


def duplicate_keys(conn: sqlite3.Connection) -> list[tuple[str, ...]]:
    jobs = conn.execute(
        "SELECT job_type, execution_date, substr(execution_time, 1, 19), count(*) FROM job_executions"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1"
    ).fetchall()
    children = conn.execute(
        "SELECT execution_id, symbol, count(*) FROM analysis_results GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    return [tuple(map(str, r)) for r in jobs + children]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("job_executions", "analysis_results", "report_snapshots")
    }


@pytest.mark.parametrize(
    "faults",
    [None, FaultPlan(seed=3, rate_limited=0.05, server_error=0.05, dropped=0.03, retry_after_s=0)],
)
def test_a_remote_backfill_leaves_nothing_missing_and_nothing_doubled(
    world: World, faults: FaultPlan | None, tmp_path: Path
) -> None:
    config = str(world.remote_config)
    db = world.stub.d1(world.copy.database_id)
    before_doc = verify("--remote", "--config", config)
    missing_before = sum(before_doc["summary"]["by_category"][c] for c in MISSING)
    assert missing_before > 0
    duplicates_before = duplicate_keys(db)  # the seeded duplicate_in_d1 is left alone
    before = counts(db)
    if faults is not None:
        world.stub.set_faults(faults)
    ledger = tmp_path / "ledger"
    result = kv2d1(
        "backfill", "--remote", "--config", config, "--now", NOW.isoformat(),
        "--ledger-dir", str(ledger), "--format", "json",
    )  # fmt: skip
    assert (
        "Time Travel bookmark" in result.stderr
        and "wrangler d1 time-travel restore" in result.stderr
    )
    doc = json.loads(result.stdout)
    assert doc["backfill"]["time_travel"]["bookmark"]
    world.stub.set_faults(FaultPlan())
    after_doc = verify("--remote", "--config", config)
    assert sum(after_doc["summary"]["by_category"][c] for c in MISSING) == 0
    assert duplicate_keys(db) == duplicates_before
    after = counts(db)
    assert all(after[t] >= before[t] for t in before)  # nothing deleted
    # a second backfill inserts nothing
    kv2d1(
        "backfill",
        "--remote",
        "--config",
        config,
        "--now",
        NOW.isoformat(),
        "--ledger-dir",
        str(ledger),
        "--format",
        "json",
    )
    assert counts(db) == after
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in ledger.rglob("*") if p.is_file())


def test_remote_dry_run_and_sql_out_write_nothing(world: World, tmp_path: Path) -> None:
    config = str(world.remote_config)
    db = world.stub.d1(world.copy.database_id)
    before = counts(db)
    kv2d1(
        "backfill",
        "--remote",
        "--dry-run",
        "--config",
        config,
        "--now",
        NOW.isoformat(),
        "--format",
        "json",
    )
    sql = tmp_path / "backfill.sql"
    kv2d1(
        "backfill",
        "--remote",
        "--sql-out",
        str(sql),
        "--config",
        config,
        "--now",
        NOW.isoformat(),
        "--format",
        "json",
    )
    assert counts(db) == before
    text = sql.read_text()
    assert "WHERE NOT EXISTS" in text and "INSERT OR REPLACE" not in text
