"""Bad-input matrix rows not covered elsewhere: each is one `Error:` line or a finding.

Never a traceback, never exit 0 on failure, never a false `ready` from `kv2d1 report`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kv2d1.cli import main
from tests import payload_examples as pe
from tests.conftest import ReliabilityCounts
from tests.kv2d1.test_cli_verify import NOW, make_worker
from tests.reliability.conftest import RemoteWorld, kv2d1
from verifier.model import KvEntry
from verifier.sources.local import d1_sqlite_path
from verifier.sources.snapshot import open_snapshot_sources

pytest_plugins = ("tests.remote_fixtures",)

KEY = "analysis_2026-11-16"
MIB = 1024 * 1024


def run(root: Path, command: str, *args: str) -> Result:
    """`kv2d1 COMMAND` on the worker in `root`, JSON output, at the fixed NOW."""
    config = ["--config", str(root / "wrangler.toml"), "--as-of", NOW, "-q"]
    return CliRunner().invoke(main, [command, *config, *args])


def assert_no_traceback(result: Result) -> None:
    """No Python exception escaped, and nothing looks like a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output


def invalid_payload_reason(result: Result) -> str:
    """The reason of the one invalid_kv_payload finding of a JSON verify."""
    assert result.exit_code == 3, result.output
    [finding] = [
        f for f in json.loads(result.stdout)["findings"] if f["category"] == "invalid_kv_payload"
    ]
    return str(finding["message"])


