"""docs/CLI.md is generated from `--help`; this test keeps it from drifting.

Regenerate with: KV2D1_UPDATE_CLI_DOC=1 .venv/bin/python -m pytest tests/kv2d1/test_cli_reference.py
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from kv2d1.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"
COMMANDS = ("verify", "backfill", "report", "probe", "snapshot", "demo")


def render_reference() -> str:
    runner = CliRunner()
    parts = [
        "# kv2d1 command reference",
        "",
        "Generated from `kv2d1 COMMAND --help` by `tests/kv2d1/test_cli_reference.py`; do not edit by hand.",
        "",
    ]
    for name in ("", *COMMANDS):
        args = [name, "--help"] if name else ["--help"]
        result = runner.invoke(main, args, prog_name="kv2d1", terminal_width=100)
        assert result.exit_code == 0, result.output
        parts += [f"## kv2d1 {name}".rstrip(), "", "```text", result.output.rstrip(), "```", ""]
    return "\n".join(parts)


def test_cli_reference_matches_help() -> None:
    text = render_reference()
    if os.environ.get("KV2D1_UPDATE_CLI_DOC") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == text, (
        "docs/CLI.md is out of date: KV2D1_UPDATE_CLI_DOC=1 pytest tests/kv2d1/test_cli_reference.py"
    )
