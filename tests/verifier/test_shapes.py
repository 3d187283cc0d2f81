from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.payload_examples import EXAMPLES, SYMBOLS, VARIANTS, kv_value, shape_b, shape_d
from verifier.errors import ProfileError
from verifier.profile import load_profile
from verifier.shapes import (
    SCHEMA_SUFFIX,
    detect_shape,
    explain_no_shape,
    load_shape_schemas,
    shape_schema_dir,
)

SHAPES = ("A", "B", "C", "C_PRIME", "D", "E", "EOD", "F", "G", "I", "STATUS", "W")
JUNK: list[Any] = [[], "x", {}, {"foo": 1}, None, 5, True, [{"symbols_analyzed": []}]]


def matching_shapes(payload: object) -> set[str]:
    return {name for name, validator in load_shape_schemas().items() if validator.is_valid(payload)}


def test_there_is_one_schema_and_one_example_per_shape() -> None:
    assert tuple(sorted(load_shape_schemas())) == SHAPES
    assert sorted(EXAMPLES) == sorted(SHAPES)


@pytest.mark.parametrize("name", SHAPES)
def test_schema_file_is_a_draft_2020_12_schema_with_id_title_and_reference(name: str) -> None:
    schema = json.loads((shape_schema_dir() / f"{name}{SCHEMA_SUFFIX}").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://kv2d1.dev/schema/kv/{name}.schema.json"
    assert schema["title"]
    assert "kv-payloads.md §3." in schema["description"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_example_matches_its_own_shape_and_no_other(variant: str) -> None:
    shape, build = VARIANTS[variant]
    assert matching_shapes(build()) == {shape}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_detect_shape_finds_the_shape_whatever_the_candidate_order(variant: str) -> None:
    shape, build = VARIANTS[variant]
    payload = build()
    assert detect_shape(payload, SHAPES) == shape
    assert detect_shape(payload, tuple(reversed(SHAPES))) == shape
    assert detect_shape(payload, [s for s in SHAPES if s != shape]) is None


@pytest.mark.parametrize("first", SHAPES)
def test_a_payload_carrying_two_shapes_matches_at_most_one(first: str) -> None:
    """Mutual exclusion by construction: merging any two shapes' payloads never matches both."""
    for second in SHAPES:
        merged = {**EXAMPLES[first](), **EXAMPLES[second]()}
        assert len(matching_shapes(merged)) <= 1, (first, second, matching_shapes(merged))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_unknown_top_level_keys_are_tolerated(variant: str) -> None:
    shape, build = VARIANTS[variant]
    payload = {**build(), "added_in_a_later_release": {"x": 1}, "schema_rev": 7}
    assert matching_shapes(payload) == {shape}


def test_shapes_tolerate_the_documented_per_symbol_drift() -> None:
    payload = shape_b()
    aapl = payload["trading_signals"]["AAPL"]
    aapl["direction"] = "BULLISH"  # not in any era's enum
    aapl["confidence"] = 82  # a percentage: normalised later, not a shape error
    aapl["confidence_metrics"]["overall_confidence"] = None
    aapl["surprise"] = [1, 2, 3]
    payload["trading_signals"]["MSFT"] = None  # a symbol entry that is simply null
    assert detect_shape(payload, ["B"]) == "B"


def test_shape_b_requires_one_of_its_own_sections() -> None:
    payload = shape_b()
    del payload["pre_market_analysis"]
    assert detect_shape(payload, ["B"]) == "B"  # analysis_statistics still marks it
    del payload["analysis_statistics"]
    assert matching_shapes(payload) == set()


def test_shape_d_refuses_a_symbol_list_but_accepts_a_symbol_count() -> None:
    payload = shape_d(wrapper=True)
    assert payload["symbols_analyzed"] == len(SYMBOLS)
    assert detect_shape(payload, ["D"]) == "D"
    payload["symbols_analyzed"] = list(SYMBOLS)
    assert matching_shapes(payload) == set()


def test_a_status_value_stored_as_a_json_string_matches_once_decoded_twice() -> None:
    stored = kv_value(EXAMPLES["STATUS"](), double_encoded=True)
    once = json.loads(stored)
    assert isinstance(once, str)
    assert detect_shape(once, ["STATUS"]) is None
    assert detect_shape(json.loads(once), ["STATUS"]) == "STATUS"


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_junk_matches_no_shape(junk: object) -> None:
    assert matching_shapes(junk) == set()
    assert detect_shape(junk, SHAPES) is None


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_explain_no_shape_is_one_short_line(junk: object) -> None:
    reason = explain_no_shape(junk, ["B", "A", "E", "D", "C"])
    assert reason and "\n" not in reason and len(reason) <= 300


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([], "a JSON array, not an object (expected shapes B, A, E, D, C)"),
        ("x", "a JSON string, not an object (expected shapes B, A, E, D, C)"),
        (
            {},
            "matches none of shapes B, A, E, D, C; closest is A: lacks `sentiment_signals`, "
            "`symbols_analyzed`",
        ),
    ],
    ids=["array", "string", "empty"],
)
def test_explain_no_shape_for_junk(payload: object, expected: str) -> None:
    assert explain_no_shape(payload, ["B", "A", "E", "D", "C"]) == expected


