"""Ctrl-C at any moment: one `Error: interrupted` line, exit 130, no traceback, nothing lost.

Real `kv2d1` processes (the console script's entry point) get SIGINT after a delay that walks
from start-up (imports) through verify and the backfill's writes; a rerun after each interrupted
backfill finishes it, and D1 then lacks nothing and holds no duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verifier.synth import WorkerFiles, generate, write_worker

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
DELAYS_S = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 1.1, 1.4)  # imports (to ~0.6 s), then the run


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> WorkerFiles:
    synthetic = generate(until=dt.date(2026, 11, 27), business_days=40, now=NOW)
    return write_worker(tmp_path_factory.mktemp("interrupt") / "worker", synthetic)


def kv2d1(files: WorkerFiles, *args: str) -> list[str]:
    program = "from kv2d1.__main__ import run; run()"
    return [sys.executable, "-c", program, *args, "--config", str(files.config),
            "--as-of", NOW.isoformat(), "--format", "json", "-q"]  # fmt: skip


def interrupted(argv: list[str], delay_s: float) -> subprocess.CompletedProcess[str]:
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    time.sleep(delay_s)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def copy_of(template: WorkerFiles, directory: Path) -> WorkerFiles:
    shutil.copytree(template.directory, directory)
    moved = {f: Path(str(getattr(template, f)).replace(str(template.directory), str(directory)))
             for f in ("directory", "config", "persist_to", "v3_dir", "d1_path", "seeded_file")}  # fmt: skip
    import dataclasses

    return dataclasses.replace(template, **moved)


@pytest.mark.slow
@pytest.mark.reliability(
    kind="fault",
    case="SIGINT (Ctrl-C) at 10 points from start-up through verify and backfill",
    expected="Error: interrupted, exit 130, no traceback; a rerun resumes, nothing lost or doubled",
)
@pytest.mark.parametrize("delay_s", DELAYS_S)
def test_ctrl_c_at_any_moment_is_one_line_and_a_rerun_finishes(
    template: WorkerFiles, tmp_path: Path, delay_s: float
) -> None:
    files = copy_of(template, tmp_path / "worker")
    for command in ("verify", "backfill"):
        done = interrupted(kv2d1(files, command), delay_s)
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == 130:
            assert done.stderr.strip().splitlines() == ["Error: interrupted"], done.stderr
            assert done.stdout == ""
        else:  # it finished before the signal (or the signal came while Python shut down)
            assert done.returncode in ({"verify": 3, "backfill": 0}[command], -signal.SIGINT)
            assert json.loads(done.stdout)["command"] == command  # the whole report
    rerun = subprocess.run(kv2d1(files, "backfill"), cwd=ROOT, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    after = subprocess.run(kv2d1(files, "verify"), cwd=ROOT, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    counts = json.loads(after.stdout)["summary"]["by_category"]
    assert counts["missing_in_d1"] == 0 and counts["expiring_soon"] == 0
    seeded_duplicates = sum(1 for d in template.seeded if d.category == "duplicate_in_d1")
    assert counts["duplicate_in_d1"] == seeded_duplicates
