"""Remote mode end to end through the CLI, against the loopback Cloudflare API.

ONE dataset: a synthetic worker with seeded defects (`verifier.synth`) is written as local
wrangler state, and the same KV entries and D1 rows are loaded into the loopback API
(tests/remote_loading.py). Verified locally, remotely (`--remote`) and through a snapshot of
each, it must give identical findings and coverage — also when the API throttles, fails, drops
connections and returns short pages — and within the request budget of PRODUCT.md.

The API's retry backoff is shortened (`fast_retries`) so faults cost milliseconds, not seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kv2d1 import cmd_snapshot
from kv2d1.cli import main
from kv2d1.config import load_wrangler_config
from reports.progress import Progress
from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub, FaultPlan
from tests.remote_loading import RemoteCopy, load_remote_copy, write_remote_config
from verifier.calendar import today_et
from verifier.d1 import REMOTE_D1_CHUNK
from verifier.sources import remote
from verifier.sources.local import open_local_sources
from verifier.sources.remote import CloudflareClient, RemoteCredentials, RemoteD1, RetryPolicy
from verifier.sources.remote_support import record_time_travel_bookmark
from verifier.sources.snapshot import read_manifest
from verifier.synth import WorkerFiles, generate, write_worker

pytest_plugins = ("tests.remote_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
# The real time: the worker's TTLs (and its `expiring_soon` keys) are relative to it, and the
# loopback API, like KV, hides keys whose expiration has passed.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
KV_KINDS = ("list", "bulk_get", "get_value", "get_metadata")
UNRELATED_PER_JOB = 12  # keys no pattern maps: L > 2,000, so listing takes several pages


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> WorkerFiles:
    """The dataset, written once as a local wrangler project."""
    synthetic = generate(
        until=dt.date.fromisoformat(today_et(NOW)) - dt.timedelta(days=1),
        business_days=30,
        now=NOW,
        unrelated_per_job=UNRELATED_PER_JOB,
    )
    return write_worker(tmp_path_factory.mktemp("e2e") / "worker", synthetic)


@dataclass(frozen=True)
class World:
    """The worker's local project, its copy in the loopback API, and a config pointing there."""

    files: WorkerFiles
    stub: CloudflareStub
    copy: RemoteCopy
    remote_config: Path
    tmp: Path
    env: dict[str, str]

    def database(self) -> str:
        return f"D1 database predict-jobs ({self.copy.database_id}) in account {ACCOUNT}"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries back off for milliseconds, so injected faults do not slow the tests down."""
    policy = functools.partial(RetryPolicy, backoff_s=0.005, backoff_cap_s=0.02, timeout_s=10.0)
    monkeypatch.setattr(remote, "RetryPolicy", policy)


@pytest.fixture
def world(
    worker: WorkerFiles,
    cf_server: CloudflareStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_retries: None,
) -> World:
    config = load_wrangler_config(worker.config)
    kv, d1, _ = open_local_sources(config, now_ms=int(NOW.timestamp() * 1000))
    copy = load_remote_copy(
        cf_server,
        kv,
        d1,
        namespace_id=worker.kv_namespace_id,
        database_name=worker.d1_database_name,
    )
    remote_config = write_remote_config(
        tmp_path / "remote", copy, kv_binding=worker.kv_binding, d1_binding=worker.d1_binding
    )
    env = {
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
        "CLOUDFLARE_API_BASE_URL": cf_server.base_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return World(worker, cf_server, copy, remote_config, tmp_path, env)


def kv2d1(*args: str, code: int = 0) -> Result:
    """Run the CLI in-process; assert its exit code and that the token never shows."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.stderr
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    return result


