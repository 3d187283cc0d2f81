"""One clock per run: `verifier.clock` is the only reader of the wall clock in the product."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from verifier.clock import AsOf, RunClock, parse_instant_option

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("verifier", "backfill", "reports", "kv2d1")
THE_ONE_PLACE = REPO / "verifier" / "clock.py"
# Calls that read the wall clock, by owner: `datetime.now()`, `date.today()`, `time.time()`, …
CLOCK_METHODS = {
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
    "time": {"time", "time_ns", "localtime", "gmtime", "ctime"},
}
# SQL that reads the database's own clock.
SQL_CLOCKS = ("datetime('now')", "date('now')", "current_timestamp", "current_date", "strftime('%s', 'now')")


def _product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (REPO / package).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (they may name `datetime('now')`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _clock_reads(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = _docstrings(tree)
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if node.func.attr in CLOCK_METHODS.get(name, ()):
                reads.append(f"{path.relative_to(root)}:{node.lineno} {name}.{node.func.attr}()")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.lower()
            reads += [f"{path.relative_to(root)}:{node.lineno} SQL {s}" for s in SQL_CLOCKS if s in text]
    return reads


def test_no_product_module_reads_the_wall_clock_but_verifier_clock() -> None:
    files = _product_files()
    assert THE_ONE_PLACE in files and len(files) > 40
    reads = [read for path in files if path != THE_ONE_PLACE for read in _clock_reads(path)]
    assert reads == []


def test_the_guard_sees_a_clock_read(tmp_path: Path) -> None:
    """The check above can fail: each form it looks for is found in a file that has it."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may say datetime(\'now\')."""\n'
        "import datetime as dt\nimport time\n"
        "a = dt.datetime.now(dt.UTC)\nb = time.time()\nc = dt.date.today()\n"
        "SQL = \"SELECT datetime('now')\"\n",
        encoding="utf-8",
    )
    reads = sorted(_clock_reads(sample, tmp_path), key=lambda r: int(r.split(":")[1].split()[0]))
    assert reads == [
        "sample.py:4 datetime.now()",
        "sample.py:5 time.time()",
        "sample.py:6 date.today()",
        "sample.py:7 SQL datetime('now')",
    ]


def test_a_run_clock_takes_the_option_then_the_capture_then_the_wall_clock() -> None:
    pinned = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
    captured = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
    by_option = RunClock.start(pinned, captured_at=captured)
    by_capture = RunClock.start(None, captured_at=captured)
    by_clock = RunClock.start()
    assert (by_option.as_of, by_option.basis) == (pinned, AsOf.OPTION)
    assert (by_capture.as_of, by_capture.basis) == (captured, AsOf.SNAPSHOT)
    assert by_clock.as_of == by_clock.started and by_clock.basis == AsOf.CLOCK
    assert by_option.started == by_option.started.astimezone(dt.UTC) != pinned
    assert by_option.to_json() == {"instant": "2026-11-28T15:00:00+00:00", "from": "option"}
    assert RunClock.fixed(pinned).as_of_ms == 1_795_878_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T15:00:00Z", dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)),
        ("2026-11-28T10:00:00-05:00", dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)),
        ("2026-11-28 15:00", dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)),
        ("2026-11-28", dt.datetime(2026, 11, 28, tzinfo=dt.UTC)),
    ],
)
def test_as_of_accepts_iso_8601_in_utc_unless_a_zone_is_given(
    text: str, expected: dt.datetime
) -> None:
    assert parse_instant_option(text) == expected


def test_as_of_refuses_what_is_not_a_time() -> None:
    with pytest.raises(ValueError):
        parse_instant_option("last tuesday")
