from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.canonical import canonical_json, compare_field, parse_json_text, stable_id

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
