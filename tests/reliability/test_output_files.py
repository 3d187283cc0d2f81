"""Files land only where asked: a FIFO, a device or a symlink given as an output stays what it
is; a full device is one `Error:` line; every file that holds KV or D1 values is owner-only."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kv2d1.cli import main
from tests import payload_examples as pe
from tests.kv2d1.test_cli_verify import NOW, make_worker
from verifier.model import KvEntry

KEY = "analysis_2026-11-16"


def worker(tmp_path: Path) -> Path:
    (tmp_path / "w").mkdir()
    return make_worker(tmp_path / "w", [KvEntry(KEY, pe.kv_value(pe.shape_b("2026-11-16")))])


def backfill(root: Path, *args: str) -> Result:
    config = ["--config", str(root / "wrangler.toml"), "--as-of", NOW, "-q"]
    return CliRunner().invoke(main, ["backfill", *config, *args])


def verify(root: Path, *args: str) -> Result:
    config = ["--config", str(root / "wrangler.toml"), "--as-of", NOW, "-q"]
    return CliRunner().invoke(main, ["verify", *config, "--format", "json", *args])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.reliability(
    kind="bad_input",
    case="--sql-out / -o to a FIFO",
    expected="written through the FIFO; it stays a FIFO",
)
def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    root = worker(tmp_path)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = backfill(root, "--sql-out", str(fifo))
    reader.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert b"INSERT INTO job_executions" in got[0]


@pytest.mark.reliability(
    kind="bad_input",
    case="--sql-out to a character device (made in the test's own folder)",
    expected="written in place; still a device afterwards",
)
def test_a_device_is_written_in_place_and_stays_a_device(tmp_path: Path) -> None:
    root = worker(tmp_path)
    null = os.stat("/dev/null")
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, null.st_rdev)  # /dev/null's numbers, our own node
    except PermissionError:
        pytest.fail("making a device node needs root (CI runs as root)")
    result = backfill(root, "--sql-out", str(device))
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(device.stat().st_mode) and device.stat().st_rdev == null.st_rdev
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.reliability(
    kind="bad_input",
    case="--sql-out / -o to a symlink",
    expected="the link stays a link; its target holds the file",
)
def test_a_symlink_stays_a_link_and_its_target_gets_the_file(tmp_path: Path) -> None:
    root = worker(tmp_path)
    target, link = tmp_path / "real.sql", tmp_path / "link.sql"
    target.write_text("old\n")
    link.symlink_to(target)
    assert backfill(root, "--sql-out", str(link)).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("-- kv2d1 backfill, run ")
    report_target, report_link = tmp_path / "real.json", tmp_path / "link.json"
    report_target.write_text("{}")
    report_link.symlink_to(report_target)
    assert verify(root, "-o", str(report_link)).exit_code == 3
    assert report_link.is_symlink() and '"command": "verify"' in report_target.read_text()


@pytest.mark.reliability(
    kind="bad_input",
    case="--sql-out / -o to a full device (/dev/full)",
    expected="one Error line, exit 1",
)
@pytest.mark.parametrize("command", ["backfill", "verify"])
def test_a_full_device_is_one_error_line(tmp_path: Path, command: str) -> None:
    if not Path("/dev/full").exists():
        pytest.fail("/dev/full is missing on this machine")
    root = worker(tmp_path)
    result = (backfill(root, "--sql-out", "/dev/full") if command == "backfill"
              else verify(root, "-o", "/dev/full"))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: cannot write ") and "/dev/full" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.reliability(
    kind="security",
    case="permissions of every file kv2d1 writes (SQL file, ledger, report, history, snapshot)",
    expected="0600 (values are private); a --redact report 0644",
)
def test_every_file_that_holds_values_is_owner_only(tmp_path: Path) -> None:
    root = worker(tmp_path)
    sql, ledgers = tmp_path / "b.sql", tmp_path / "runs"
    assert backfill(root, "--sql-out", str(sql), "--ledger-dir", str(ledgers)).exit_code == 0
    assert backfill(root, "--ledger-dir", str(ledgers)).exit_code == 0
    report, history = tmp_path / "r.json", tmp_path / "history"
    assert verify(root, "-o", str(report)).exit_code in (0, 3)
    reported = CliRunner().invoke(main, [
        "report", "--config", str(root / "wrangler.toml"), "--as-of", NOW, "-q", "--probe-repeat",
        "0", "--history", str(history), "-o", str(tmp_path / "r.html"),
    ])  # fmt: skip
    assert reported.exit_code in (0, 3, 4), reported.stderr
    snapshot = tmp_path / "s.sqlite"
    taken = CliRunner().invoke(main, ["snapshot", "--config", str(root / "wrangler.toml"),
                                      "--as-of", NOW, "-q", "-o", str(snapshot)])  # fmt: skip
    assert taken.exit_code == 0, taken.stderr
    written = [sql, report, tmp_path / "r.html", snapshot, *ledgers.iterdir(), *history.iterdir()]
    assert len(written) >= 7
    assert {p.name: oct(mode(p)) for p in written} == {p.name: "0o600" for p in written}
    shared = tmp_path / "shared.json"
    assert verify(root, "--redact", "-o", str(shared)).exit_code in (0, 3)
    assert mode(shared) == 0o644
