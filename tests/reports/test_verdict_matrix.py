"""The verdict matrix of PRODUCT.md: each finding category alone, and "nothing to compare" in its
four forms, on local state, on a snapshot of it and through the loopback API.

Each case starts from a clean synthetic worker (`generate(defects=False)`), seeds one defect with
plain SQL or a KV write, and asserts verify's exit code and report's verdict and exit code. A
clean worker is `ready` / exit 0 on all three sources. The dataset is built around the real clock
(the loopback API, like KV, hides keys whose expiration has passed) and every run is pinned to it
with `--as-of`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kv2d1.cli import main
from kv2d1.config import load_wrangler_config
from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub
from tests.remote_loading import load_remote_copy, write_remote_config
from verifier.calendar import today_et
from verifier.model import KvEntry
from verifier.sources.local import kv_sqlite_path, open_local_sources
from verifier.sources.localwriter import LocalKvWriter
from verifier.synth import SyntheticWorker, WorkerFiles, generate, write_worker

pytest_plugins = ("tests.remote_fixtures",)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NOW_MS = int(NOW.timestamp() * 1000)
TABLES = ("job_executions", "analysis_results", "report_snapshots")


@pytest.fixture(scope="module")
def clean() -> SyntheticWorker:
    until = dt.date.fromisoformat(today_et(NOW)) - dt.timedelta(days=1)
    return generate(until=until, business_days=15, now=NOW, defects=False)


def d1(files: WorkerFiles, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(files.d1_path) as conn:
        return conn.execute(sql, params).fetchall()


def kv(files: WorkerFiles, sql: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(kv_sqlite_path(files.v3_dir, files.kv_namespace_id)) as conn:
        conn.execute(sql, params)


def executions(files: WorkerFiles, job_type: str) -> list[tuple[int, str]]:
    """(id, date) of a job type's executions, oldest first."""
    return [(int(i), str(d)) for i, d in d1(
        files, "SELECT id, execution_date FROM job_executions WHERE job_type = ? ORDER BY id",
        (job_type,),
    )]  # fmt: skip


def drop_execution(files: WorkerFiles, execution_id: int) -> None:
    for table in TABLES[1:]:
        d1(files, f"DELETE FROM {table} WHERE execution_id = ?", (execution_id,))
    d1(files, "DELETE FROM job_executions WHERE id = ?", (execution_id,))


def copy_row(files: WorkerFiles, execution_id: int, **changes: Any) -> None:
    """Insert a copy of an execution (not its children), with `changes` to its columns."""
    names = [r[1] for r in d1(files, "PRAGMA table_info(job_executions)") if r[1] != "id"]
    picked = ", ".join("?" if n in changes else n for n in names)
    params = tuple(changes[n] for n in names if n in changes)
    d1(files, f"INSERT INTO job_executions ({', '.join(names)}) SELECT {picked} "
              "FROM job_executions WHERE id = ?", (*params, execution_id))  # fmt: skip


# --- one defect each ------------------------------------------------------------------------


def missing_in_d1(files: WorkerFiles) -> None:
    drop_execution(files, executions(files, "end-of-day")[2][0])


def orphan_in_d1(files: WorkerFiles) -> None:
    """A weekly execution on a weekday of the last week: D1 has it, KV never had such a key."""
    weekly, day = executions(files, "weekly")[-1][0], executions(files, "analysis")[-2][1]
    copy_row(files, weekly, execution_date=day, execution_time=f"{day}T15:00:00.000Z")


def field_mismatch(files: WorkerFiles) -> None:
    d1(files, "UPDATE analysis_results SET confidence = 0.0123 WHERE id = "
              "(SELECT min(id) FROM analysis_results)")  # fmt: skip


def duplicate_in_d1(files: WorkerFiles) -> None:
    copy_row(files, executions(files, "intraday")[1][0])


