"""`kv2d1 verify` as a user runs it: exit codes, one `Error:` line for bad input, JSON output."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from kv2d1.cli import main
from tests import payload_examples as pe
from verifier.model import KvEntry
from verifier.profile import schema_dir
from verifier.sources.local import d1_sqlite_path
from verifier.sources.localwriter import LocalKvWriter, create_local_d1

KV_ID = "0123456789abcdef0123456789abcdef"
D1_ID = "00000000-0000-0000-0000-000000000001"
NOW = "2026-11-23T12:00:00Z"
WRANGLER_TOML = f"""
name = "w"
compatibility_date = "2026-04-01"
[[kv_namespaces]]
binding = "MARKET_ANALYSIS_CACHE"
id = "{KV_ID}"
[[d1_databases]]
binding = "PREDICT_JOBS_DB"
database_name = "predict-jobs"
database_id = "{D1_ID}"
"""


def make_worker(root: Path, entries: list[KvEntry], *, schema: bool = True) -> Path:
    (root / "wrangler.toml").write_text(WRANGLER_TOML)
    v3 = root / ".wrangler" / "state" / "v3"
    with LocalKvWriter(v3, KV_ID) as writer:
        writer.put_many(entries)
    db = create_local_d1(v3, D1_ID)
    with sqlite3.connect(db) as conn:
        if schema:
            conn.executescript((schema_dir() / "scheduled-jobs.sql").read_text())
    return root


def run(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["verify", "--config", str(root / "wrangler.toml"), "--as-of", NOW, *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    return make_worker(tmp_path, [KvEntry("analysis_2026-11-16", pe.kv_value(pe.shape_b("2026-11-16")))])


def test_findings_exit_3_and_json_validates(worker: Path) -> None:
    code, out, _ = run(worker, "--since", "2026-11-16", "--until", "2026-11-16", "--format", "json")
    assert code == 3
    doc = json.loads(out)
    schema = json.loads((schema_dir() / "report.schema.json").read_text())
    Draft202012Validator(schema).validate(doc)
    assert doc["summary"]["by_category"]["missing_in_d1"] == 1
    assert doc["coverage"]["keys_listed"] == 1


def test_a_window_with_nothing_to_compare_is_not_consistent(worker: Path) -> None:
    code, out, err = run(worker, "--since", "2026-11-07", "--until", "2026-11-07", "--format", "text")  # a Saturday
    assert code == 3, out
    reason = "none of the 1 keys the profile matched is in the window (check --since / --until)"
    assert f"Nothing to compare: {reason}. Not consistent: verify exits 3." in out
    assert "No findings" not in out and err == f"Nothing to compare: {reason}\n"


def test_output_file_by_extension(worker: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    code, _, _ = run(worker, "-o", str(target))
    assert code == 3
    assert json.loads(target.read_text())["command"] == "verify"


def test_missing_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", "--config", str(tmp_path / "wrangler.toml")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_binding_lists_the_existing_ones(worker: Path) -> None:
    code, _, err = run(worker, "--kv-binding", "NOPE")
    assert code == 1
    assert err.strip() == "Error: no KV binding 'NOPE' in wrangler.toml; bindings: MARKET_ANALYSIS_CACHE"


def test_missing_state_says_how_to_create_it(tmp_path: Path) -> None:
    (tmp_path / "wrangler.toml").write_text(WRANGLER_TOML)
    code, _, err = run(tmp_path)
    assert code == 1
    assert err.startswith("Error: no local KV state") and "wrangler" in err
    assert len(err.strip().splitlines()) == 1


def test_d1_without_plan_tables_names_the_schema_file(tmp_path: Path) -> None:
    make_worker(tmp_path, [], schema=False)
    code, _, err = run(tmp_path)
    assert code == 1
    assert "schema/scheduled-jobs.sql" in err
    assert "wrangler d1 execute predict-jobs --local --file schema/scheduled-jobs.sql" in err


def test_corrupt_sqlite_file(worker: Path) -> None:
    db = d1_sqlite_path(worker / ".wrangler" / "state" / "v3", D1_ID)
    db.write_bytes(b"this is not a database" * 100)
    code, _, err = run(worker)
    assert code == 1
    assert err.startswith("Error: ") and "not a readable SQLite database" in err
    assert "Traceback" not in err


def test_kv_value_that_is_not_utf8_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry("analysis_2026-11-16", b"\xff\xfe\x00binary")])
    code, out, err = run(tmp_path, "--format", "json")
    assert code == 3
    assert "Traceback" not in err
    [finding] = [f for f in json.loads(out)["findings"] if f["category"] == "invalid_kv_payload"]
    assert "not UTF-8" in finding["message"]


def test_bad_dates_are_usage_errors(worker: Path) -> None:
    code, _, err = run(worker, "--since", "2026-13-01")
    assert code == 2
    assert "is not a date" in err
    code, _, err = run(worker, "--since", "2026-11-20", "--until", "2026-11-10")
    assert code == 2


def test_a_snapshot_edited_after_its_capture_is_one_error_line(worker: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "week.sqlite"
    taken = CliRunner().invoke(main, ["snapshot", "--config", str(worker / "wrangler.toml"),
                                      "--as-of", NOW, "-o", str(snapshot)])  # fmt: skip
    assert taken.exit_code == 0, taken.stderr
    with sqlite3.connect(snapshot) as conn:
        conn.execute("UPDATE kv_entries SET value = CAST('{\"edited\": 1}' AS BLOB)")
    result = CliRunner().invoke(main, ["verify", "--snapshot", str(snapshot), "--format", "json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"Error: snapshot {snapshot} does not match its content digest")
    assert result.stderr.count("\n") == 1 and "--no-verify-digest" in result.stderr
    # Read anyway on request: the report says the digest was not verified.
    anyway = CliRunner().invoke(
        main, ["verify", "--snapshot", str(snapshot), "--no-verify-digest", "--format", "json"]
    )
    assert anyway.exit_code == 3, anyway.stderr
    assert json.loads(anyway.stdout)["source"]["digest_verified"] is False


def test_no_verify_digest_without_a_snapshot_is_a_usage_error(worker: Path) -> None:
    code, _, err = run(worker, "--no-verify-digest")
    assert code == 2 and "--no-verify-digest applies to --snapshot FILE only" in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--remote",), "--remote"),
        (("--persist-to", "state"), "--persist-to"),
        (("--kv-binding", "KV", "--d1-binding", "DB"), "--kv-binding, --d1-binding"),
        (("--config", "wrangler.toml", "--preview"), "--config, --preview/--no-preview"),
    ],
)
def test_options_a_snapshot_would_ignore_are_usage_errors(
    tmp_path: Path, extra: tuple[str, ...], named: str
) -> None:
    result = CliRunner().invoke(main, ["verify", "--snapshot", str(tmp_path / "s.sqlite"), *extra])
    assert result.exit_code == 2
    assert f"--snapshot reads both sides from a file: {named} would be ignored" in result.stderr
