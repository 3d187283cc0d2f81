"""The API token never reaches a file a remote run writes (the canary in conftest.py covers output)."""

from __future__ import annotations

import stat

import pytest

from tests.cfserver import TOKEN
from tests.conftest import CANARY_TOKEN, known_token_values
from tests.reliability.conftest import NOW, RemoteWorld, kv2d1

pytest_plugins = ("tests.remote_fixtures",)


def remote(world: RemoteWorld, *args: str) -> int:
    """Run a remote command at NOW; its exit code (output is checked by the canary)."""
    result = kv2d1(
        *args, "--remote", "--config", str(world.remote_config), "-q", "--as-of", NOW.isoformat()
    )
    assert "Traceback" not in result.output
    return result.exit_code


@pytest.mark.reliability(
    kind="security",
    case="token in files a remote run writes (snapshot, reports, SQL, ledger)",
    expected="no token in any byte; snapshot 0600",
)
def test_no_file_a_remote_run_writes_holds_the_token(remote_world: RemoteWorld) -> None:
    out = remote_world.tmp / "out"
    out.mkdir()
    snapshot = out / "snap.sqlite"
    assert (
        kv2d1(
            "snapshot",
            "--remote",
            "--config",
            str(remote_world.remote_config),
            "-q",
            "-o",
            str(snapshot),
        ).exit_code
        == 0
    )
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    for fmt in ("json", "html", "markdown", "junit", "text"):
        assert (
            remote(remote_world, "verify", "--format", fmt, "-o", str(out / f"verify.{fmt}")) == 3
        )
        assert remote(
            remote_world,
            "report",
            "--format",
            fmt,
            "-o",
            str(out / f"report.{fmt}"),
            "--probe-repeat",
            "2",
        ) in (3, 4)
    ledgers = out / "runs"
    assert (
        remote(
            remote_world,
            "backfill",
            "--sql-out",
            str(out / "fill.sql"),
            "--ledger-dir",
            str(ledgers),
        )
        == 0
    )
    assert remote(remote_world, "backfill", "--ledger-dir", str(ledgers)) == 0
    written = [p for p in remote_world.tmp.rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {
        ".sqlite",
        ".json",
        ".html",
        ".markdown",
        ".junit",
        ".sql",
        ".jsonl",
    }
    tokens = known_token_values() | {TOKEN, CANARY_TOKEN}
    leaks = [str(p) for p in written for t in tokens if t.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.reliability(
    kind="security",
    case="token in any test's stdout/stderr/log/failure text",
    expected="the canary fails the test",
)
def test_the_canary_fails_a_test_whose_output_holds_a_token() -> None:
    from tests.conftest import _leaked_tokens

    def report(text: str) -> pytest.TestReport:
        return pytest.TestReport(
            "t", ("t.py", 0, "t"), {}, "passed", None, "call", [("Captured stdout call", text)]
        )

    assert _leaked_tokens(report(f"token={CANARY_TOKEN}")) == [CANARY_TOKEN]
    assert _leaked_tokens(report(f"Authorization: Bearer {TOKEN}")) == [TOKEN]
    assert _leaked_tokens(report("nothing secret here")) == []
