"""`kv2d1 backfill` on synthetic workers: fill, idempotence, dry run, SQL file, revert, bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator

from kv2d1.cli import main
from tests import payload_examples as px
from verifier.d1 import job_row, report_row, symbol_row
from verifier.model import Category, KvEntry
from verifier.sources.localwriter import LocalKvWriter
from verifier.synth import WorkerFiles, generate, write_worker

REPO = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = Draft202012Validator(
    json.loads((REPO / "schema" / "report.schema.json").read_text(encoding="utf-8"))
)
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
UNTIL = dt.date(2026, 11, 27)
BACKFILLED = {Category.MISSING_IN_D1.value, Category.EXPIRING_SOON.value}
TABLES = ("job_executions", "analysis_results", "report_snapshots")
TRICKY = "it's; DROP TABLE job_executions; -- no comment\nBEGIN TRANSACTION; END; COMMIT; /* ☃ */ \"q\" \\ 日本\u2028"
TRICKY_KEY = "analysis_2026-11-21_093000"  # a Saturday: nothing else of that day in KV or D1


def make_worker(directory: Path, *, days: int = 20, tricky: bool = True) -> WorkerFiles:
    """A synthetic worker with its seeded defects, plus one run whose text needs careful quoting."""
    files = write_worker(directory, generate(until=UNTIL, business_days=days, now=NOW))
    if tricky:
        payload = px.shape_b("2026-11-21", run="093000")
        payload["trading_signals"]["AAPL"]["trading_signals"]["entry_signals"]["reasoning"] = TRICKY
        with LocalKvWriter(files.v3_dir, files.kv_namespace_id) as kv:
            kv.put_many([KvEntry(TRICKY_KEY, px.kv_value(payload))])
    return files


def run(files: WorkerFiles, *args: str) -> Result:
    argv = ["backfill", "--config", str(files.config), "--as-of", NOW.isoformat(), *args]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def verify(files: WorkerFiles) -> dict[str, Any]:
    argv = ["verify", "--config", str(files.config), "--as-of", NOW.isoformat(), "--format", "json"]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    return dict(json.loads(result.stdout))


def doc_of(result: Result) -> dict[str, Any]:
    """The JSON report of a successful run, checked against the report schema."""
    assert result.exit_code == 0, result.stderr
    doc = dict(json.loads(result.stdout))
    REPORT_SCHEMA.validate(doc)
    return doc


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def content(path: Path, *, mask_run_id: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the plan's tables, without `created_at`, values with their SQLite types."""
    out = {}
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                     if r[1] != "created_at"]
            columns = ", ".join(f"{n}, typeof({n})" for n in names)
            rows = conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
            out[table] = [_masked(r) for r in rows] if mask_run_id else rows
    return out


def _masked(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.replace(_run_id_in(v), "RUN") if _run_id_in(v) else v for v in row)


def _run_id_in(value: Any) -> str:
    if isinstance(value, str) and value.startswith('{"kv2d1"'):
        return str(json.loads(value)["kv2d1"]["run_id"])
    return ""


def files_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def missing(doc: dict[str, Any]) -> list[str]:
    return sorted(f["natural_key"] for f in doc["findings"] if f["category"] in BACKFILLED)


# --- the acceptance list ---------------------------------------------------------------------


