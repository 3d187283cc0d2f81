"""`kv2d1 demo`: builds a worker, verifies, backfills, verifies again, reports."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kv2d1.cli import main


def test_demo_runs_the_whole_job_and_can_be_rerun(tmp_path: Path) -> None:
    target = tmp_path / "worker"
    result = CliRunner().invoke(main, ["demo", str(target), "--business-days", "20"])
    assert result.exit_code == 0, result.output
    assert "0 records still missing in D1" in result.output
    assert (target / "report.html").read_text().startswith("<!DOCTYPE html>")
    seeded = json.loads((target / "SEEDED_DEFECTS.json").read_text())
    assert seeded
    # a second demo in the same place replaces the first
    again = CliRunner().invoke(main, ["demo", str(target), "--business-days", "20"])
    assert again.exit_code == 0, again.output
    verify = CliRunner().invoke(main, ["verify", "--config", str(target / "wrangler.toml"), "--format", "json"])
    assert verify.exit_code == 3  # the seeded defects are found
    doc = json.loads(verify.stdout)
    assert doc["summary"]["by_category"]["field_mismatch"] > 0


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["demo", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a kv2d1 demo" in result.stderr
    assert (tmp_path / "mine.txt").exists()
