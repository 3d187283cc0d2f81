"""Fixtures for remote mode: the loopback Cloudflare API and its OpenAPI contract check.

Register with `pytest_plugins = ("tests.remote_fixtures",)` in a test module (or in the top-level
conftest.py); import helpers from tests.cfserver, not from here, so pytest can rewrite the asserts.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cfserver import (
    ACCOUNT,
    NAMESPACE,
    TOKEN,
    CloudflareStub,
    FakeClock,
    OpenApiContract,
    serve,
)

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "cloudflare-openapi-subset.json"
)


@pytest.fixture(scope="session")
def openapi_contract() -> OpenApiContract | None:
    """The OpenAPI subset from ../shared; when absent, skip the check saying why (fail in CI)."""
    if SPEC_PATH.is_file():
        return OpenApiContract.load(SPEC_PATH)
    reason = f"{SPEC_PATH} is absent (shared/ is not beside the repository)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the OpenAPI contract check is required in CI, but {reason}")
    message = f"OpenAPI contract check skipped: {reason}"
    print(message, file=sys.stderr)
    warnings.warn(message, stacklevel=1)
    return None


@pytest.fixture
def cf_server(openapi_contract: OpenApiContract | None) -> Iterator[CloudflareStub]:
    """A running loopback API with one KV namespace; no contract violation may remain at the end."""
    stub = CloudflareStub(token=TOKEN, account_id=ACCOUNT, contract=openapi_contract)
    stub.add_namespace(NAMESPACE)
    with serve(stub):
        yield stub
    assert stub.violations == [], "requests or answers broke the OpenAPI contract:\n" + "\n".join(
        stub.violations[:20]
    )


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
