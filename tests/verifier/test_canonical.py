from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from verifier.canonical import (
    canonical_json,
    canonical_json_of_parsed,
    compare_field,
    compare_json_text,
    parse_json_text,
    stable_id,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_canonical_json_is_idempotent(value: object) -> None:
    once = canonical_json(value)
    assert canonical_json(parse_json_text(once)) == once


def test_canonical_json_ignores_key_order_and_whitespace() -> None:
    assert canonical_json(parse_json_text('{ "b": 1, "a": [1.0, 2] }')) == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    ("field", "kv", "d1", "equal", "rule"),
    [
        ("confidence", 0.82, 0.82, True, None),
        ("confidence", 0.82, 0.82 + 1e-12, True, "float_rel_1e-9"),
        ("confidence", 0.82, 0.83, False, None),
        ("confidence", 0.0, None, False, None),  # confidence 0 is not an optional counter
        ("news_count", 0, None, True, "zero_as_null"),
        ("symbols_failed", 0, None, True, "zero_as_null"),
        ("news_count", None, 0, False, None),
        ("sentiment", "bullish", "Bullish", True, "enum_case"),
        ("reasoning", "Buy", "buy", False, None),  # free text keeps its case
        ("signals", '{"a":1,"b":2}', '{ "b": 2, "a": 1 }', True, "json_canonical"),
        ("signals", '{"a":0.1}', '{"a":0.1000000000001}', True, "json_float_noise"),
        ("signals", '{"a":1}', "not json", False, None),
        ("duration_ms", 5, 5.0, True, "numeric_type"),
        ("status", None, None, True, None),
    ],
)
def test_compare_field_names_its_rule(
    field: str, kv: object, d1: object, equal: bool, rule: str | None
) -> None:
    assert compare_field(field, kv, d1) == (equal, rule)


def test_stable_id_separates_parts_and_null() -> None:
    assert stable_id("ab", "c") != stable_id("a", "bc")
    assert stable_id("a", None) != stable_id("a", "")
    assert stable_id("a", "b") == stable_id("a", "b")


def test_nan_is_not_json() -> None:
    with pytest.raises(ValueError):
        parse_json_text('{"a": NaN}')


def _reject(name: str) -> object:
    raise ValueError(name)


def _same(a: object, b: object) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 and True == 1 do not count)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


FLOAT_EDGES = [1e-05, 2.5e-05, 1e-07, 0.0001, 1e16, 1.5e300, 5e-324, 1e22, 123456789.125, -0.0, 3.0]


@settings(max_examples=400)
@given(json_values)
@example(FLOAT_EDGES)
@example({"\uffff": 1, "\U0001f600": [2**64, -(2**63)], "\x1f\x7f\u2028": "\ud800"})
def test_the_fast_canonical_path_writes_exactly_what_the_exact_one_writes(value: object) -> None:
    assert canonical_json_of_parsed(value) == canonical_json(value)


@settings(max_examples=400)
@given(json_values)
@example(FLOAT_EDGES)
def test_parsing_gives_what_json_gives_on_any_text(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert _same(parse_json_text(text), json.loads(text))
        assert _same(parse_json_text(text.encode()), json.loads(text))


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', "1e400", "-1e400", str(2**70), '"\\ud800"', '[1.0, -0, 1E2, 1e-7]',
     '"\ufeff"', "[" * 3000 + "]" * 3000],
)
def test_parsing_edge_cases_agree_with_json(text: str) -> None:
    try:
        expected = json.loads(text, parse_constant=_reject)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            parse_json_text(text)
        return
    assert _same(parse_json_text(text), expected)


@pytest.mark.parametrize("text", ["\ufeff{}", "{", "[1,]", "NaN", "{'a': 1}", ""])
def test_invalid_json_is_refused_with_json_s_own_message(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        parse_json_text(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text, parse_constant=_reject)
    assert str(ours.value) == str(theirs.value) or text == "NaN"


def test_a_number_beyond_a_double_is_null_as_javascript_writes_it() -> None:
    value = parse_json_text('{"a": 1e400, "b": [-1e400, 3.0]}')  # valid JSON, infinite once read
    assert canonical_json(value) == canonical_json_of_parsed(value) == '{"a":null,"b":[null,3]}'
    assert canonical_json_of_parsed({"a": 1e400}) == '{"a":null}'  # alone: orjson's own path
    assert compare_json_text('{"a":null}', '{"a": 1e400}') == (True, "json_canonical")
