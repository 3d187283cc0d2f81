"""Canonical forms, stable hashes and the equality rules of PRODUCT.md.

Every equality that is not byte-identical names the rule that made it equal:

| rule | applies to |
|---|---|
| `float_rel_1e-9` | floats within 1e-9 relative (or both within 1e-12 of zero) |
| `numeric_type` | an integer equal to a float (`3` vs `3.0`, as D1 returns JavaScript numbers) |
| `enum_case` | enum-like fields (sentiment, direction, status) compared case-insensitively |
| `json_canonical` | JSON text equal once key order and white space are ignored |
| `json_float_noise` | JSON equal once floats inside it are compared within 1e-9 relative |
| `zero_as_null` | a KV `0` stored as D1 NULL for an optional counter (the plan adapter's `x \\|\\| null`) |
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import orjson

FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12
ENUM_FIELDS = frozenset({"sentiment", "direction", "status"})
JSON_FIELDS = frozenset({"signals", "technical_data", "content", "metadata"})
OPTIONAL_COUNTERS = frozenset(
    {
        "duration_ms",
        "symbols_processed",
        "symbols_successful",
        "symbols_failed",
        "news_count",
        "high_confidence_count",
    }
)
NULL_MARKER = "\x00∅"  # cannot come out of canonical JSON or a text field's repr
FIELD_SEPARATOR = "\x1f"


def canonical_number(value: float) -> int | float:
    """An integral float as int, so `3.0` and `3` serialise alike."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _canonical_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        # A number too large for a double (`1e400`, valid JSON) parses to infinity, which JSON
        # cannot hold: written `null`, as JavaScript's JSON.stringify (the worker's) and orjson
        # write it, so canonical JSON exists for every parsed value.
        return canonical_number(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_value(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, integral floats as integers, numbers beyond a double
    (infinite once parsed) as null, non-ASCII kept."""
    return json.dumps(
        _canonical_value(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


# orjson reads an integer beyond 64 bits as a float, so text holding a run of 19 digits (even in
# a string or a long fraction) takes the exact path. A table maps digits to "0" and other bytes
# to " " so one C-level scan finds such a run.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def parse_json_text(text: str | bytes) -> Any:
    """Parse JSON text, refusing NaN/Infinity literals (they are not JSON).

    orjson parses what it accepts into the same values as `json`; text it refuses (lone
    surrogates, `1e400`, invalid JSON) or may read differently (integers beyond 64 bits) goes
    through `json`, which decides and words any error exactly as before.
    """
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _LONG_RUN not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # a UnicodeDecodeError is the caller's to word
    return json.loads(text, parse_constant=_reject_constant)


def is_json_text(text: str) -> bool:
    """Whether `text` is JSON (NaN/Infinity refused). Same answer as parsing it, faster."""
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        try:
            parse_json_text(text)
            return True
        except (ValueError, RecursionError):
            return False


# Where orjson's output may differ from `json.dumps`: an integral float (`3.0`, `1e+16`, which
# canonical JSON writes as an integer), an exponent (`1e-7` vs `1e-07`) or a float below 1e-4
# (`0.00001` vs `1e-05`). One C-level pass keeps only the bytes those forms are made of (digits
# as "0" or "1", ".", "e", signs as "-", terminators as ",") and drops the rest (letters,
# quotes, blanks), so the searches that follow run over a few hundred bytes, not the whole
# text. Dropping bytes can only join distant ones into a false hit, never hide a form: a hit,
# even a false one, only means taking the exact path.
_FLOAT_MARKS = bytes(
    0x30 if b == 0x30
    else 0x31 if 0x31 <= b <= 0x39
    else 0x2D if b in b"+-"
    else 0x2C if b in b",]}"
    else 0x65 if b in b"eE"
    else b
    for b in range(256)
)
_NOT_FLOAT_MARKS = bytes(b for b in range(256) if b not in b"0123456789+-,]}eE.")


_EXPONENT_MARKS = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x65 if b in b"eE" else 0x2D if b in b"+-" else 0x20
    for b in range(256)
)


def _may_differ(raw: bytes) -> bool:
    """Whether orjson's text `raw` may differ from what canonical JSON writes for its value."""
    marks = raw.translate(_FLOAT_MARKS, _NOT_FLOAT_MARKS)
    if b".0," in marks or marks.endswith(b".0") or b"0.0000" in marks:
        return True
    if b"e-" not in marks:
        return False
    # Words keep their "e"s ("pre-market"): an exponent is a digit, "e", a sign, side by side.
    return b"0e-" in raw.translate(_EXPONENT_MARKS)


def canonical_json_of_parsed(value: Any) -> str:
    """`canonical_json` of a value parsed from JSON text (every key a string): same text, faster.

    orjson writes it when nothing in it may be written differently; else the exact path runs.
    """
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, a lone surrogate: the exact path decides
        return canonical_json(value)
    if _may_differ(raw):
        return canonical_json(value)
    return raw.decode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stable_id(*parts: str | None) -> str:
    """A 16-hex id from parts joined with a separator; None is a distinct marker."""
    text = FIELD_SEPARATOR.join(NULL_MARKER if p is None else p for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def floats_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_numbers(a: Any, b: Any) -> tuple[bool, str | None]:
    if a == b:
        same_type = type(a) is type(b)
        return True, None if same_type else "numeric_type"
    if (isinstance(a, float) or isinstance(b, float)) and floats_close(float(a), float(b)):
        return True, "float_rel_1e-9"
    return False, None


def _json_close(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b or floats_close(float(a), float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(type(a) is type(b) and a == b)


def compare_json_text(kv_text: str, d1_text: str) -> tuple[bool, str | None]:
    """Compare two JSON texts; the KV side is already canonical."""
    try:
        d1_value = parse_json_text(d1_text)
    except ValueError:
        return False, None
    if canonical_json(d1_value) == kv_text:
        return True, "json_canonical"
    if _json_close(parse_json_text(kv_text), d1_value):
        return True, "json_float_noise"
    return False, None


def compare_field(name: str, kv_value: Any, d1_value: Any) -> tuple[bool, str | None]:
    """Whether a KV value and a D1 value are equal under PRODUCT.md's rules, and by which rule."""
    if kv_value is None or d1_value is None:
        if kv_value is None and d1_value is None:
            return True, None
        if name in OPTIONAL_COUNTERS and kv_value == 0 and d1_value is None:
            return True, "zero_as_null"
        return False, None
    if _is_number(kv_value) and _is_number(d1_value):
        return compare_numbers(kv_value, d1_value)
    if isinstance(kv_value, str) and isinstance(d1_value, str):
        if kv_value == d1_value:
            return True, None
        if name in ENUM_FIELDS and kv_value.casefold() == d1_value.casefold():
            return True, "enum_case"
        if name in JSON_FIELDS:
            return compare_json_text(kv_value, d1_value)
    return False, None
