"""D1 rows → the model: the fast path for clean rows gives what the checked path gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier import d1
from verifier.model import RowProblem

# Values a column may hold, right and wrong: SQLite and D1 give None, int, float, str, bytes.
texts = st.sampled_from(
    ["2026-11-16", "2026-02-30", "16/11/2026", "", "analysis", "ANALYSIS", "success", "{}",
     "[1,", "2026-11-16T14:30:00.000Z", "2026-11-16 14:30:00", "yesterday", "AAPL"]
) | st.text(max_size=8)  # fmt: skip
numbers = st.sampled_from([0, 1, 7, -1, 0.0, 0.5, 1.0, 1.5, -0.25, 3.0, float("nan"), float("inf")])
anything = st.none() | st.booleans() | numbers | st.integers() | texts | st.just(b"\x00")

# Clean rows; each example puts any value in up to two of a row's columns (not its ids), so
# most rows are one wrong value away from clean: where the two paths could part.
JOB = (5, "analysis", "2026-11-16", "2026-11-16T14:30:00.000Z", "success", 10, 5, 5, 0, None,
       '{"a":1}')  # fmt: skip
SYMBOL = (5, 50, "AAPL", "bullish", 0.82, "up", "beat", '[{"a":1}]', None, 12)
REPORT = (5, 60, "end-of-day", "2026-11-16", '{"b":2}', None, 3)


@st.composite
def near(draw: Any, clean: tuple[Any, ...], first: int) -> tuple[Any, ...]:
    row = list(clean)
    for column in draw(st.lists(st.integers(first, len(row) - 1), max_size=2)):
        row[column] = draw(anything)
    return tuple(row)


def checked_only(
    row: tuple[Any, ...], symbols: list[tuple[Any, ...]], reports: list[tuple[Any, ...]]
) -> tuple[Any, ...]:
    """What `build_d1_job` gives when every row takes the checked path."""
    problems: list[RowProblem] = []
    json_texts: list[d1.JsonText] = []
    job = d1._checked_job(row, problems, json_texts)
    built_symbols = tuple(d1._checked_symbol(r, problems, json_texts) for r in symbols)
    built_reports = tuple(d1._checked_report(r, problems, json_texts) for r in reports)
    return job, built_symbols, built_reports, tuple(problems), tuple(json_texts)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself and the types of numbers compared too (1 vs 1.0)."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__slots__") and type(a) is type(b):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__slots__)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


PROBES = [None, True, False, 0, 1, -1, 2**63, 0.0, 0.5, 1.0, 1.5, -0.25, 3.0, float("nan"),
          float("inf"), "", "x", "analysis", "ANALYSIS", "success", "2026-11-16", "2026-02-30",
          "2026-11-16T14:30:00.000Z", "{}", "[1,", b"\x00"]  # fmt: skip


def one_wrong(clean: tuple[Any, ...], first: int) -> list[tuple[Any, ...]]:
    """The clean row with each probe in each column (but the ids), one at a time."""
    return [
        (*clean[:column], probe, *clean[column + 1 :])
        for column in range(first, len(clean))
        for probe in PROBES
    ]


def test_any_one_value_takes_the_two_paths_to_one_result() -> None:
    cases = (
        [(row, [], []) for row in one_wrong(JOB, 1)]
        + [(JOB, [row, SYMBOL], []) for row in one_wrong(SYMBOL, 2)]
        + [(JOB, [], [REPORT, row]) for row in one_wrong(REPORT, 2)]
    )
    for row, symbols, reports in cases:
        built = d1.build_d1_job(row, symbols, reports)
        got = (built.job, built.symbols, built.reports, built.problems, built.json_texts)
        assert same(got, checked_only(row, symbols, reports)), (row, symbols, reports)


@settings(max_examples=300, deadline=None)
@given(near(JOB, 1), st.lists(near(SYMBOL, 2), max_size=3), st.lists(near(REPORT, 2), max_size=2))
def test_the_fast_path_builds_what_the_checks_build(
    row: tuple[Any, ...], symbols: list[tuple[Any, ...]], reports: list[tuple[Any, ...]]
) -> None:
    built = d1.build_d1_job(row, symbols, reports)
    got = (built.job, built.symbols, built.reports, built.problems, built.json_texts)
    assert same(got, checked_only(row, symbols, reports))


def test_a_clean_row_takes_the_fast_path_and_a_broken_one_is_flagged() -> None:
    row = (5, "analysis", "2026-11-16", "2026-11-16T14:30:00.000Z", "success", 10, 5, 5, 0,
           None, '{"a":1}')  # fmt: skip
    json_texts: list[d1.JsonText] = []
    assert d1._clean_job(row, json_texts) is not None
    assert json_texts == [(0, "job_executions", 5, "metadata", '{"a":1}')]
    broken = d1.build_d1_job((*row[:5], True, *row[6:]), [], [])  # a boolean duration
    assert [p.field for p in broken.problems] == ["duration_ms"]
