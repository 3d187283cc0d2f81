"""Patterns: findings grouped by cause, with the cause named where it is recognisable."""

from __future__ import annotations

from typing import Any

import pytest

from reports.patterns import ADAPTER_BUG, find_patterns, value_pattern
from verifier.diff import finding
from verifier.model import Category, Finding, Table


@pytest.mark.parametrize(
    ("kv", "d1", "pattern"),
    [
        (0.82, None, "d1_null"),
        (0, None, "zero_as_null"),
        (None, "bullish", "kv_null"),
        ("2026-11-16T12:30:00.000Z", "2026-11-16T08:30:00.000Z", "offset_-4h"),
        ("2026-01-16T12:30:00Z", "2026-01-16T17:30:00Z", "offset_+5h"),
        ("2026-03-09T12:30:00Z", "2026-03-09T13:30:00Z", "offset_+1h"),
        ("2026-11-16", "2026-11-17", "offset_+1d"),
        ('{"a":1,"b":[1,2]}', '{"b":[1,2],"a":1}', "json_key_order"),
        ("3", 3, "string_vs_number"),
        (82.0, 0.82, "percent_vs_fraction"),
        (0.64, 64, "percent_vs_fraction"),
        ("Bullish", "bullish", "case_only"),
        (0.82, 0.81, "number_differs"),
        ("beat", "miss", "text_differs"),
        (
            '{"at":"2026-11-16T12:30:00Z","n":1}',
            '{"at":"2026-11-16T16:30:00Z","n":1}',
            "offset_+4h",
        ),
        ('{"p":[0.5,0.7]}', '{"p":[50,70]}', "percent_vs_fraction"),
    ],
)
def test_value_patterns(kv: Any, d1: Any, pattern: str) -> None:
    assert value_pattern(kv, d1) == pattern


def mismatch(
    key: str,
    field: str,
    kv: Any,
    d1: Any,
    *,
    shape: str = "A",
    table: Table = Table.ANALYSIS_RESULTS,
) -> Finding:
    return finding(
        Category.FIELD_MISMATCH,
        key,
        f"{field} differs",
        id_parts=(table, field),
        kv_key=key.split("/")[1],
        table=table,
        field=field,
        kv_value=kv,
        d1_value=d1,
        shape=shape,
    )


def test_the_plan_adapter_bug_is_one_pattern_naming_every_shape_a_payload() -> None:
    findings = []
    for day in ("2026-11-16", "2026-11-17"):
        for symbol in ("AAPL", "MSFT"):
            key = f"analysis/analysis_{day}/latest/{symbol}"
            findings += [
                mismatch(key, f, v, None)
                for f, v in (("sentiment", "bullish"), ("confidence", 0.8), ("reasoning", "beat"))
            ]
    patterns = find_patterns(findings, shapes={"A": 2, "B": 7})
    [bug] = patterns
    assert (
        bug.description
        == "sentiment, confidence, reasoning all NULL in D1 for every shape-A payload (4 symbol results)"
    )
    assert bug.suggestion == ADAPTER_BUG and bug.count == 12
    assert bug.example_keys[0] == "analysis/analysis_2026-11-16/latest/AAPL"


def test_a_single_field_pattern_says_how_many_payloads() -> None:
    findings = [
        mismatch(f"analysis/analysis_2026-11-1{d}/latest/AAPL", "confidence", 0.8, None)
        for d in range(6, 9)
    ]
    [pattern] = find_patterns(findings, shapes={"A": 10})
    assert pattern.description == "confidence NULL in D1 in 3 shape-A payloads (3 analysis_results)"
    assert pattern.to_json()["pattern"] == pattern.description
    assert pattern.suggestion == "the dual-writer does not map this field to D1"


def test_time_zone_and_category_patterns() -> None:
    shifted = [
        mismatch(
            f"pre-market/x{i}/latest/report:pre-market",
            "content",
            '{"at":"2026-11-16T12:30:00Z"}',
            '{"at":"2026-11-16T16:30:00Z"}',
            shape="G",
            table=Table.REPORT_SNAPSHOTS,
        )
        for i in range(2)
    ]
    missing = finding(
        Category.MISSING_IN_D1,
        "analysis/2026-11-18/latest",
        "not in D1",
        id_parts=(Table.JOB_EXECUTIONS,),
        kv_key="analysis_2026-11-18",
        table=Table.JOB_EXECUTIONS,
        shape="B",
    )
    patterns = {p.signature: p for p in find_patterns([*shifted, missing])}
    assert "time zone" in (patterns["offset_+4h"].suggestion or "")
    assert patterns["offset_+4h"].count == 2
    assert patterns["any"].example_keys == ("analysis_2026-11-18",)
    assert "kv2d1 backfill" in (patterns["any"].suggestion or "")
    ids = {p.id for p in patterns.values()}
    assert len(ids) == 2 and ids == {p.id for p in find_patterns([missing, *shifted])}