def test_backfill_fills_what_d1_lacks_and_a_second_run_inserts_nothing(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w")
    before = verify(files)
    assert missing(before) == sorted(
        [d.natural_key for d in files.seeded if d.category.value in BACKFILLED]
        + ["analysis/2026-11-21/093000"]
    )
    doc = doc_of(run(files))
    block = doc["backfill"]
    assert block["rows"]["inserted"] == block["rows"]["planned"]
    assert block["rows"]["inserted"]["by_table"] == {
        "job_executions": 3, "analysis_results": 11, "report_snapshots": 2
    }
    assert block["before"]["expiring_soon"] == {"job_executions": 1}
    assert "missing_in_d1" not in block["after"] and "expiring_soon" not in block["after"]
    assert missing(verify(files)) == []
    # the rest is reported, never fixed
    others = {k: v for k, v in before["summary"]["by_category"].items() if k not in BACKFILLED}
    assert {k: v for k, v in verify(files)["summary"]["by_category"].items()
            if k not in BACKFILLED} == others
    after = counts(files.d1_path)
    second = run(files)
    assert doc_of(second)["backfill"]["rows"]["inserted"]["total"] == 0
    assert "Nothing to backfill in this window" in second.stderr
    assert counts(files.d1_path) == after


def test_urgent_jobs_go_first(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    doc = doc_of(run(files, "--dry-run"))
    first = doc["backfill"]["first_rows"][0]
    assert (first["table"], first["natural_key"]) == ("job_executions", "weekly/2026-11-22/latest")
    assert doc["backfill"]["jobs"]["urgent"] == 1


def test_dry_run_prints_the_plan_and_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w")
    state = files.d1_path.parent
    before = files_digest(state)
    result = run(files, "--dry-run", "--format", "text")
    assert result.exit_code == 0
    assert files_digest(state) == before
    assert not (files.directory / ".kv2d1").exists()
    text = result.stdout
    assert "rows planned" in text and "First rows:" in text
    assert "weekly/2026-11-22/latest" in text.split("First rows:")[1]
    assert text.rstrip().endswith(
        "Dry run: nothing written. Planned 3 job_executions, 11 analysis_results, "
        "2 report_snapshots in 5 jobs (1 urgent)."
    )


def test_a_sql_file_applied_with_sqlite3_equals_a_direct_backfill(tmp_path: Path) -> None:
    direct, reviewed = make_worker(tmp_path / "direct"), make_worker(tmp_path / "reviewed")
    doc_of(run(direct))
    sql = tmp_path / "backfill.sql"
    state = reviewed.d1_path.parent
    untouched = files_digest(state)
    block = doc_of(run(reviewed, "--sql-out", str(sql)))["backfill"]
    assert files_digest(state) == untouched  # --sql-out only reads D1
    text = sql.read_text(encoding="utf-8")
    assert text.startswith(f"-- kv2d1 backfill, run {block['run_id']}")
    assert "-- Rows: 3 job_executions, 11 analysis_results, 2 report_snapshots in 5 jobs" in text
    assert f"npx wrangler d1 execute predict-jobs --local --file {sql}" in text
    statements = [s for s in text.split(";\n") if s.strip() and not s.lstrip().startswith("--")]
    assert all("NOT EXISTS" in s for s in statements)
    code = re.sub(r"'(?:[^']|'')*'", "''", text)  # the SQL outside string literals
    code = "\n".join(line for line in code.splitlines() if not line.startswith("--"))
    assert not re.search(r"\b(BEGIN|COMMIT|REPLACE|UPDATE|DELETE)\b", code)
    with sqlite3.connect(reviewed.d1_path) as conn:
        conn.executescript(text)
        conn.executescript(text)  # twice: the guards make it a no-op
    assert content(reviewed.d1_path, mask_run_id=True) == content(direct.d1_path, mask_run_id=True)
    assert missing(verify(reviewed)) == []


def test_revert_restores_the_row_counts_of_before_the_run(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w")
    before, rows = counts(files.d1_path), content(files.d1_path)
    run_id = doc_of(run(files))["backfill"]["run_id"]
    assert counts(files.d1_path) != before
    dry = run(files, "--revert", run_id)
    assert doc_of(dry)["backfill"]["rows"] == {
        "job_executions": 3, "analysis_results": 11, "report_snapshots": 2
    }
    assert counts(files.d1_path) != before  # a dry run unless --yes
    done = run(files, "--revert", run_id, "--yes", "--format", "text")
    assert done.exit_code == 0
    assert f"Reverted run {run_id}: deleted 16 rows." in done.stdout
    assert counts(files.d1_path) == before
    assert content(files.d1_path) == rows


def test_revert_of_a_sql_file_run_removes_its_executions_and_names_what_it_cannot(
    tmp_path: Path,
) -> None:
    files = make_worker(tmp_path / "w")
    before = counts(files.d1_path)
    sql = tmp_path / "backfill.sql"
    run_id = doc_of(run(files, "--sql-out", str(sql)))["backfill"]["run_id"]
    with sqlite3.connect(files.d1_path) as conn:
        conn.executescript(sql.read_text(encoding="utf-8"))
    result = run(files, "--revert", run_id, "--yes", "--format", "text")
    assert result.exit_code == 0
    assert "2 rows the --sql-out file planned for executions D1 already had" in result.stdout
    after = counts(files.d1_path)  # the new executions and their children are gone ...
    assert after["job_executions"] == before["job_executions"]
    # ... the symbol result and report added to executions D1 had are not attributable
    assert after["analysis_results"] == before["analysis_results"] + 1
    assert after["report_snapshots"] == before["report_snapshots"] + 1


def test_revert_refuses_when_the_worker_added_rows_to_a_backfilled_execution(
    tmp_path: Path,
) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    run_id = doc_of(run(files))["backfill"]["run_id"]
    with sqlite3.connect(files.d1_path) as conn:
        (exec_id,) = conn.execute(
            "SELECT id FROM job_executions WHERE instr(metadata, ?) > 0 ORDER BY id LIMIT 1",
            (run_id,),
        ).fetchone()
        conn.execute("INSERT INTO analysis_results (execution_id, symbol) VALUES (?, 'ZZZ')",
                     (exec_id,))
    before = counts(files.d1_path)
    result = run(files, "--revert", run_id, "--yes")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot revert run {run_id}: execution {exec_id} ")
    assert line.endswith("(nothing was deleted)")
    assert counts(files.d1_path) == before


# --- bad input: one Error: line, nothing changed ---------------------------------------------


def _held(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_locked_database_is_one_error_line_and_nothing_changes(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    holder = _held(files.d1_path)
    try:
        before = files_digest(files.d1_path.parent)
        result = run(files)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: D1 database {files.d1_path} is locked by another process "
        "(is `wrangler dev` running?); stop it and retry"
    ]
    assert files_digest(files.d1_path.parent) == before
    assert not (files.directory / ".kv2d1").exists()


def test_a_database_without_the_plans_tables_is_one_error_line(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    files.d1_path.unlink()
    sqlite3.connect(files.d1_path).execute("CREATE TABLE other (x)").connection.close()
    before = files_digest(files.d1_path.parent)
    result = run(files)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and "lacks the plan's" in line and "job_executions" in line
    assert files_digest(files.d1_path.parent) == before


def test_a_read_only_database_is_one_error_line_and_nothing_changes(tmp_path: Path) -> None:
    """Read-only for real, even as root: the D1 directory is bind-mounted read-only in a private
    mount namespace (root ignores a file's 0444 mode, not a read-only mount). Without root, the
    file and its directory are made read-only instead."""
    files = make_worker(tmp_path / "w", tricky=False)
    state = files.d1_path.parent
    before = files_digest(state)
    argv = [sys.executable, "-c", "from kv2d1.cli import main; main()", "backfill",
            "--config", str(files.config), "--as-of", NOW.isoformat()]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True, check=False
        ).returncode != 0:
            pytest.skip("running as root without mount namespaces: cannot make a file read-only")
        mount = f"mount --bind {state} {state} && mount -o remount,ro,bind {state} {state}"
        argv = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *argv]
    else:
        files.d1_path.chmod(0o444)
        state.chmod(0o555)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: D1 database {files.d1_path} is read-only")
    assert files_digest(state) == before
    assert not (files.directory / ".kv2d1").exists()


def test_a_window_with_nothing_to_do_says_so_and_exits_0(tmp_path: Path) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    result = run(files, "--since", "2026-11-24", "--until", "2026-11-27", "--format", "text")
    assert result.exit_code == 0
    assert result.stdout.rstrip().splitlines()[-1].startswith(
        "Nothing to backfill in this window: D1 holds every KV record"
    )
    assert not (files.directory / ".kv2d1").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-run", "--sql-out", "x.sql"], "--dry-run writes nothing; --sql-out writes a file"),
        (["--yes"], "--yes confirms --revert; a backfill needs no confirmation"),
        (["--revert", "../etc/passwd"], "'../etc/passwd' is not a run id"),
        (["--revert", "20261129T000000Z-abcdef"], "Error: no ledger for run 20261129T000000Z-abcdef"),
    ],
)
def test_bad_usage_is_refused(tmp_path: Path, args: list[str], message: str) -> None:
    files = make_worker(tmp_path / "w", tricky=False)
    result = run(files, *args)
    assert result.exit_code == (1 if message.startswith("Error:") else 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_ends_with_an_example() -> None:
    result = CliRunner().invoke(main, ["backfill", "--help"])
    assert result.exit_code == 0
    assert "Example: kv2d1 backfill --config wrangler.toml" in result.stdout
    for option in ("--dry-run", "--sql-out", "--revert", "--yes", "--ledger-dir"):
        assert option in result.stdout


# --- the real wrangler -----------------------------------------------------------------------


def expected_rows(files: WorkerFiles) -> dict[str, dict[str, Any]]:
    """The rows the backfill must write, from the KV records' normalised values."""
    from verifier.profile import load_profile
    from verifier.sources.local import LocalD1, LocalKv
    from verifier.verify import Verification

    kv = LocalKv(files.v3_dir, files.kv_namespace_id, now_ms=int(NOW.timestamp() * 1000))
    d1 = LocalD1(files.d1_path)
    verification = Verification(kv=kv, d1=d1, profile=load_profile("default"),
                                window=files.window, now=NOW)
    rows: dict[str, dict[str, Any]] = {}
    for f in verification.findings():
        if f.category.value not in BACKFILLED or f.record is None:
            continue
        record = f.record
        if f.table == "job_executions":
            rows[str(record.job.key)] = job_row(record.job, metadata=None)
            for s in record.symbols:
                rows[f"{record.job.key}/{s.symbol}"] = symbol_row(s)
            if record.report is not None:
                rows[f"{record.job.key}/report"] = report_row(record.report)
        elif f.table == "analysis_results":
            symbol = f.natural_key.rsplit("/", 1)[1]
            [s] = [s for s in record.symbols if s.symbol == symbol]
            rows[f.natural_key] = symbol_row(s)
        else:
            assert record.report is not None
            rows[f"{record.job.key}/report"] = report_row(record.report)
    return rows


@pytest.mark.wrangler
def test_wrangler_applies_the_sql_file_and_reads_back_the_kv_values(
    tmp_path: Path, wrangler: Any
) -> None:
    files = make_worker(tmp_path / "w")
    expected = expected_rows(files)
    sql = tmp_path / "backfill.sql"
    doc_of(run(files, "--sql-out", str(sql)))
    with sqlite3.connect(files.d1_path) as conn:
        last_symbol, last_report = conn.execute(
            "SELECT (SELECT max(id) FROM analysis_results), (SELECT max(id) FROM report_snapshots)"
        ).fetchone()
    wrangler(files.directory, "d1", "execute", files.d1_database_name, "--local", "--file", str(sql))

    def select(query: str) -> list[dict[str, Any]]:
        done = wrangler(files.directory, "d1", "execute", files.d1_database_name, "--local",
                        "--json", "--command", query)
        return list(json.loads(done.stdout)[0]["results"])

    executions = select(
        "SELECT * FROM job_executions WHERE metadata LIKE '{\"kv2d1\"%' ORDER BY id"
    )
    symbols = select(
        "SELECT ar.*, je.job_type || '/' || je.execution_date AS job FROM analysis_results ar "
        f"JOIN job_executions je ON je.id = ar.execution_id WHERE ar.id > {last_symbol} ORDER BY ar.id"
    )
    reports = select(f"SELECT * FROM report_snapshots WHERE id > {last_report} ORDER BY id")
    assert (len(executions), len(symbols), len(reports)) == (3, 11, 2)
    by_job = {k: v for k, v in expected.items() if "job_type" in v}
    got_jobs = {f"{e['job_type']}/{e['execution_date']}": e for e in executions}
    for key, row in by_job.items():
        job = got_jobs["/".join(key.split("/")[:2])]
        assert {c: job[c] for c in row if c != "metadata"} == {
            c: v for c, v in row.items() if c != "metadata"
        }
        assert json.loads(job["metadata"])["kv2d1"]["kv_key"]
    want_symbols = {(k.split("/")[0] + "/" + k.split("/")[1], v["symbol"]): v
                    for k, v in expected.items() if "sentiment" in v}
    for got in symbols:
        row = want_symbols.pop((got["job"], got["symbol"]))
        assert {c: got[c] for c in row} == row
    assert want_symbols == {}
    tricky = [s for s in symbols if s["reasoning"] == TRICKY]
    assert len(tricky) == 1
    want_reports = [v for v in expected.values() if "report_type" in v]
    assert sorted((r["report_type"], r["content"]) for r in reports) == sorted(
        (v["report_type"], v["content"]) for v in want_reports
    )
