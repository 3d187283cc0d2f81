"""`--redact`: reports and snapshots carry salted hashes instead of KV/D1 values."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import NOW, findings_of, kv2d1, small_worker
from verifier.sources.snapshot import KEY_COLUMNS, read_manifest
from verifier.synth import WorkerFiles

SALT = "pepper-for-tests"


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerFiles:
    monkeypatch.setenv("KV2D1_REDACT_SALT", SALT)
    return small_worker(tmp_path / "w")


def hashed(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "sha256:" + hashlib.sha256((SALT + text).encode()).hexdigest()[:16]


def verify(files: WorkerFiles, *args: str) -> Any:
    return kv2d1("verify", "--config", str(files.config), "-q", "--as-of", NOW.isoformat(), *args)


def secret_values(findings: list[dict[str, Any]]) -> set[str]:
    """The distinctive text values of the findings: not enum words like `success`, which any
    report prints as labels anyway."""
    values = [f[k] for f in findings for k in ("kv_value", "d1_value")]
    return {v for v in values if isinstance(v, str) and len(v) >= 6 and not v.isalpha()}


@pytest.mark.reliability(
    kind="security",
    case="--redact on a JSON report",
    expected="values as sha256:<16 hex> of salt+value; redacted: true",
)
def test_a_redacted_report_holds_hashes_and_says_so(worker: WorkerFiles) -> None:
    plain = findings_of(verify(worker, "--format", "json"))
    result = verify(worker, "--format", "json", "--redact")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["redacted"] is True and document["source"]["redacted"] is True
    by_id = {f["id"]: f for f in plain}
    for finding in document["findings"]:
        original = by_id[finding["id"]]
        assert (finding["category"], finding["natural_key"]) == (
            original["category"],
            original["natural_key"],
        )
        for name in ("kv_value", "d1_value"):
            assert finding[name] == (None if original[name] is None else hashed(original[name]))
    leaked = [v for v in secret_values(plain) if v in result.stdout]
    assert secret_values(plain) and leaked == []


@pytest.mark.reliability(
    kind="security",
    case="--redact on html/markdown/junit/text reports",
    expected="no KV/D1 value in the output",
)
@pytest.mark.parametrize("fmt", ["html", "markdown", "junit", "text"])
def test_every_report_format_hides_the_values(worker: WorkerFiles, fmt: str) -> None:
    plain = findings_of(verify(worker, "--format", "json"))
    result = kv2d1("report", "--config", str(worker.config), "-q", "--as-of", NOW.isoformat(),
                   "--format", fmt, "--redact", "--probe-repeat", "2")  # fmt: skip
    assert result.exit_code in (3, 4), result.output
    assert secret_values(plain) and [v for v in secret_values(plain) if v in result.stdout] == []


@pytest.mark.reliability(
    kind="security",
    case="--redact on a snapshot",
    expected="values and non-key text hashed; keys kept; 0600",
)
def test_a_redacted_snapshot_keeps_keys_and_hashes_values(
    worker: WorkerFiles, tmp_path: Path
) -> None:
    out = tmp_path / "shared.sqlite"
    result = kv2d1("snapshot", "--config", str(worker.config), "-q", "--redact", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_manifest(out).source["redacted"] is True
    with sqlite3.connect(out) as snap, sqlite3.connect(worker.d1_path) as live:
        values = [v for (v,) in snap.execute("SELECT value FROM kv_entries")]
        assert values and all(v.startswith(b"sha256:") and len(v) == 23 for v in values)
        columns = [r[1] for r in live.execute("PRAGMA table_info(analysis_results)")]
        live_rows = sorted(live.execute("SELECT * FROM analysis_results"))
        snap_rows = sorted(snap.execute("SELECT * FROM analysis_results"))
    assert len(live_rows) == len(snap_rows)
    for live_row, snap_row in zip(live_rows, snap_rows, strict=True):
        for name, plain, shared in zip(columns, live_row, snap_row, strict=True):
            if name in KEY_COLUMNS or not isinstance(plain, str):
                assert shared == plain
            else:
                assert shared == hashed(plain)


@pytest.mark.reliability(
    kind="security", case="--redact without KV2D1_REDACT_SALT", expected="a random salt per run"
)
def test_without_a_salt_each_run_hashes_differently(
    worker: WorkerFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KV2D1_REDACT_SALT")
    first, second = (findings_of(verify(worker, "--format", "json", "--redact")) for _ in range(2))
    values = [
        (a["kv_value"], b["kv_value"]) for a, b in zip(first, second, strict=True) if a["kv_value"]
    ]
    assert values and all(a != b for a, b in values)
