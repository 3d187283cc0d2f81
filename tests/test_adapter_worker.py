"""A worker written by the real wrangler whose D1 holds exactly what the plan's adapter writes.

The adapter maps sentiment, confidence, direction, reasoning and the job counters; it never
writes `signals`, `technical_data`, `news_count`, `html_snapshot` or `summary`. A correctly
dual-written system must be `ready`: none of those NULLs, and no field the KV payload does not
carry, may be a finding. One adapter-mapped column NULL is the plan's all-NULL mapping bug and
must stay a `field_mismatch`.

KV goes in with `wrangler kv bulk put --local`, D1 with `wrangler d1 execute --local --file`, so
kv2d1 reads files the real wrangler wrote. The data is pinned to the real clock (wrangler
refuses expirations in the past); every kv2d1 run is pinned to it with `--as-of`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kv2d1.cli import main
from tests.conftest import Wrangler
from verifier.calendar import today_et
from verifier.profile import schema_dir
from verifier.sources.local import LocalKv
from verifier.synth import WorkerFiles, generate, write_worker

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NEVER_WRITTEN = {
    "analysis_results": ("signals", "technical_data", "news_count"),
    "report_snapshots": ("html_snapshot", "summary"),
}
TABLES = ("job_executions", "analysis_results", "report_snapshots")


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def adapter_rows(ours: WorkerFiles) -> str:
    """INSERTs of our worker's D1 rows as the adapter writes them (never-written columns NULL)."""
    lines = []
    with sqlite3.connect(ours.d1_path) as conn:
        for table in TABLES:
            names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
                values = [None if n in NEVER_WRITTEN.get(table, ()) else v
                          for n, v in zip(names, row, strict=True)]  # fmt: skip
                lines.append(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                             f"({', '.join(literal(v) for v in values)});")  # fmt: skip
    return "\n".join(lines) + "\n"


def kv_bulk(ours: WorkerFiles) -> list[dict[str, Any]]:
    kv = LocalKv(ours.v3_dir, ours.kv_namespace_id, now_ms=int(NOW.timestamp() * 1000))
    names = [info.name for info in kv.iter_keys()]
    entries = []
    for e in kv.get_many(names):
        entry: dict[str, Any] = {"key": e.key, "value": e.value.decode("utf-8")}
        if e.expiration is not None:
            entry["expiration"] = e.expiration
        if e.metadata is not None:
            entry["metadata"] = e.metadata
        entries.append(entry)
    return entries


@pytest.fixture(scope="module")
def real_worker(tmp_path_factory: pytest.TempPathFactory, wrangler: Wrangler) -> tuple[Path, str]:
    """(the project directory, its D1 database name), every file written by the real wrangler."""
    tmp = tmp_path_factory.mktemp("adapter")
    until = dt.date.fromisoformat(today_et(NOW)) - dt.timedelta(days=1)
    ours = write_worker(tmp / "ours", generate(until=until, business_days=8, now=NOW, defects=False))
    project = tmp / "real"
    project.mkdir()
    (project / "wrangler.toml").write_text(ours.config.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp / "kv.json").write_text(json.dumps(kv_bulk(ours)), encoding="utf-8")
    wrangler(project, "kv", "bulk", "put", str(tmp / "kv.json"), "--binding", ours.kv_binding,
             "--local")  # fmt: skip
    db = ours.d1_database_name
    wrangler(project, "d1", "execute", db, "--local", "--file",
             str(schema_dir() / "scheduled-jobs.sql"))  # fmt: skip
    (tmp / "rows.sql").write_text(adapter_rows(ours), encoding="utf-8")
    wrangler(project, "d1", "execute", db, "--local", "--file", str(tmp / "rows.sql"))
    return project, db


