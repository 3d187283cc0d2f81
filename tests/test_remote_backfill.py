"""A remote backfill through the loopback Cloudflare API: guarded, complete, fault-proof.

The same synthetic worker as tests/test_remote_e2e.py is loaded into the loopback API; a
`kv2d1 backfill --remote` (also under injected 429s, 5xx and dropped connections) must end
with nothing missing and no duplicate natural key, and a second one must insert nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from backfill.apply import Ledger, StatementCounter, apply_plans
from backfill.lookup import MAX_IDS_SQL
from backfill.packing import BatchLimits
from tests.backfill.test_packing import DDL, RUN, job, record
from tests.cfserver import ACCOUNT, CloudflareStub, FaultPlan, Reply, Request
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
from verifier.model import LATEST
from verifier.sources.cloudflare import CloudflareClient, RemoteCredentials
from verifier.sources.local import LocalD1
from verifier.sources.remote import RemoteD1

pytest_plugins = ("tests.remote_fixtures",)

MISSING = ("missing_in_d1", "expiring_soon")
TABLES = ("job_executions", "analysis_results", "report_snapshots")


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
        "backfill", "--remote", "--config", config, "--as-of", NOW.isoformat(),
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
        "--as-of",
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
        "--as-of",
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
        "--as-of",
        NOW.isoformat(),
        "--format",
        "json",
    )
    assert counts(db) == before
    text = sql.read_text()
    assert "WHERE NOT EXISTS" in text and "INSERT OR REPLACE" not in text



def test_a_remote_backfill_sends_one_request_per_batch_and_its_ledger_knows_every_row(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KV2D1_BATCH_ROWS", "3")  # several batches from the world's few rows
    raw_bodies: list[dict[str, Any]] = []
    answer_raw = CloudflareStub.d1_raw

    def recording_raw(stub: CloudflareStub, request: Request) -> Reply:
        raw_bodies.append(request.json())
        return answer_raw(stub, request)

    monkeypatch.setattr(CloudflareStub, "d1_raw", recording_raw)
    db = world.stub.d1(world.copy.database_id)
    before = {t: db.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0] for t in TABLES}
    world.stub.log.clear()
    ledger = tmp_path / "ledger"
    result = kv2d1(
        "backfill", "--remote", "--config", str(world.remote_config), "--as-of", NOW.isoformat(),
        "--ledger-dir", str(ledger), "--format", "json",
    )  # fmt: skip
    block = json.loads(result.stdout)["backfill"]
    [path] = ledger.glob("*.jsonl")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    batches = [e for e in events if e["event"] == "batch"]
    assert len(batches) > 2 and sum(b["rows"] for b in batches) == block["rows"]["planned"]["total"]
    assert world.stub.counts()["d1_query"] == 1  # the lock check
    # one /raw request per batch (its reads inside its transaction), and the max ids read once
    assert sum("batch" in body for body in raw_bodies) == len(batches)
    assert sum(body.get("sql") == MAX_IDS_SQL for body in raw_bodies) == 1
    added = {(t, i) for t in TABLES
             for (i,) in db.execute(f"SELECT id FROM {t} WHERE id > ?", (before[t],))}
    recorded = {(r["table"], r["rowid"]) for e in events if e["event"] == "done" for r in e["rows"]}
    assert recorded == added and len(added) == block["rows"]["inserted"]["total"] > 0


def test_packed_batches_keep_to_the_d1_limits_and_write_what_a_local_d1_writes(
    cf_server: CloudflareStub, tmp_path: Path
) -> None:
    """Through the loopback API, which refuses a statement over 100 parameters or 100 KB."""
    days = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(80)]
    plans = [
        job(i, record(day, "093000" if i % 3 else LATEST, symbols=[f"S{n}" for n in range(6)],
                      report=i % 2 == 0, reasoning="why? " * 400))
        for i, day in enumerate(days, start=1)
    ]
    client = CloudflareClient(RemoteCredentials(TOKEN, ACCOUNT, cf_server.base_url))
    database = cf_server.add_database("packed", schema_sql=DDL)
    local_path = tmp_path / "local.sqlite"
    with sqlite3.connect(local_path) as conn:
        conn.executescript(DDL)
    limits = BatchLimits(max_rows=200)
    for name, d1 in (("remote", RemoteD1(client, database)),
                     ("local", LocalD1(local_path, readonly=False))):
        run = Ledger.create(tmp_path / name, RUN.run_id, {"mode": "apply", "target": d1.describe()})
        result = apply_plans(d1, plans, ledger=run, counter=StatementCounter(), limits=limits)
        assert result.inserted.total == sum(len(p.rows) for p in plans)
        assert result.statements < result.inserted.total / 8 and result.requests >= 4
    assert cf_server.counts() == {"d1_raw": 1 + result.requests}  # the max ids, then the batches
    assert table_contents(cf_server.d1(database)) == table_contents(sqlite3.connect(local_path))


def table_contents(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row, every column but `created_at`, with its SQLite type."""
    out = {}
    for table in TABLES:
        names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "created_at"]
        columns = ", ".join(f"{n}, typeof({n})" for n in names)
        out[table] = conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    return out
