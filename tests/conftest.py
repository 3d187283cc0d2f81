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
