"""The files under `schema/`: the plan's DDL (on SQLite and on real wrangler), the report schema."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reports.document import Summary, build_document
from verifier.canonical import stable_id
from verifier.clock import RunClock
from verifier.model import SEVERITY_OF, Category, Coverage, Finding, Table, Window

REPO = Path(__file__).resolve().parents[1]
DDL = REPO / "schema" / "scheduled-jobs.sql"
REPORT_SCHEMA = REPO / "schema" / "report.schema.json"
WRANGLER = REPO / "node_modules" / ".bin" / "wrangler"

COLUMNS = {
    "job_executions": [
        "id", "job_type", "execution_date", "execution_time", "status", "duration_ms",
        "symbols_processed", "symbols_successful", "symbols_failed", "error_message", "metadata",
        "created_at",
    ],
    "analysis_results": [
        "id", "execution_id", "symbol", "sentiment", "confidence", "direction", "reasoning",
        "signals", "technical_data", "news_count", "created_at",
    ],
    "report_snapshots": [
        "id", "execution_id", "report_type", "report_date", "content", "html_snapshot", "summary",
        "high_confidence_count", "created_at",
    ],
}  # fmt: skip
PLAN_INDEXES = {
    "idx_job_executions_type_date", "idx_job_executions_date", "idx_job_executions_status",
    "idx_analysis_results_execution", "idx_analysis_results_symbol",
    "idx_analysis_results_sentiment", "idx_report_snapshots_type_date",
    "idx_report_snapshots_execution",
}  # fmt: skip
NATURAL_KEY_INDEXES = {
    "idx_job_executions_natural": (
        "job_executions",
        ["job_type", "execution_date", "execution_time"],
    ),
    "idx_analysis_results_exec_symbol": ("analysis_results", ["execution_id", "symbol"]),
    "idx_report_snapshots_exec_type": ("report_snapshots", ["execution_id", "report_type"]),
}


def apply_ddl(db: sqlite3.Connection) -> None:
    db.executescript(DDL.read_text(encoding="utf-8"))


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "d1.sqlite")
    apply_ddl(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def insert_job(db: sqlite3.Connection, status: str = "success", job_type: str = "analysis") -> int:
    cur = db.execute(
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status)"
        " VALUES (?, '2026-11-16', '2026-11-16T12:30:00Z', ?)",
        (job_type, status),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def schema_objects(db: sqlite3.Connection) -> set[tuple[str, str]]:
    rows = db.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {(kind, name) for kind, name in rows}


EXPECTED_OBJECTS = {("table", t) for t in COLUMNS} | {
    ("index", i) for i in PLAN_INDEXES | set(NATURAL_KEY_INDEXES)
}


# --- the DDL on SQLite -------------------------------------------------------------------------


def test_ddl_creates_the_plans_tables_columns_and_indexes(db: sqlite3.Connection) -> None:
    assert schema_objects(db) == EXPECTED_OBJECTS
    for table, columns in COLUMNS.items():
        assert [row[1] for row in db.execute(f"PRAGMA table_info({table})")] == columns


def test_ddl_applies_twice_and_keeps_the_data(db: sqlite3.Connection) -> None:
    job = insert_job(db)
    db.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (?, 'AAPL')", (job,))
    db.commit()
    apply_ddl(db)
    apply_ddl(db)
    assert schema_objects(db) == EXPECTED_OBJECTS
    assert db.execute("SELECT count(*) FROM job_executions").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM analysis_results").fetchone() == (1,)


def test_ddl_neither_drops_nor_seeds() -> None:
    """Every statement creates, only if absent: applying it never loses or invents a row."""
    text = re.sub(r"--[^\n]*", "", DDL.read_text(encoding="utf-8"))
    heads = Counter(" ".join(s.split()[:5]).upper() for s in text.split(";") if s.strip())
    assert heads == {"CREATE TABLE IF NOT EXISTS": 3, "CREATE INDEX IF NOT EXISTS": 11}


@pytest.mark.parametrize(
    ("job_type", "status"),
    [("analysis", "done"), ("analysis", "failed"), ("analysis", "SUCCESS"), ("daily", "success")],
)
def test_checks_reject_values_outside_the_plans_vocabulary(
    db: sqlite3.Connection, job_type: str, status: str
) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        insert_job(db, status=status, job_type=job_type)


def test_checks_accept_the_plans_vocabulary(db: sqlite3.Connection) -> None:
    for job_type in ("analysis", "pre-market", "intraday", "end-of-day", "weekly"):
        for status in ("success", "failure", "partial"):
            insert_job(db, status=status, job_type=job_type)
    assert db.execute("SELECT count(*) FROM job_executions").fetchone() == (15,)


def test_not_null_columns_are_enforced(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        db.execute(
            "INSERT INTO job_executions (job_type, execution_date, status)"
            " VALUES ('analysis', '2026-11-16', 'success')"
        )


def test_deleting_a_job_cascades_to_its_results_and_reports(db: sqlite3.Connection) -> None:
    kept, dropped = insert_job(db), insert_job(db, job_type="pre-market")
    for job in (kept, dropped):
        db.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (?, 'AAPL')", (job,))
        db.execute(
            "INSERT INTO report_snapshots (execution_id, report_type, report_date)"
            " VALUES (?, 'pre-market', '2026-11-16')",
            (job,),
        )
    db.execute("DELETE FROM job_executions WHERE id = ?", (dropped,))
    assert db.execute("SELECT execution_id FROM analysis_results").fetchall() == [(kept,)]
    assert db.execute("SELECT execution_id FROM report_snapshots").fetchall() == [(kept,)]


def test_a_child_needs_an_existing_job(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (999, 'AAPL')")


def test_natural_key_indexes_are_non_unique_so_duplicates_stay_visible(
    db: sqlite3.Connection,
) -> None:
    for name, (table, columns) in NATURAL_KEY_INDEXES.items():
        assert [row[2] for row in db.execute(f"PRAGMA index_info({name})")] == columns
        unique = {row[1]: row[2] for row in db.execute(f"PRAGMA index_list({table})")}
        assert unique[name] == 0
    first, second = insert_job(db), insert_job(db)  # the same natural key twice
    assert first != second
    for job in (first, first):
        db.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (?, 'AAPL')", (job,))
    assert db.execute("SELECT count(*) FROM analysis_results").fetchone() == (2,)


def test_natural_key_lookup_uses_its_index(db: sqlite3.Connection) -> None:
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM job_executions"
        " WHERE job_type = ? AND execution_date = ? AND execution_time = ?",
        ("analysis", "2026-11-16", "2026-11-16T12:30:00Z"),
    ).fetchall()
    assert "idx_job_executions_natural" in " ".join(str(row[-1]) for row in plan)


# --- the DDL on the real wrangler ------------------------------------------------------------

WRANGLER_TOML = """\
name = "kv2d1-schema-test"
main = "index.js"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "PREDICT_JOBS_DB"
database_name = "cct-predict-jobs"
database_id = "00000000-0000-4000-8000-000000000000"
"""


def run_wrangler(cwd: Path, *args: str) -> str:
    """Run the project's wrangler offline in `cwd`; its stdout. Fails (never skips) when absent."""
    if not WRANGLER.exists():
        pytest.fail(f"{WRANGLER} is missing: run `npm ci` in {REPO}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(
        WRANGLER_SEND_METRICS="false",
        WRANGLER_HIDE_BANNER="true",
        CLOUDFLARE_CF_FETCH_ENABLED="false",
        WRANGLER_LOG_PATH=str(cwd / "logs"),
    )
    done = subprocess.run(
        [str(WRANGLER), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"wrangler {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def d1_query(cwd: Path, sql: str) -> list[dict[str, Any]]:
    out = run_wrangler(
        cwd, "d1", "execute", "PREDICT_JOBS_DB", "--local", "--json", "--command", sql
    )
    results: list[dict[str, Any]] = json.loads(out)[0]["results"]
    return results


@pytest.mark.wrangler
@pytest.mark.slow
def test_wrangler_applies_the_ddl_twice_and_keeps_the_data(tmp_path: Path) -> None:
    (tmp_path / "wrangler.toml").write_text(WRANGLER_TOML)
    (tmp_path / "index.js").write_text("export default {};\n")
    apply = ("d1", "execute", "PREDICT_JOBS_DB", "--local", "--file", str(DDL))

    run_wrangler(tmp_path, *apply)
    d1_query(
        tmp_path,
        "INSERT INTO job_executions (job_type, execution_date, execution_time, status)"
        " VALUES ('analysis', '2026-11-16', '2026-11-16T12:30:00Z', 'success')",
    )
    run_wrangler(tmp_path, *apply)  # re-applied to a database holding data

    rows = d1_query(
        tmp_path,
        "SELECT type, name FROM sqlite_master"
        " WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' ORDER BY name",
    )
    assert {(r["type"], r["name"]) for r in rows} == EXPECTED_OBJECTS
    assert d1_query(tmp_path, "SELECT count(*) AS n FROM job_executions") == [{"n": 1}]


# --- the JSON report schema ------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_validator() -> Draft202012Validator:
    schema = json.loads(REPORT_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


SOURCE = {
    "kind": "local",
    "config": "wrangler.toml",
    "env": None,
    "kv_binding": "MARKET_ANALYSIS_CACHE",
    "kv_namespace_id": None,
    "d1_binding": "PREDICT_JOBS_DB",
    "d1_database_id": None,
    "d1_database_name": "cct-predict-jobs",
    "persist_to": None,
    "snapshot": None,
}


def minimal_report() -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "tool_version": "0.1.0",
        "command": "verify",
        "generated_at": "2026-11-16T21:00:00+00:00",
        "as_of": {"instant": "2026-11-16T21:00:00+00:00", "from": "clock"},
        "source": dict(SOURCE),
        "window": {"since": "2026-11-16", "until": None},
        "coverage": Coverage().to_json(),
        "summary": Summary().to_json(),
        "findings": [],
    }


def a_finding() -> Finding:
    category = Category.MISSING_IN_D1
    return Finding(
        id=stable_id("missing_in_d1", "analysis/2026-11-16/latest"),
        category=category,
        severity=SEVERITY_OF[category],
        natural_key="analysis/2026-11-16/latest",
        message="KV job analysis/2026-11-16/latest has no job_executions row",
        kv_key="analysis_2026-11-16",
        table=Table.JOB_EXECUTIONS.value,
        kv_value={"status": "success"},
        shape="B",
        expiration=1794900000,
    )


def test_a_minimal_report_is_valid(report_validator: Draft202012Validator) -> None:
    assert list(report_validator.iter_errors(minimal_report())) == []


def test_a_full_report_is_valid(report_validator: Draft202012Validator) -> None:
    report = minimal_report() | {
        "command": "report",
        "findings": [a_finding().to_json() | {"status": "new"}],
        "metrics": [
            {"name": "data completeness", "value": 0.98, "unit": "ratio", "target": "100 %",
             "rollback_threshold": "inconsistency detected", "status": "fail",
             "evidence": {"matched": 49, "records": 50}, "required": True},
        ],
        "verdict": "not_ready",
        "patterns": [
            {"id": "p1", "category": "missing_in_d1", "table": "job_executions", "field": None,
             "shape": "B", "pattern": "every analysis run of the week", "count": 5,
             "example_keys": ["analysis_2026-11-16"], "suggestion": "kv2d1 backfill"},
        ],
        "history": {}, "backfill": {}, "redacted": False,
    }  # fmt: skip
    assert list(report_validator.iter_errors(report)) == []


def test_the_document_builder_writes_a_valid_report(report_validator: Draft202012Validator) -> None:
    summary = Summary()
    summary.add(a_finding())
    doc = build_document(
        command="verify",
        source=SOURCE | {"api_token": "s3cret"},  # dropped by the builder
        window=Window(since="2026-11-16"),
        coverage=Coverage(keys_listed=3, shapes={"B": 1}),
        findings=[a_finding()],
        summary=summary,
        clock=RunClock.fixed(dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)),
    )
    assert list(report_validator.iter_errors(doc)) == []
    assert doc["as_of"] == {"instant": "2026-11-28T15:00:00+00:00", "from": "option"}


@pytest.mark.parametrize(
    "secret_name", ["token", "api_token", "Authorization", "CLOUDFLARE_API_TOKEN", "api_key"]
)
def test_a_secret_in_the_source_is_rejected(
    report_validator: Draft202012Validator, secret_name: str
) -> None:
    report = minimal_report()
    report["source"][secret_name] = "s3cret"
    assert not report_validator.is_valid(report)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("schema_version",), "2.0"),
        (("command",), "diff"),
        (("generated_at",), "yesterday"),
        (("window", "since"), "16/11/2026"),
        (("summary", "by_category"), {"missing_in_d1": 0}),
        (("coverage", "keys_listed"), -1),
        (("findings",), [{"id": "xyz"}]),
        (("verdict",), "maybe"),
    ],
)
def test_a_broken_report_is_rejected(
    report_validator: Draft202012Validator, path: tuple[str, ...], value: object
) -> None:
    report = minimal_report()
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert not report_validator.is_valid(report)


def test_a_finding_id_must_be_hex(report_validator: Draft202012Validator) -> None:
    report = minimal_report()
    report["findings"] = [a_finding().to_json() | {"id": "not-a-hex-id-at-all"}]
    assert not report_validator.is_valid(report)
