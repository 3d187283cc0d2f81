"""One clock per run, end to end: a week later, `--as-of` the worker's creation time gives the
findings of the day the data was made, on local state, on a snapshot and through the loopback
API; a snapshot is judged at its capture time without being told.

The later runs are real `kv2d1` processes under libfaketime (Debian's `faketime`, which `make
test` installs) with the wall clock moved 7 days ahead; the loopback API stays on the real clock,
as Cloudflare would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_remote_e2e import (  # noqa: F401  (fixtures)
    NOW,
    ROOT,
    World,
    fast_retries,
    kv2d1,
    outcome,
    worker,
    world,
)

pytest_plugins = ("tests.remote_fixtures",)

A_WEEK = dt.timedelta(days=7)
COMMANDS: dict[str, tuple[str, ...]] = {
    "verify": ("verify",),
    "report": ("report", "--probe-repeat", "0"),
    "backfill": ("backfill", "--dry-run"),
}
EXIT = {"verify": 3, "report": 4, "backfill": 0}  # the worker has findings of every category


def faketime() -> str:
    """The faketime binary; missing is a failure (CI installs it), never a skip."""
    found = shutil.which("faketime")
    if found is None:
        pytest.fail("faketime is missing: `make test` installs Debian's faketime package")
    return found


def later(world: World, *args: str, code: int) -> dict[str, Any]:
    """`kv2d1 ARGS --format json` in its own process, the wall clock a week ahead of this one's
    (which `make test-clock` may itself have moved: the child's time is absolute, in UTC)."""
    program = "from kv2d1.cli import main; main(prog_name='kv2d1')"
    start = f"@{dt.datetime.now(dt.UTC) + A_WEEK:%Y-%m-%d %H:%M:%S}"
    done = subprocess.run(
        [faketime(), "-f", start, sys.executable, "-c", program, *args, "--format", "json"],
        cwd=ROOT,
        env={**os.environ, **world.env, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def today(*args: str, code: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(kv2d1(*args, "--format", "json", code=code).stdout)
    return document


def judged(document: dict[str, Any]) -> tuple[Any, ...]:
    """What one clock must keep equal: findings, coverage, verdict, the backfill's plan."""
    block = document.get("backfill") or {}
    return (*outcome(document), document.get("verdict"), block.get("jobs"), block.get("rows"))


def sources(world: World, tmp: Path) -> dict[str, tuple[str, ...]]:
    snapshot = tmp / "captured.sqlite"
    kv2d1("snapshot", "--config", str(world.files.config), "-o", str(snapshot),
          "--as-of", NOW.isoformat())  # fmt: skip
    return {
        "local": ("--config", str(world.files.config)),
        "snapshot": ("--snapshot", str(snapshot)),
        "remote": ("--remote", "--config", str(world.remote_config)),
    }


@pytest.mark.slow
def test_a_week_later_as_of_the_creation_time_gives_the_findings_of_that_day(
    world: World, tmp_path: Path
) -> None:
    as_of = ("--as-of", NOW.isoformat())
    for name, source in sources(world, tmp_path).items():
        for command, args in COMMANDS.items():
            then = today(*args, *source, *as_of, code=EXIT[command])
            now = later(world, *args, *source, *as_of, code=EXIT[command])
            assert judged(now) == judged(then), f"{command} on {name}"
            assert now["as_of"] == {"instant": NOW.isoformat(), "from": "option"}
            assert now["generated_at"] > then["generated_at"]  # the start is the wall clock's
    # The control: the same local verify a week later without --as-of sees another world (the
    # short-lived keys have expired), so the runs above really ran on the moved clock.
    moved = later(world, "verify", "--config", str(world.files.config), code=3)
    assert moved["as_of"]["from"] == "clock" and moved["as_of"]["instant"] > NOW.isoformat()
    assert judged(moved) != judged(today("verify", "--config", str(world.files.config), *as_of,
                                         code=3))  # fmt: skip


@pytest.mark.slow
def test_a_snapshot_is_judged_at_its_capture_time_however_late_it_is_verified(
    world: World, tmp_path: Path
) -> None:
    captured = tmp_path / "captured.sqlite"
    kv2d1("snapshot", "--config", str(world.files.config), "-o", str(captured),
          "--as-of", NOW.isoformat())  # fmt: skip
    then = today("verify", "--config", str(world.files.config), "--as-of", NOW.isoformat(), code=3)
    assert "expiring_soon" in {f["category"] for f in then["findings"]}  # a key of hours to live
    later_on = later(world, "verify", "--snapshot", str(captured), code=3)  # no --as-of
    assert later_on["as_of"] == {"instant": NOW.isoformat(), "from": "snapshot"}
    assert judged(later_on) == judged(then)
    # Told another instant, the snapshot is judged then: the short-lived keys are gone.
    week = later(world, "verify", "--snapshot", str(captured), "--as-of", "2099-01-01", code=3)
    assert week["coverage"]["keys_listed"] < then["coverage"]["keys_listed"]
    assert "expiring_soon" not in {f["category"] for f in week["findings"]}
