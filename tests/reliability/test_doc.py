"""docs/RELIABILITY.md cannot drift: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_the_reliability_doc_names_exists() -> None:
    doc = (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", doc)
    assert len(named) > 20
    missing = [f"{path}::{name}" for path, name in named
               if not re.search(rf"^(async )?def {name}\(", (REPO / path).read_text(), re.M)]  # fmt: skip
    assert missing == []
