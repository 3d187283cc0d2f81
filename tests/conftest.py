"""Shared fixtures; each block is owned by the tests that introduced it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# --- wrangler: the real CLI, offline (tests of local state) ------------------------------------

WRANGLER_BIN = REPO / "node_modules" / ".bin" / "wrangler"
WRANGLER_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
}


@dataclass(frozen=True)
class Wrangler:
    """Runs the project's pinned wrangler in a directory, offline and without credentials."""

    env: dict[str, str]

    def __call__(
        self, cwd: Path, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `wrangler ARGS` in `cwd`; text output. `check` fails the test on a non-zero exit."""
        done: subprocess.CompletedProcess[str] = self._run(cwd, args, text=True)
        if check and done.returncode != 0:
            pytest.fail(_failure(args, done.returncode, done.stdout, done.stderr))
        return done

    def binary(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run `wrangler ARGS` in `cwd`; raw bytes on stdout (e.g. `kv key get` of a binary value)."""
        done: subprocess.CompletedProcess[bytes] = self._run(cwd, args, text=False)
        if done.returncode != 0:
            pytest.fail(_failure(args, done.returncode, done.stdout, done.stderr))
        return done

    def _run(self, cwd: Path, args: tuple[str, ...], *, text: bool) -> Any:
        return subprocess.run(
            [str(WRANGLER_BIN), *args], cwd=cwd, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, text=text, timeout=180, check=False,
        )  # fmt: skip


def _failure(args: tuple[str, ...], code: int, out: str | bytes, err: str | bytes) -> str:
    def text(s: str | bytes) -> str:
        return s if isinstance(s, str) else s.decode("utf-8", "replace")

    return f"wrangler {' '.join(args)} exited {code}:\n{text(out)}\n{text(err)}"


@pytest.fixture(scope="session")
def wrangler(tmp_path_factory: pytest.TempPathFactory) -> Wrangler:
    """The real wrangler 4.86.0 from node_modules; fails (never skips) when it is not installed,
    unless KV2D1_ALLOW_MISSING_WRANGLER=1."""
    if not WRANGLER_BIN.exists():
        reason = f"{WRANGLER_BIN} is missing: run `npm ci` in {REPO}"
        if os.environ.get("KV2D1_ALLOW_MISSING_WRANGLER") == "1":
            pytest.skip(f"{reason} (skipped: KV2D1_ALLOW_MISSING_WRANGLER=1)")
        pytest.fail(reason)
    home = tmp_path_factory.mktemp("wrangler-home")
    # No CLOUDFLARE_* from the caller: a token must never reach a test's wrangler.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(WRANGLER_ENV, WRANGLER_LOG_PATH=str(home / "logs"), XDG_CONFIG_HOME=str(home))
    return Wrangler(env)


# --- end of wrangler -----------------------------------------------------------------------------


# --- reliability: token canary, the `reliability` marker and its JSON record ---------------------
# Owned by tests/reliability/. The canary makes any test that prints, logs or fails with a token
# value fail; the marker plugin writes every marked test's outcome (and the rows-lost/duplicated
# counters of `reliability_counts`) to the JSON file named by KV2D1_RELIABILITY_OUT.

import json as _json  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402

CANARY_TOKEN = "kv2d1-canary-token-Zq81xLmT4vRe9WnY"  # a fake token: a leak is easy to grep for
_RELIABILITY_RESULTS: dict[str, dict[str, Any]] = {}
_RELIABILITY_COUNTS: dict[str, ReliabilityCounts] = {}
os.environ.setdefault("CLOUDFLARE_API_TOKEN", CANARY_TOKEN)


@dataclass
class ReliabilityCounts:
    """Rows a loss/duplication check looked at, and how many it found lost or duplicated."""

    checked: int = 0
    lost: int = 0
    duplicated: int = 0

    def record(self, *, expected: Iterable[Any], actual: Iterable[Any]) -> None:
        """Compare natural keys before (`expected`) and after (`actual`) as multisets.

        Lost: a key that is now less often there than before. Duplicated: copies beyond what was
        there before (at least one copy of a key may be new: that is a backfill's insert).
        """
        before, after = Counter(expected), Counter(actual)
        self.checked += sum(before.values())
        self.lost += sum(n - after[key] for key, n in before.items() if after[key] < n)
        self.duplicated += sum(max(0, n - max(before[key], 1)) for key, n in after.items())


def known_token_values() -> set[str]:
    """Every token value the tests use: the canary, the loopback server's, the current env's."""
    from tests.cfserver import TOKEN

    values = {CANARY_TOKEN, TOKEN, os.environ.get("CLOUDFLARE_API_TOKEN", "")}
    return {v for v in values if len(v) >= 12}


def pytest_configure(config: pytest.Config) -> None:
    """Register the `reliability` marker (also listed in pyproject's markers)."""
    config.addinivalue_line(
        "markers",
        'reliability(kind, case, expected): a row of docs/RELIABILITY.md (kind "fault"|"bad_input")',
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the pre-existing tests that the reliability matrix points at (tests/reliability/matrix.py)."""
    from tests.reliability.matrix import EXISTING

    for item in items:
        # Whatever drives the real wrangler is marked so: `make test-clock` leaves it out
        # (workerd hangs under libfaketime's moved clock).
        if "wrangler" in getattr(item, "fixturenames", ()) and item.get_closest_marker("wrangler") is None:
            item.add_marker(pytest.mark.wrangler)
        row = EXISTING.get(item.nodeid.split("[")[0])
        if row is not None and item.get_closest_marker("reliability") is None:
            item.add_marker(pytest.mark.reliability(kind=row[0], case=row[1], expected=row[2]))


@pytest.fixture
def reliability_counts(request: pytest.FixtureRequest) -> ReliabilityCounts:
    """Counters the loss/duplication checks of a reliability test update."""
    counts = ReliabilityCounts()
    _RELIABILITY_COUNTS[request.node.nodeid] = counts
    return counts


def _leaked_tokens(report: pytest.TestReport) -> list[str]:
    texts = [content for _, content in report.sections]
    if report.longrepr is not None:
        texts.append(report.longreprtext)
    return [t for t in known_token_values() if any(t in text for text in texts)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Fail a test whose output, log or failure text holds a token; note reliability outcomes."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    leaked = _leaked_tokens(report)
    if leaked:
        report.outcome = "failed"
        report.longrepr = (
            f"token canary: a token value ({len(leaked)}) leaked into {report.when} output"
        )
    marker = item.get_closest_marker("reliability")
    if marker is not None:
        _note_reliability(item, report, marker)


def _note_reliability(item: pytest.Item, report: pytest.TestReport, marker: pytest.Mark) -> None:
    entry = _RELIABILITY_RESULTS.setdefault(item.nodeid, {"nodeid": item.nodeid, **marker.kwargs})
    entry["name"] = item.name.split("[")[0]
    if report.when == "call" or report.outcome != "passed":
        state = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        if entry.get("outcome") in (None, "passed") or report.when == "call":
            entry["outcome"] = state if entry.get("outcome") != "failed" else "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the reliability record when KV2D1_RELIABILITY_OUT names a file."""
    out = os.environ.get("KV2D1_RELIABILITY_OUT")
    if not out:
        return
    for nodeid, entry in _RELIABILITY_RESULTS.items():
        counts = _RELIABILITY_COUNTS.get(nodeid)
        entry.update(checked=counts.checked if counts else 0, lost=counts.lost if counts else 0,
                     duplicated=counts.duplicated if counts else 0)  # fmt: skip
    Path(out).write_text(
        _json.dumps(sorted(_RELIABILITY_RESULTS.values(), key=lambda e: e["nodeid"]), indent=2)
    )


# --- end of reliability --------------------------------------------------------------------------


# --- cache: kv2d1's per-machine cache (holidays) in a folder of the session ---------------------


@pytest.fixture(autouse=True, scope="session")
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the CLIs they start) keep kv2d1's cache out of the user's home."""
    from verifier.calendar import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("kv2d1-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


# --- end of cache --------------------------------------------------------------------------------
