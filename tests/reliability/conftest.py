"""Fixtures of the reliability matrix: a small synthetic worker, locally and in the loopback API."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kv2d1.cli import main
from kv2d1.config import load_wrangler_config
from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub
from tests.remote_loading import RemoteCopy, load_remote_copy, write_remote_config
from verifier.calendar import today_et
from verifier.sources import remote
from verifier.sources.local import open_local_sources
from verifier.sources.remote import RetryPolicy
from verifier.synth import WorkerFiles, generate, write_worker

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def small_worker(directory: Path, *, days: int = 10, defects: bool = True) -> WorkerFiles:
    """A synthetic worker over `days` trading days, written as local wrangler state."""
    synthetic = generate(
        until=dt.date.fromisoformat(today_et(NOW)) - dt.timedelta(days=1),
        business_days=days,
        now=NOW,
        symbols=3,
        defects=defects,
        unrelated_per_job=2,
    )
    return write_worker(directory, synthetic)


@dataclass(frozen=True)
class RemoteWorld:
    """A worker's local project, its copy in the loopback API and a config pointing there."""

    files: WorkerFiles
    stub: CloudflareStub
    copy: RemoteCopy
    remote_config: Path
    tmp: Path


@pytest.fixture
def remote_world(
    cf_server: CloudflareStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RemoteWorld]:
    """The loopback API holding a small worker; retries back off for milliseconds."""
    files = small_worker(tmp_path / "worker")
    kv, d1, _ = open_local_sources(
        load_wrangler_config(files.config), now_ms=int(NOW.timestamp() * 1000)
    )
    copy = load_remote_copy(
        cf_server, kv, d1, namespace_id=files.kv_namespace_id, database_name=files.d1_database_name
    )
    config = write_remote_config(
        tmp_path / "remote", copy, kv_binding=files.kv_binding, d1_binding=files.d1_binding
    )
    policy = functools.partial(RetryPolicy, backoff_s=0.002, backoff_cap_s=0.01, timeout_s=5.0)
    monkeypatch.setattr(remote, "RetryPolicy", policy)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", cf_server.base_url)
    yield RemoteWorld(files, cf_server, copy, config, tmp_path)


def kv2d1(*args: str) -> Result:
    """Run the CLI in-process at NOW, with exceptions caught (a traceback shows as `exception`)."""
    return CliRunner().invoke(main, [*args])


def findings_of(result: Result) -> list[dict[str, Any]]:
    """The findings of a JSON report on stdout."""
    document: dict[str, Any] = json.loads(result.stdout)
    findings: list[dict[str, Any]] = document["findings"]
    return findings
