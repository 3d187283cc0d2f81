"""A misbehaving KV key listing, through the real command line (`kv2d1 verify --remote`).

The loopback Cloudflare API (tests/cfserver.py) serves D1 as usual, but its key-listing route
answers scripted pages: two alternating cursors, a cursor rewound to an earlier one, or a page
that repeats the keys of the page before. Each must end in ONE `Error:` line on stderr, exit 1,
after exactly as many listing requests as the script needs to show the fault, and no report.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kv2d1.cli import main
from tests.cfserver import (
    ACCOUNT,
    NAMESPACE,
    TOKEN,
    CloudflareStub,
    OpenApiContract,
    Reply,
    Request,
    serve,
)
from tests.remote_loading import RemoteCopy, write_remote_config
from verifier.profile import schema_dir
from verifier.sources import remote
from verifier.sources.remote import RetryPolicy

pytest_plugins = ("tests.remote_fixtures",)

DATABASE_NAME = "predict-jobs"
KV_BINDING = "MARKET_ANALYSIS_CACHE"  # the default profile's bindings
D1_BINDING = "PREDICT_JOBS_DB"


def keys(*days: int) -> list[str]:
    """Key names the default profile maps to analysis jobs (`analysis_2026-11-DD`)."""
    return [f"analysis_2026-11-{day:02d}" for day in days]


@dataclass(frozen=True)
class Page:
    """One scripted answer of the key-listing route: its keys and the cursor it gives."""

    names: list[str]
    cursor: str


@dataclass(frozen=True)
class Script:
    """A listing fault: the pages served in turn, and the cursor each request must carry."""

    pages: tuple[Page, ...]
    asked: tuple[str, ...]  # the `cursor` query parameter of each listing request ("" = none)
    message: str  # a part of the one `Error:` line


SCRIPTS: dict[str, Script] = {
    "alternating cursors A,B,A": Script(
        pages=(
            Page(keys(16, 17), "A"),
            Page(keys(18, 19), "B"),
            Page(keys(20, 23), "A"),
        ),
        asked=("", "A", "B"),
        message="the API returned a cursor it had already given (page 3)",
    ),
    "rewound cursor c1,c2,c3,c1": Script(
        pages=(
            Page(keys(16, 17), "c1"),
            Page(keys(18, 19), "c2"),
            Page(keys(20, 23), "c3"),
            Page(keys(24, 25), "c1"),
        ),
        asked=("", "c1", "c2", "c3"),
        message="the API returned a cursor it had already given (page 4)",
    ),
    "a page repeating the previous page's keys": Script(
        pages=(
            Page(keys(16, 17), "c1"),
            Page(keys(16, 17), "c2"),
        ),
        asked=("", "c1"),
        message=(
            "the API listed the key 'analysis_2026-11-16' after the key "
            "'analysis_2026-11-17' (page 2)"
        ),
    ),
}


class ScriptedListing(CloudflareStub):
    """The loopback API with a key listing that serves `pages` in turn, whatever the cursor.

    Past the script it answers a last, empty page (no cursor): a client that missed the fault
    then ends its listing normally, and the test sees a report and one request too many.
    """

    def __init__(self, pages: tuple[Page, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pages = pages
        self.asked: list[str] = []  # the cursor of each listing request, in arrival order
        self._script_lock = threading.Lock()

    def kv_list(self, request: Request) -> Reply:
        self._namespace(request, "list keys")
        with self._script_lock:
            turn = len(self.asked)
            self.asked.append(request.query.get("cursor", ""))
        page = self.pages[turn] if turn < len(self.pages) else Page([], "")
        items = [{"name": name} for name in page.names]
        return Reply.ok(items, {"count": len(items), "cursor": page.cursor})


@pytest.fixture
def scripted_api(
    request: pytest.FixtureRequest,
    openapi_contract: OpenApiContract | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ScriptedListing, Path]]:
    """The scripted API on 127.0.0.1 for one test (stopped after it), and a config pointing there.

    D1 has the plan's schema, so verify gets past its schema check to the listing.
    """
    script: Script = request.param
    stub = ScriptedListing(script.pages, token=TOKEN, account_id=ACCOUNT, contract=openapi_contract)
    stub.add_namespace(NAMESPACE)
    schema = (schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8")
    database_id = stub.add_database(DATABASE_NAME, schema_sql=schema)
    copy = RemoteCopy(NAMESPACE, database_id, DATABASE_NAME, keys=0, rows={})
    config = write_remote_config(
        tmp_path / "remote", copy, kv_binding=KV_BINDING, d1_binding=D1_BINDING
    )
    # Retries (none are expected) back off for milliseconds, so a surprise cannot stall the test.
    policy = functools.partial(RetryPolicy, backoff_s=0.002, backoff_cap_s=0.01, timeout_s=5.0)
    monkeypatch.setattr(remote, "RetryPolicy", policy)
    with serve(stub):
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
        monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", stub.base_url)
        yield stub, config
    assert stub.violations == [], "requests or answers broke the OpenAPI contract:\n" + "\n".join(
        stub.violations[:20]
    )


@pytest.mark.reliability(
    kind="fault",
    case="API listing misbehaves through the CLI (cursor repeated or rewound, keys repeated)",
    expected="one Error line, exit 1, bounded requests, no report",
)
@pytest.mark.parametrize(
    ("scripted_api", "script"),
    [(script, script) for script in SCRIPTS.values()],
    ids=list(SCRIPTS),
    indirect=["scripted_api"],
)
def test_a_misbehaving_listing_is_one_error_line_after_bounded_requests(
    scripted_api: tuple[ScriptedListing, Path], script: Script
) -> None:
    stub, config = scripted_api
    result = CliRunner().invoke(
        main, ["verify", "--config", str(config), "--remote", "--format", "json"]
    )

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("Error: the API "), line
    assert "page" in line
    assert script.message in line
    assert "Traceback" not in result.output
    assert TOKEN not in result.output

    # Bounded: exactly the scripted requests, each with the cursor the page before gave.
    assert stub.asked == list(script.asked)
    counts = stub.counts()
    assert counts["list"] == len(script.pages)
    # KV was only listed: the fault ends the run before any value is read.
    kv_kinds = {"list", "bulk_get", "get_value", "get_metadata"}
    assert {kind for kind in counts if kind in kv_kinds} == {"list"}
    assert counts["unknown"] == 0