def run(project: Path, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [*args, "--config", str(project / "wrangler.toml"), "--as-of", NOW.isoformat(),
            "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(main, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    return result.exit_code, json.loads(result.stdout)


def test_what_the_adapter_writes_is_consistent_and_ready(real_worker: tuple[Path, str]) -> None:
    project, _ = real_worker
    code, verified = run(project, "verify")
    errors = [(f["category"], f["natural_key"], f.get("field")) for f in verified["findings"]
              if f["severity"] == "error"]  # fmt: skip
    assert errors == [] and code == 0
    shapes = verified["coverage"]["shapes"]
    assert {"A", "B", "G", "EOD", "W"} <= set(shapes), shapes
    assert verified["coverage"]["records_matched"] > 20
    code, report = run(project, "report", "--probe-repeat", "0")
    assert (report["verdict"], code) == ("ready", 0), report["decision"]
    # The never-written columns' NULLs are counted once, as info, never as findings.
    nulls = verified["coverage"]["unwritten_nulls"]
    assert nulls["analysis_results.signals"] > 0 and nulls["analysis_results.news_count"] > 0
    info = {p["field"]: p for p in report["patterns"] if p["severity"] == "info"}
    assert info["signals"]["count"] == nulls["analysis_results.signals"]
    assert info["signals"]["pattern"].startswith("never written by the adapter: ")


def test_one_adapter_mapped_column_null_is_a_field_mismatch(
    real_worker: tuple[Path, str], wrangler: Wrangler
) -> None:
    project, db = real_worker
    wrangler(project, "d1", "execute", db, "--local", "--command",
             "UPDATE analysis_results SET sentiment = NULL WHERE id = "
             "(SELECT min(id) FROM analysis_results WHERE sentiment IS NOT NULL)")  # fmt: skip
    code, verified = run(project, "verify")
    errors = {(f["category"], f.get("table"), f.get("field")) for f in verified["findings"]
              if f["severity"] == "error"}  # fmt: skip
    assert errors == {("field_mismatch", "analysis_results", "sentiment")} and code == 3
    code, report = run(project, "report", "--probe-repeat", "0")
    assert (report["verdict"], code) == ("rollback", 4)


# --- a later manual run that only the daily key holds ---------------------------------------

DAY = "2026-11-16"


def test_a_later_run_only_the_daily_key_holds_is_found_and_backfilled(
    tmp_path: Path, wrangler: Wrangler
) -> None:
    """The daily key is last-writer-wins: a manual run at 15:30 ET writes only
    `analysis_{date}`. D1 has the 09:30 and 12:00 runs; the 15:30 one must be a finding, then a
    backfilled execution with its symbol results, read back with the real wrangler."""
    from tests import payload_examples as pe
    from tests.kv2d1.test_cli_verify import make_worker
    from verifier.model import KvEntry
    from verifier.sources.localwriter import LocalKvWriter

    as_of = ("--as-of", "2026-11-17T12:00:00Z")
    root = make_worker(tmp_path, [
        KvEntry(f"analysis_{DAY}_093000", pe.kv_value(pe.shape_b(DAY, run="093000"))),
        KvEntry(f"analysis_{DAY}_120000", pe.kv_value(pe.shape_b(DAY, run="120000"))),
    ])  # fmt: skip
    config = ("--config", str(root / "wrangler.toml"))

    def kv2d1(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(main, [*args, *config, *as_of, "-q", "--format", "json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
        return result.exit_code, json.loads(result.stdout)

    assert kv2d1("backfill")[0] == 0  # D1 gets the two per-run jobs, as the worker wrote them
    with LocalKvWriter(root / ".wrangler" / "state" / "v3", _kv_id(root)) as writer:
        writer.put_many([KvEntry(f"analysis_{DAY}", pe.kv_value(pe.shape_b(DAY, run="153000")))])
    code, found = kv2d1("verify")
    missing = [(f["category"], f["natural_key"]) for f in found["findings"]
               if f["table"] == "job_executions"]  # fmt: skip
    assert (code, missing) == (3, [("missing_in_d1", f"analysis/{DAY}/153000")])
    assert kv2d1("backfill")[0] == 0
    assert kv2d1("verify")[1]["summary"]["by_severity"]["error"] == 0
    done = wrangler(root, "d1", "execute", "predict-jobs", "--local", "--json", "--command",
                    "SELECT je.execution_time, count(ar.id) AS symbols FROM job_executions je "
                    "LEFT JOIN analysis_results ar ON ar.execution_id = je.id "
                    "GROUP BY je.id ORDER BY je.execution_time")  # fmt: skip
    rows = [(r["execution_time"][11:19], r["symbols"]) for r in json.loads(done.stdout)[0]["results"]]
    assert [t for t, _ in rows] == ["14:30:00", "17:00:00", "20:30:00"]  # ET 09:30, 12:00, 15:30
    assert rows[2][1] == rows[1][1] > 0  # the manual run's symbol results are there too


def _kv_id(root: Path) -> str:
    from tests.kv2d1.test_cli_verify import KV_ID

    return KV_ID