def verify(*args: str, code: int = 3) -> dict[str, Any]:
    """`kv2d1 verify … --format json` at NOW; the report document."""
    result = kv2d1("verify", *args, "--format", "json", "--as-of", NOW.isoformat(), code=code)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def outcome(document: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """What must be identical whatever the source: (id, category) of each finding, coverage."""
    findings = sorted((f["id"], f["category"]) for f in document["findings"])
    return findings, document["coverage"]


def snapshot(path: Path, *args: str, code: int = 0) -> Result:
    return kv2d1("snapshot", *args, "-o", str(path), code=code)


def kv_requests(stub: CloudflareStub) -> int:
    counts = stub.counts()
    return sum(counts[kind] for kind in KV_KINDS)


# --- one dataset, four ways ---------------------------------------------------------------------


def test_local_remote_and_both_snapshots_find_the_same(world: World) -> None:
    local_config, remote_config = str(world.files.config), str(world.remote_config)
    local = verify("--config", local_config)
    remote_doc = verify("--remote", "--config", remote_config)

    local_snap, remote_snap = world.tmp / "local.sqlite", world.tmp / "remote.sqlite"
    snapshot(local_snap, "--config", local_config)
    snapshot(remote_snap, "--remote", "--config", remote_config)
    from_local_snap = verify("--snapshot", str(local_snap))
    from_remote_snap = verify("--snapshot", str(remote_snap))

    expected = outcome(local)
    assert outcome(remote_doc) == expected
    assert outcome(from_local_snap) == expected
    assert outcome(from_remote_snap) == expected
    seeded = Counter(d.category.value for d in world.files.seeded)
    assert set(Counter(category for _, category in expected[0])) == set(seeded)
    assert len(seeded) == 8  # every category of finding is in the dataset
    assert expected[1]["keys_listed"] == world.files.kv_keys > 2000

    local_manifest, remote_manifest = read_manifest(local_snap), read_manifest(remote_snap)
    assert local_manifest.content_digest == remote_manifest.content_digest
    assert remote_manifest.counts["kv_entries"] == world.files.kv_keys
    assert dict(remote_manifest.counts) == {
        "kv_entries": world.files.kv_keys,
        **world.files.d1_rows,
    }
    assert from_remote_snap["source"]["kind"] == "snapshot"
    assert from_remote_snap["source"]["captured_from"]["kind"] == "remote"
    assert TOKEN.encode() not in remote_snap.read_bytes()


def test_a_remote_verify_stays_within_the_request_budget(world: World) -> None:
    document = verify("--remote", "--config", str(world.remote_config))
    coverage, counts = document["coverage"], world.stub.counts()
    listed = coverage["keys_listed"]
    matching = listed - coverage["keys_skipped_by_pattern"] - coverage["keys_outside_window"]
    budget = math.ceil(listed / 1000) + math.ceil(matching / 100)
    assert kv_requests(world.stub) <= budget
    assert counts["list"] == math.ceil(listed / 1000)
    assert counts["bulk_get"] == math.ceil(matching / 100)
    # D1: 4 schema reads, the executions per date, then 3 ordered reads per chunk of dates
    executions = world.stub.d1(world.copy.database_id).execute(
        "SELECT count(*) FROM job_executions"
    ).fetchone()[0]
    assert 0 < executions <= REMOTE_D1_CHUNK  # this world is read in one chunk
    assert counts["d1_raw"] == 4 + 1 + 3
    assert set(counts) == {"list", "bulk_get", "d1_raw"}


def test_a_remote_snapshot_reads_every_value_once_in_bulk(world: World) -> None:
    snapshot(world.tmp / "s.sqlite", "--remote", "--config", str(world.remote_config))
    counts, keys = world.stub.counts(), world.files.kv_keys
    assert counts["list"] == math.ceil(keys / 1000)
    assert counts["bulk_get"] == math.ceil(keys / 100)
    pages = sum(math.ceil((rows + 1) / 5000) for rows in world.copy.rows.values())
    assert counts["d1_raw"] == 3 + pages  # the columns of each table, then keyset pages
    assert set(counts) == {"list", "bulk_get", "d1_raw"}


def test_faults_short_pages_and_dropped_connections_change_nothing(world: World) -> None:
    expected = outcome(verify("--config", str(world.files.config)))
    reference = world.tmp / "reference.sqlite"
    snapshot(reference, "--config", str(world.files.config))

    world.stub.set_faults(
        FaultPlan(seed=5, rate_limited=0.04, server_error=0.04, dropped=0.02, retry_after_s=0)
    )
    world.stub.list_page_caps = (1000, 7, 0, 400, 0, 1000)
    assert outcome(verify("--remote", "--config", str(world.remote_config))) == expected
    faulty = world.tmp / "faulty.sqlite"
    snapshot(faulty, "--remote", "--config", str(world.remote_config))
    assert read_manifest(faulty).content_digest == read_manifest(reference).content_digest

    faults = Counter(entry.fault for entry in world.stub.log if entry.fault)
    assert faults["429"] and faults["drop"] and faults["500"] + faults["502"] + faults["503"]
    assert sum(faults.values()) >= 0.05 * len(world.stub.log)
    short = [e for e in world.stub.log if e.kind == "list" and e.status == 200]
    assert len(short) > 2 * math.ceil(world.files.kv_keys / 1000)  # short and empty pages


def test_a_snapshot_killed_midway_resumes_to_the_same_digest(world: World) -> None:
    remote_config = str(world.remote_config)
    whole = world.tmp / "whole.sqlite"
    snapshot(whole, "--remote", "--config", remote_config)
    killed = world.tmp / "killed.sqlite"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kv2d1.cli import main; main(prog_name='kv2d1')",
            "snapshot",
            "--remote",
            "--config",
            remote_config,
            "-o",
            str(killed),
        ],
        cwd=ROOT,
        env={**os.environ, **world.env, "KV2D1_KILL_AFTER_PAGES": "2"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()  # SIGKILL after two committed pages
    half = read_manifest(killed)
    assert half.finished_at is None and half.counts["kv_entries"] == 2000

    unfinished = kv2d1("verify", "--snapshot", str(killed), code=1)
    assert unfinished.stderr == (
        f"Error: {killed} is an unfinished snapshot (started {half.started_at}, 2,000 KV "
        f"entries so far): finish it with kv2d1 snapshot -o {killed} --resume and the same "
        "source options\n"
    )
    world.stub.log.clear()
    resumed = snapshot(killed, "--remote", "--config", remote_config, "--resume")
    manifest = read_manifest(killed)
    assert manifest.content_digest == read_manifest(whole).content_digest
    assert manifest.resumed == 1
    assert resumed.stdout == ""
    assert resumed.stderr == cmd_snapshot.summary_line(manifest) + "\n"
    left = world.files.kv_keys - 2000
    assert world.stub.counts()["bulk_get"] == math.ceil(left / 100)  # no value read twice


# --- errors: one line, exit 1, never the token ----------------------------------------------------


def _bad_token(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "not-the-token-Pq7")
    return (
        f"the API refused the token (HTTP 401, code 10000: Authentication error) while querying "
        f"{world.database()}: give the token in CLOUDFLARE_API_TOKEN the 'D1 Read' permission on "
        f"account {ACCOUNT} (CLOUDFLARE_ACCOUNT_ID), or check that it has not expired"
    )


def _unknown_account(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    other = "ffffffffffffffffffffffffffffffff"
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", other)
    return (
        f"the API refused the token (HTTP 403, code 10000: Authentication error) while querying "
        f"D1 database predict-jobs ({world.copy.database_id}) in account {other}: give the "
        f"token in CLOUDFLARE_API_TOKEN the 'D1 Read' permission on account {other} "
        "(CLOUDFLARE_ACCOUNT_ID), or check that it has not expired"
    )


def _missing_namespace(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    missing = "0" * 32
    copy = dataclasses.replace(world.copy, namespace_id=missing)
    write_remote_config(
        world.remote_config.parent,
        copy,
        kv_binding="MARKET_ANALYSIS_CACHE",
        d1_binding="PREDICT_JOBS_DB",
    )
    return (
        f"the KV namespace was not found (HTTP 404, code 10013: list keys: 'namespace not "
        f"found') while listing the keys of KV namespace {missing}: check the binding's id in "
        "the wrangler config and CLOUDFLARE_ACCOUNT_ID"
    )


def _missing_database(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    missing = "00000000-0000-4000-8000-000000000000"
    copy = dataclasses.replace(world.copy, database_id=missing)
    write_remote_config(
        world.remote_config.parent,
        copy,
        kv_binding="MARKET_ANALYSIS_CACHE",
        d1_binding="PREDICT_JOBS_DB",
    )
    return (
        f"the D1 database was not found (HTTP 404, code 7404: The database {missing} could "
        f"not be found) while querying D1 database predict-jobs ({missing}) in account "
        f"{ACCOUNT}: check database_id in the wrangler config and CLOUDFLARE_ACCOUNT_ID"
    )


def _non_json(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    world.stub.set_faults(FaultPlan(non_json=1.0))
    return (
        "the API answered HTTP 200 with a body that is not JSON (cut short, or a proxy's page) "
        f"while querying {world.database()}; gave up after 6 attempts: check "
        "https://www.cloudflarestatus.com and run again later"
    )


def _timeout(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    world.stub.set_faults(FaultPlan(delay_s=1.0))
    policy = functools.partial(RetryPolicy, max_attempts=2, timeout_s=0.2, backoff_s=0.001)
    monkeypatch.setattr(remote, "RetryPolicy", policy)
    return (
        f"the API did not answer within 0.2 s while querying {world.database()}; gave up after "
        "2 attempts: check https://www.cloudflarestatus.com and run again later"
    )


@pytest.mark.parametrize("command", ["verify", "snapshot"])
@pytest.mark.parametrize(
    "break_it",
    [_bad_token, _unknown_account, _missing_namespace, _missing_database, _non_json, _timeout],
)
def test_remote_failures_are_one_error_line(
    world: World, monkeypatch: pytest.MonkeyPatch, command: str, break_it: Any
) -> None:
    message = break_it(world, monkeypatch)
    out = world.tmp / "s.sqlite"
    args = ["-o", str(out)] if command == "snapshot" else ["--as-of", NOW.isoformat()]
    result = kv2d1(command, "--remote", "--config", str(world.remote_config), *args, code=1)
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""
    assert not out.exists()  # a capture that got nothing leaves no file behind


# --- the snapshot command ---------------------------------------------------------------------------


def test_the_snapshot_command_prints_one_summary_line_and_nothing_on_stdout(world: World) -> None:
    path = world.tmp / "s.sqlite"
    result = snapshot(path, "--remote", "--config", str(world.remote_config))
    manifest = read_manifest(path)
    rows = world.files.d1_rows
    assert result.stdout == ""
    assert result.stderr == (
        f"Snapshot {path}: {world.files.kv_keys:,} KV entries, {rows['job_executions']:,} "
        f"job_executions, {rows['analysis_results']:,} analysis_results, "
        f"{rows['report_snapshots']:,} report_snapshots (from remote); "
        f"sha256 {manifest.content_digest}\n"
    )
    again = snapshot(path, "--remote", "--config", str(world.remote_config), code=1)
    assert again.stderr == (
        f"Error: {path} already exists: continue its capture with --resume, "
        "or choose another file with -o\n"
    )


def test_progress_goes_to_stderr_only_and_quiet_silences_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []

    def terminal(stage: str, *, quiet: bool, units: dict[str, str]) -> Progress:
        asked.append(quiet)  # as if stderr were a terminal
        return Progress(stage, enabled=not quiet, units=units, min_interval_s=0)

    monkeypatch.setattr(Progress, "for_terminal", terminal)
    shown = snapshot(world.tmp / "a.sqlite", "--remote", "--config", str(world.remote_config))
    quiet = snapshot(world.tmp / "b.sqlite", "--remote", "--config", str(world.remote_config), "-q")
    assert asked == [False, True]
    assert shown.stdout == quiet.stdout == ""
    assert "\rkv: 1,000 keys, " in shown.stderr and "\rjob_executions: " in shown.stderr
    assert " rows, " in shown.stderr
    assert "\r" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing option '-o' / '--output'"),
        (("-o", "x.sqlite", "--since", "2026-11-01"), "a snapshot captures every key"),
        (("-o", "x.sqlite", "--format", "json"), "--format does not apply"),
        (("-o", "x.sqlite", "--snapshot", "y.sqlite"), "--snapshot cannot be its input"),
    ],
)
def test_snapshot_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, ["snapshot", *args])
    assert result.exit_code == 2
    assert message in result.stderr


# --- D1 Time Travel before a remote write -------------------------------------------------------------


def test_the_time_travel_bookmark_is_read_before_a_write_and_names_its_restore(
    world: World,
) -> None:
    client = CloudflareClient(RemoteCredentials(TOKEN, ACCOUNT, world.stub.base_url))
    d1 = RemoteD1(client, world.copy.database_id, name="predict-jobs")
    before, command = record_time_travel_bookmark(d1, "predict-jobs")
    assert command == f"wrangler d1 time-travel restore predict-jobs --bookmark {before}"
    d1.execute_batch([("DELETE FROM report_snapshots WHERE id = ?", ["1"])])
    after, _ = record_time_travel_bookmark(d1)
    assert before < after  # bookmarks sort oldest first
    bookmark_gets = [e for e in world.stub.log if e.kind == "d1_bookmark"]
    assert [(e.method, e.status) for e in bookmark_gets] == [("GET", 200), ("GET", 200)]
    assert bookmark_gets[0].path.endswith(
        f"/d1/database/{world.copy.database_id}/time_travel/bookmark"
    )