BAD_VALUES: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{this is not json", "not JSON"),
    "JSON of the wrong shape": (b'{"unexpected": [1, 2, 3]}', ""),
    "NaN literal": (b'{"symbols": NaN}', "not JSON"),
    "Infinity literal": (b'{"x": -Infinity}', "not JSON"),
    "JSON nested 100k levels": (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    "25 MiB value": (b'"' + b"x" * (25 * MIB) + b'"', ""),
    "empty value": (b"", "not JSON"),
}


@pytest.mark.reliability(
    kind="bad_input",
    case="KV values that are not JSON or of no shape",
    expected="invalid_kv_payload finding, exit 3",
)
@pytest.mark.parametrize("case", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_a_bad_kv_value_is_a_finding_not_a_crash(tmp_path: Path, case: str) -> None:
    value, reason = BAD_VALUES[case]
    make_worker(tmp_path, [KvEntry(KEY, value)])
    result = run(tmp_path, "verify", "--format", "json")
    assert_no_traceback(result)
    assert reason in invalid_payload_reason(result)


@pytest.mark.reliability(
    kind="bad_input",
    case="numbers beyond 2^53 in a payload",
    expected="read exactly or a finding; no crash",
)
def test_huge_numbers_do_not_crash(tmp_path: Path) -> None:
    payload: Any = pe.shape_b("2026-11-16")
    text = json.dumps(payload).replace(
        '"symbols_analyzed"', '"huge": 123456789012345678901234567890, "symbols_analyzed"', 1
    )
    make_worker(tmp_path, [KvEntry(KEY, text.encode())])
    result = run(tmp_path, "verify", "--format", "json")
    assert_no_traceback(result)
    assert result.exit_code == 3  # D1 lacks the job: missing_in_d1
    assert {f["category"] for f in json.loads(result.stdout)["findings"]} >= {"missing_in_d1"}


def break_rows(db: Path) -> None:
    """Rows a CHECK would refuse, a wrong type and JSON columns that are not JSON."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(
            "INSERT INTO job_executions (job_type, execution_date, execution_time, status, duration_ms, "
            "symbols_processed, metadata) VALUES ('analysis', '2026-11-16', '2026-11-16T13:30:00Z', "
            "'exploded', 'slow', -4, '{not json')"
        )  # fmt: skip
        exec_id = conn.execute("SELECT max(id) FROM job_executions").fetchone()[0]
        conn.execute(
            "INSERT INTO analysis_results (execution_id, symbol, sentiment, confidence, signals) "
            "VALUES (?, 'AAPL', 'bullish', 7.5, 'nope')", (exec_id,)
        )  # fmt: skip


@pytest.mark.reliability(
    kind="bad_input",
    case="D1 rows breaking CHECKs, wrong types, JSON columns not JSON",
    expected="invalid_d1_row findings, exit 3",
)
def test_d1_rows_breaking_the_schema_are_findings(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    break_rows(
        d1_sqlite_path(
            tmp_path / ".wrangler" / "state" / "v3", "00000000-0000-0000-0000-000000000001"
        )
    )
    result = run(tmp_path, "verify", "--format", "json")
    assert_no_traceback(result)
    assert result.exit_code == 3
    fields = {
        f.get("field")
        for f in json.loads(result.stdout)["findings"]
        if f["category"] == "invalid_d1_row"
    }
    assert {
        "status",
        "duration_ms",
        "symbols_processed",
        "metadata",
        "confidence",
        "signals",
    } <= fields


@pytest.mark.reliability(
    kind="bad_input",
    case="D1 table missing a column",
    expected="one Error line naming the column, exit 1",
)
def test_a_missing_column_is_one_error_line(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    db = d1_sqlite_path(
        tmp_path / ".wrangler" / "state" / "v3", "00000000-0000-0000-0000-000000000001"
    )
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE analysis_results DROP COLUMN news_count")
    result = run(tmp_path, "verify")
    assert_no_traceback(result)
    assert (
        result.exit_code == 1
        and result.stderr.startswith("Error: ")
        and result.stderr.count("\n") == 1
    )
    assert "news_count" in result.stderr


@pytest.mark.reliability(
    kind="bad_input",
    case="dates outside any calendar (--since 2026-02-30, 0000-01-01)",
    expected="usage error, exit 2",
)
@pytest.mark.parametrize("date", ["2026-02-30", "0000-01-01", "2026-1-5", "yesterday"])
def test_impossible_dates_are_usage_errors(tmp_path: Path, date: str) -> None:
    make_worker(tmp_path, [])
    result = run(tmp_path, "verify", "--since", date)
    assert_no_traceback(result)
    assert result.exit_code == 2 and "is not a date" in result.stderr


@pytest.mark.reliability(
    kind="bad_input",
    case="dates at the calendar's edges (--since 1899-01-01, --until 9999-12-31)",
    expected="runs; no traceback",
)
@pytest.mark.parametrize(
    "args", [("--since", "1899-01-01"), ("--until", "9999-12-31"), ("--since", "9999-12-31")]
)
def test_extreme_dates_run_without_a_traceback(tmp_path: Path, args: tuple[str, str]) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    result = run(tmp_path, "verify", "--format", "json", *args)
    assert_no_traceback(result)
    assert result.exit_code in (0, 3) or result.stderr.startswith("Error: ")


@pytest.mark.reliability(
    kind="bad_input", case="options in wrong combinations", expected="usage error, exit 2"
)
@pytest.mark.parametrize(
    "args",
    [
        ("verify", "--snapshot", "s.sqlite", "--remote"),
        ("verify", "--since", "2026-11-20", "--until", "2026-11-01"),
        ("verify", "--format", "yaml"),
        ("snapshot",),
    ],
)
def test_wrong_option_combinations_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    make_worker(tmp_path, [])
    result = run(tmp_path, *args)
    assert_no_traceback(result)
    assert result.exit_code == 2, result.output


@pytest.mark.reliability(
    kind="bad_input",
    case="report over an invalid KV payload",
    expected="not ready (exit 3), never ready",
)
def test_a_report_over_bad_input_is_never_ready(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry(KEY, b"\xff not json")])
    result = run(
        tmp_path, "report", "--format", "json", "--since", "2026-11-16", "--until", "2026-11-16"
    )
    assert_no_traceback(result)
    assert result.exit_code in (3, 4) and json.loads(result.stdout)["verdict"] != "ready"


RESERVED = "?#%/&+=;:@$,[]! '\"<>\\^`{|}~"


@pytest.mark.reliability(
    kind="bad_input",
    case="keys of 512 bytes and with every reserved URL character",
    expected="read back exactly, once",
)
def test_keys_with_reserved_characters_and_512_bytes_read_back_exactly(
    remote_world: RemoteWorld, reliability_counts: ReliabilityCounts
) -> None:
    keys = ["odd/" + RESERVED, "é" * 10 + RESERVED, "k" * 512, "%2F..%2F" + "ü" * 200]
    assert len(keys[2].encode()) == 512 and len(keys[3].encode()) <= 512
    for key in keys:
        remote_world.stub.kv_put(remote_world.copy.namespace_id, key, b"v:" + key.encode())
    out = remote_world.tmp / "keys.sqlite"
    result = kv2d1(
        "snapshot", "--remote", "--config", str(remote_world.remote_config), "-q", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    kv, _, _ = open_snapshot_sources(out)
    listed = [k.name for k in kv.iter_keys() if k.name in keys]
    reliability_counts.record(expected=keys, actual=listed)
    assert {e.key: e.value for e in kv.get_many(keys)} == {k: b"v:" + k.encode() for k in keys}
    assert (reliability_counts.lost, reliability_counts.duplicated) == (0, 0)


@pytest.mark.reliability(
    kind="bad_input",
    case="report over a window outside the data (1899, 9999)",
    expected="not ready (exit 3): an empty window is never ready",
)
@pytest.mark.parametrize(
    "args",
    [
        ("--since", "9999-12-31"),
        ("--until", "1899-01-01"),
        ("--since", "1899-01-01", "--until", "1899-01-02"),
    ],
)
def test_a_report_over_an_empty_window_is_never_ready(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    result = run(tmp_path, "report", "--format", "json", *args)
    assert_no_traceback(result)
    assert result.exit_code == 3 and json.loads(result.stdout)["verdict"] == "not_ready"


BAD_CREDENTIALS = {
    "token with a newline": ({"CLOUDFLARE_API_TOKEN": "tok-abcdef0123456789\nX-Evil: 1"},
                             "CLOUDFLARE_API_TOKEN is not a valid token"),
    "token with a space": ({"CLOUDFLARE_API_TOKEN": "tok-abcdef 0123456789"},
                           "CLOUDFLARE_API_TOKEN is not a valid token"),
    "token not ASCII": ({"CLOUDFLARE_API_TOKEN": "tok-abcdéf0123456789"},
                        "CLOUDFLARE_API_TOKEN is not a valid token"),
    "base URL ftp://": ({"CLOUDFLARE_API_BASE_URL": "ftp://127.0.0.1/client/v4"},
                        "CLOUDFLARE_API_BASE_URL 'ftp://127.0.0.1/client/v4' is not an http(s) URL"),
    "base URL not a URL": ({"CLOUDFLARE_API_BASE_URL": "not a url"},
                           "CLOUDFLARE_API_BASE_URL 'not a url' is not an http(s) URL"),
}  # fmt: skip


@pytest.mark.reliability(
    kind="bad_input",
    case="API token with a newline, a space or non-ASCII; a base URL that is not http(s)",
    expected="one Error line before any request, never retried, token never echoed",
)
@pytest.mark.parametrize("case", list(BAD_CREDENTIALS), ids=list(BAD_CREDENTIALS))
def test_bad_credentials_are_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    env, message = BAD_CREDENTIALS[case]
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "023e105f4ecef8ad9ca31a8372d0c353")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", "http://127.0.0.1:9/client/v4")  # nobody there
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    make_worker(tmp_path, [])
    result = run(tmp_path, "verify", "--remote")
    assert_no_traceback(result)
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1  # one line: refused before a request, not retried
    token = env.get("CLOUDFLARE_API_TOKEN", "")
    assert not token or (token not in result.output and "X-Evil" not in result.output)


def _kv_file(root: Path) -> Path:
    from tests.kv2d1.test_cli_verify import KV_ID
    from verifier.sources.local import kv_sqlite_path

    return kv_sqlite_path(root / ".wrangler" / "state" / "v3", KV_ID)


@pytest.mark.reliability(
    kind="bad_input",
    case="KV expiration stored as TEXT in _mf_entries",
    expected="one Error line naming the key and value, exit 1",
)
def test_an_expiration_that_is_not_a_number_is_one_error_line(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    with sqlite3.connect(_kv_file(tmp_path)) as conn:
        conn.execute("UPDATE _mf_entries SET expiration = 'soon'")
    result = run(tmp_path, "verify", "--format", "json")
    assert_no_traceback(result)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: KV key {KEY!r} in ")
    assert "has the expiration 'soon', not a time in epoch ms" in result.stderr


@pytest.mark.reliability(
    kind="security",
    case="a KV blob file that is a symlink (to /etc/passwd)",
    expected="refused, never followed: one Error line; nothing copied into a snapshot",
)
def test_a_symlinked_blob_is_never_followed(tmp_path: Path) -> None:
    make_worker(tmp_path, [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])
    with sqlite3.connect(_kv_file(tmp_path)) as conn:
        (blob_id,) = conn.execute("SELECT blob_id FROM _mf_entries").fetchone()
    from tests.kv2d1.test_cli_verify import KV_ID
    from verifier.sources.local import kv_blob_dir

    blob = kv_blob_dir(tmp_path / ".wrangler" / "state" / "v3", KV_ID) / blob_id
    assert blob.is_file()
    blob.unlink()
    blob.symlink_to("/etc/passwd")
    for command, extra in (("verify", ("--format", "json")), ("snapshot", ("-o", str(tmp_path / "s")))):
        result = run(tmp_path, command, *extra)
        assert_no_traceback(result)
        assert result.exit_code == 1, result.output
        assert "is a symbolic link; kv2d1 never follows a link out of the local state" in result.stderr
        assert "root:" not in result.output
    assert not (tmp_path / "s").exists() or b"root:" not in (tmp_path / "s").read_bytes()