def test_explain_no_shape_names_the_closest_shape_and_its_missing_marker() -> None:
    payload = shape_b()
    del payload["pre_market_analysis"], payload["analysis_statistics"]
    assert explain_no_shape(payload, ["A", "E", "B"]) == (
        "matches none of shapes A, E, B; closest is B: "
        "needs one of `pre_market_analysis`, `analysis_statistics`"
    )


def test_explain_no_shape_points_at_the_bad_field() -> None:
    payload = shape_b()
    payload["trading_signals"]["AAPL"]["confidence"] = "high"
    assert explain_no_shape(payload, ["B"]) == (
        "does not match shape B: at trading_signals.AAPL.confidence: "
        "is a JSON string, expected number or null"
    )


def test_explain_no_shape_names_the_foreign_marker_of_an_ambiguous_payload() -> None:
    payload = {**shape_b(), "sentiment_signals": {}}
    assert explain_no_shape(payload, ["B", "A"]) == (
        "matches none of shapes B, A; closest is B: "
        "carries `sentiment_signals` (shape A), a marker of another shape"
    )


def test_explain_no_shape_reports_a_wrong_constant() -> None:
    payload = {**EXAMPLES["I"](), "job_type": "intra-day"}
    assert explain_no_shape(payload, ["I"]) == (
        'does not match shape I: at job_type: is "intra-day", expected "intraday"'
    )


def test_explain_no_shape_stays_short_for_a_huge_payload() -> None:
    payload = {"symbols_analyzed": "x" * 100_000, "trading_signals": {"A" * 5000: 1}}
    reason = explain_no_shape(payload, ["B", "E"])
    assert len(reason) <= 300 and reason.startswith("matches none of shapes B, E; closest is ")


def test_an_unknown_shape_name_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match=r"unknown payload shape 'Z'.*known shapes: A, B, C"):
        detect_shape({}, ["A", "Z"])


def test_every_shape_the_default_profile_names_exists() -> None:
    named = {shape for pattern in load_profile("default").patterns for shape in pattern.shapes}
    assert named <= set(SHAPES)


def test_validators_are_compiled_once() -> None:
    assert load_shape_schemas()["B"] is load_shape_schemas()["B"]


def test_no_candidates_explains_itself() -> None:
    assert detect_shape({"status": "done"}, []) is None
    assert (
        explain_no_shape({"status": "done"}, [])
        == "the key's pattern lists no payload shapes to try"
    )


def test_fast_and_reference_validators_agree_on_every_example() -> None:
    """detect_shape checks with jsonschema-rs; explanations use jsonschema: they must agree."""
    from verifier.shapes import _shapes

    payloads = [builder() for _, builder in VARIANTS.values()] + [[], "x", {}, {"foo": 1}]
    for shape in _shapes().values():
        for payload in payloads:
            assert shape.fast.is_valid(payload) == shape.validator.is_valid(payload), shape.name


@pytest.mark.parametrize(
    ("text", "said"),
    [('{"type": "objectx"}', "objectx"), ("{not json", "Expecting property name")],
)
def test_a_broken_shape_file_is_a_clear_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, text: str, said: str
) -> None:
    from verifier import shapes

    monkeypatch.setattr(shapes, "_schema_texts", lambda: iter([("A", text)]))
    shapes._shapes.cache_clear()
    shapes._python_validator.cache_clear()
    try:
        with pytest.raises(ProfileError, match=rf"A\.schema\.json is not a valid JSON Schema: .*{said}"):
            detect_shape({}, ["A"])
    finally:
        shapes._shapes.cache_clear()
        shapes._python_validator.cache_clear()