def invalid_kv_payload(files: WorkerFiles) -> None:
    with LocalKvWriter(files.v3_dir, files.kv_namespace_id) as writer:
        day = executions(files, "analysis")[1][1]
        writer.put_many([KvEntry(f"analysis_{day}", b"{not json", NOW_MS // 1000 + 86400 * 30)])


def invalid_d1_metadata(files: WorkerFiles) -> None:
    d1(files, "UPDATE job_executions SET metadata = '{not json' WHERE id <= 5")


def invalid_d1_date(files: WorkerFiles) -> None:
    d1(files, "UPDATE job_executions SET execution_date = '2026-11-31' WHERE id = "
              "(SELECT max(id) FROM job_executions WHERE job_type = 'analysis')")  # fmt: skip


def expiring_soon(files: WorkerFiles) -> None:
    """A job D1 lacks whose KV key expires in 10 hours."""
    execution, day = executions(files, "pre-market")[-3]
    drop_execution(files, execution)
    _expire_in(files, f"pre_market_report_{day}", hours=10)


def _expire_in(files: WorkerFiles, key: str, *, hours: int) -> None:
    kv(files, "UPDATE _mf_entries SET expiration = ? WHERE key = ?",
       (NOW_MS + hours * 3600 * 1000, key))  # fmt: skip


def schedule_gap(files: WorkerFiles) -> None:
    """An old trading day's intraday job in neither KV nor D1 (outside the 7-day metric)."""
    execution, day = executions(files, "intraday")[1]
    drop_execution(files, execution)
    kv(files, "DELETE FROM _mf_entries WHERE key = ?", (f"intraday_report_{day}",))


def kv_empty(files: WorkerFiles) -> None:
    kv(files, "DELETE FROM _mf_entries")


def every_key_expired(files: WorkerFiles) -> None:
    kv(files, "UPDATE _mf_entries SET expiration = 1000")


def no_key_the_profile_knows(files: WorkerFiles) -> None:
    kv(files, "DELETE FROM _mf_entries")
    with LocalKvWriter(files.v3_dir, files.kv_namespace_id) as writer:
        writer.put_many([KvEntry("config:theme", b'"dark"'), KvEntry("session:42", b"{}")])


@dataclass(frozen=True)
class Case:
    name: str
    seed: Callable[[WorkerFiles], None] | None
    verify_exit: int
    verdict: str
    category: str | None = None  # the finding the defect must produce
    args: tuple[str, ...] = ()


READY, NOT_READY, ROLLBACK = "ready", "not_ready", "rollback"
CASES = [
    Case("clean", None, 0, READY),
    Case("missing_in_d1", missing_in_d1, 3, NOT_READY, "missing_in_d1"),
    Case("orphan_in_d1", orphan_in_d1, 0, READY, "orphan_in_d1"),
    Case("field_mismatch", field_mismatch, 3, ROLLBACK, "field_mismatch"),
    Case("duplicate_in_d1", duplicate_in_d1, 3, ROLLBACK, "duplicate_in_d1"),
    Case("invalid_kv_payload", invalid_kv_payload, 3, NOT_READY, "invalid_kv_payload"),
    Case("invalid_d1_row (JSON)", invalid_d1_metadata, 3, ROLLBACK, "invalid_d1_row"),
    Case("invalid_d1_row (date)", invalid_d1_date, 3, ROLLBACK, "invalid_d1_row"),
    Case("expiring_soon", expiring_soon, 3, NOT_READY, "expiring_soon"),
    Case("schedule_gap", schedule_gap, 0, READY, "schedule_gap"),
    Case("nothing: KV empty", kv_empty, 3, NOT_READY),
    Case("nothing: every key expired", every_key_expired, 3, NOT_READY),
    Case("nothing: no key the profile knows", no_key_the_profile_knows, 3, NOT_READY),
    Case("nothing: an empty window", None, 3, NOT_READY,
         args=("--since", "2020-01-06", "--until", "2020-01-10")),
]


def run(*args: str, code: int | None = None) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, [*args, "--as-of", NOW.isoformat(), "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    assert TOKEN not in result.stdout + result.stderr
    return result.exit_code, json.loads(result.stdout)


def sources(files: WorkerFiles, stub: CloudflareStub, tmp: Path) -> dict[str, tuple[str, ...]]:
    local = ("--config", str(files.config))
    snapshot = tmp / "snapshot.sqlite"
    taken = CliRunner().invoke(
        main, ["snapshot", *local, "-o", str(snapshot), "--as-of", NOW.isoformat(), "-q"]
    )
    assert taken.exit_code == 0, taken.stderr
    kv_source, d1_source, _ = open_local_sources(load_wrangler_config(files.config), now_ms=NOW_MS)
    copy = load_remote_copy(stub, kv_source, d1_source, namespace_id=files.kv_namespace_id,
                            database_name=files.d1_database_name)  # fmt: skip
    remote = write_remote_config(tmp / "remote", copy, kv_binding=files.kv_binding,
                                 d1_binding=files.d1_binding)  # fmt: skip
    return {"local": local, "snapshot": ("--snapshot", str(snapshot)),
            "remote": ("--remote", "--config", str(remote))}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_verdict_follows_the_product_table(
    case: Case,
    clean: SyntheticWorker,
    cf_server: CloudflareStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
                        "CLOUDFLARE_API_BASE_URL": cf_server.base_url}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    files = write_worker(tmp_path / "worker", clean)
    if case.seed is not None:
        case.seed(files)
    seen = {}
    for source, args in sources(files, cf_server, tmp_path).items():
        code, verified = run("verify", *args, *case.args)
        assert code == case.verify_exit, (source, verified["summary"], verified["consistency"])
        r_code, report = run("report", *args, *case.args, "--probe-repeat", "2")
        assert (report["verdict"], r_code) == (case.verdict, {READY: 0, NOT_READY: 3, ROLLBACK: 4}[
            case.verdict]), (source, report["decision"])
        by_category = verified["summary"]["by_category"]
        if case.category is not None:
            assert by_category[case.category] >= 1, (source, by_category)
        nothing = verified["consistency"]["nothing_compared"]
        assert (nothing is not None) is case.name.startswith("nothing"), (source, nothing)
        if case.name.startswith("nothing"):
            assert report["decision"]["reasons"][0].startswith("nothing was compared: ")
        seen[source] = sorted((f["id"], f["category"]) for f in verified["findings"])
    assert seen["local"] == seen["snapshot"] == seen["remote"]


SEEDS = [c.seed for c in CASES if c.seed is not None]


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picked=st.lists(st.sampled_from(range(len(SEEDS))), max_size=4, unique=True))
def test_ready_exactly_when_no_error_something_compared_and_every_required_metric_passes(
    picked: list[int], clean: SyntheticWorker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    files = write_worker(tmp_path_factory.mktemp("random") / "worker", clean)
    for i in picked:
        SEEDS[i](files)  # type: ignore[misc]
    code, report = run("report", "--config", str(files.config), "--probe-repeat", "0")
    errors = report["summary"]["by_severity"]["error"]
    compared = report["consistency"]["nothing_compared"] is None
    required_pass = all(m["status"] == "pass" for m in report["metrics"] if m["required"])
    assert (report["verdict"] == READY) is (errors == 0 and compared and required_pass)
    assert (code == 0) is (report["verdict"] == READY)
    if report["verdict"] == ROLLBACK:
        assert code == 4
