"""Payload shapes: which JSON Schema under `schema/kv/` a KV value matches (kv-payloads.md §3).

Each shape (A, B, C, C_PRIME, D, E, F, G, I, EOD, W, STATUS) is one Draft 2020-12 file,
`schema/kv/{SHAPE}.schema.json`. The schemas are mutually exclusive by construction: a shape
requires its marker keys (A `sentiment_signals`, D `market_pulse`, …) and refuses the markers of
every other shape, so a payload matches at most one shape and a pattern's candidate order only
decides how soon the match is found. A payload carrying two shapes' markers is ambiguous and
matches none: that is an `invalid_kv_payload` finding, not a guess.

The fast (Rust) validators are compiled once per process; the Python ones, which explain a
mismatch, only when a mismatch needs explaining. `detect_shape` runs once per KV key, so before the full
validation it skips a candidate whose top-level `required` keys are not all in the payload.

The schemas are package data of `kv2d1.schema` (the repository's `schema/` directory, mapped by
`pyproject.toml`); a bare checkout reads them from the repository instead.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator

from verifier.errors import ProfileError

SCHEMA_PACKAGE = "kv2d1.schema"
SCHEMA_SUFFIX = ".schema.json"
_MAX_REASON = 300
_LOCAL_DEF = "#/$defs/"
_DATA_KEYWORDS = frozenset({"$defs", "const", "enum", "examples", "default"})  # values, not schemas


@dataclass(frozen=True, slots=True)
class _Shape:
    """One compiled shape schema and the top-level facts the cheap pre-check needs."""

    name: str
    schema: dict[str, Any]
    fast: Any  # a jsonschema_rs validator: same schema, compiled in Rust (~200x faster to check)
    object_only: bool
    required: frozenset[str]
    known: frozenset[str]

    @property
    def validator(self) -> Validator:
        """The Python validator, built on first use: only explaining a mismatch needs it."""
        return _python_validator(self.name)

    def overlap(self, payload: object) -> int:
        """How many of the payload's top-level keys this shape knows (closeness, for explaining)."""
        return len(self.known.intersection(payload)) if isinstance(payload, dict) else 0

    def may_match(self, payload: object) -> bool:
        if not isinstance(payload, dict):
            return not self.object_only
        return all(key in payload for key in self.required)


def load_shape_schemas() -> dict[str, Validator]:
    """Every shape's compiled validator, by shape name (cached; the files are read once).

    A validator's `.schema` is its file with the local `$ref`s inlined (same meaning, faster).
    """
    return {name: _python_validator(name) for name in _shapes()}


def detect_shape(payload: object, candidates: Sequence[str]) -> str | None:
    """The first of `candidates` whose schema the (decoded JSON) payload satisfies, or None.

    A `status:` value stored as a JSON string holding JSON must be decoded twice by the caller:
    the STATUS schema validates the object, not the string.
    """
    shapes = _shapes()
    for name in candidates:
        shape = _shape(shapes, name)
        if shape.may_match(payload) and shape.fast.is_valid(payload):
            return name
    return None


def explain_no_shape(payload: object, candidates: Sequence[str]) -> str:
    """One line saying why the payload matches none of `candidates`: the closest shape's best error.

    The closest shape is the one sharing most top-level keys with the payload, then the one with
    the fewest errors, then the first candidate.
    """
    if not candidates:
        return "the key's pattern lists no payload shapes to try"
    wanted = f"shape {candidates[0]}" if len(candidates) == 1 else "shapes " + ", ".join(candidates)
    shapes = _shapes()
    tried = [_shape(shapes, name) for name in candidates]
    if not isinstance(payload, dict) and all(shape.object_only for shape in tried):
        return f"a JSON {_json_type(payload)}, not an object (expected {wanted})"
    attempts = [(shape, list(shape.validator.iter_errors(payload))) for shape in tried]
    for shape, errors in attempts:
        if not errors:
            return f"matches shape {shape.name}"
    closest, errors = min(  # min() keeps the first of equals: candidate order breaks ties
        attempts, key=lambda a: (-a[0].overlap(payload), len(a[1]))
    )
    reason = _reason(closest, payload, errors)
    if len(candidates) == 1:
        return _one_line(f"does not match {wanted}: {reason}")
    return _one_line(f"matches none of {wanted}; closest is {closest.name}: {reason}")


# --- loading -------------------------------------------------------------------------------


@functools.cache
def _shapes() -> dict[str, _Shape]:
    return {name: _compile(name, text) for name, text in _schema_texts()}


def shape_schema_dir() -> Traversable:
    """The directory of the shape schemas: package data when installed, else the repository's."""
    try:
        return resources.files(SCHEMA_PACKAGE) / "kv"
    except ModuleNotFoundError:  # a bare checkout: kv2d1 is not installed
        return Path(__file__).resolve().parents[1] / "schema" / "kv"


def _schema_texts() -> Iterator[tuple[str, str]]:
    root = shape_schema_dir()
    try:
        entries = sorted(root.iterdir(), key=lambda entry: entry.name)
        for entry in entries:
            if entry.name.endswith(SCHEMA_SUFFIX):
                yield entry.name.removesuffix(SCHEMA_SUFFIX), entry.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(
            f"payload shape schemas cannot be read from {root}: {exc}; reinstall kv2d1"
        ) from exc


def _compile(name: str, text: str) -> _Shape:
    """The fast validator of one schema file; compiling it checks the file against the meta-schema."""
    try:
        schema = json.loads(text)
        fast = jsonschema_rs.Draft202012Validator(schema)
    except (ValueError, jsonschema_rs.ValidationError) as exc:
        message = getattr(exc, "message", str(exc)).splitlines()[0]
        raise ProfileError(
            f"payload shape schema {name}{SCHEMA_SUFFIX} is not a valid JSON Schema: {message}; "
            "fix the file or reinstall kv2d1"
        ) from exc
    return _Shape(
        name=name,
        schema=schema,
        fast=fast,
        object_only=schema.get("type") == "object",
        required=frozenset(schema.get("required", ())),
        known=frozenset(schema.get("properties", {})),
    )


@functools.cache
def _python_validator(name: str) -> Validator:
    schema = _shapes()[name].schema
    return Draft202012Validator(_inline_local_refs(schema, schema.get("$defs", {})))


def _inline_local_refs(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The schema with each bare `{"$ref": "#/$defs/x"}` replaced by `x` itself.

    Same meaning, about twice as fast to validate: jsonschema resolves a `$ref` on every visit.
    A recursive definition keeps its `$ref` (the `$defs` stay in place for it).
    """
    if isinstance(node, list):
        return [_inline_local_refs(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if len(node) == 1 and isinstance(ref, str) and ref.startswith(_LOCAL_DEF):
        name = ref.removeprefix(_LOCAL_DEF)
        if name in defs and name not in seen:
            return _inline_local_refs(defs[name], defs, (*seen, name))
    return {
        key: value if key in _DATA_KEYWORDS else _inline_local_refs(value, defs, seen)
        for key, value in node.items()
    }


def _shape(shapes: dict[str, _Shape], name: str) -> _Shape:
    try:
        return shapes[name]
    except KeyError:
        known = ", ".join(sorted(shapes))
        raise ProfileError(
            f"unknown payload shape {name!r} in the profile; known shapes: {known}"
        ) from None


# --- explaining ----------------------------------------------------------------------------


def _reason(shape: _Shape, payload: object, errors: list[ValidationError]) -> str:
    missing = sorted(shape.required.difference(payload)) if isinstance(payload, dict) else []
    if missing:  # the most useful thing to say, and jsonschema reports each one separately
        return "lacks " + ", ".join(f"`{key}`" for key in missing)
    error = best_match(errors)
    return _describe(shape, error) if error is not None else "does not match"


def _describe(shape: _Shape, error: ValidationError) -> str:
    where = "" if error.json_path == "$" else f"at {error.json_path.removeprefix('$.')}: "
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [key for key in expected if isinstance(value, dict) and key not in value]
        return where + "lacks " + ", ".join(f"`{key}`" for key in missing)
    if kind == "not":
        return where + _foreign_markers(shape, expected, value)
    if kind in ("anyOf", "oneOf"):
        labels = [_branch_label(branch) for branch in expected]
        if all(labels):
            return where + "needs one of " + ", ".join(str(label) for label in labels)
        inner = best_match(error.context or [])
        return _describe(shape, inner) if inner is not None else where + "matches no alternative"
    if kind == "type":
        return f"{where}is a JSON {_json_type(value)}, expected {_listing(expected)}"
    if kind in ("const", "enum"):
        wanted = _short(expected) if kind == "const" else "one of " + _short(expected)
        return f"{where}is {_short(value)}, expected {wanted}"
    return where + str(error.message)


def _foreign_markers(shape: _Shape, forbidden: Any, value: Any) -> str:
    """Which other shape's markers a payload carries (the `not` branches are titled)."""
    branches = forbidden.get("anyOf", [forbidden]) if isinstance(forbidden, dict) else []
    evolve = shape.validator.evolve
    titles = [
        str(b.get("title", "a forbidden key"))
        for b in branches
        if isinstance(b, dict) and evolve(schema=b).is_valid(value)
    ]
    return "carries " + (", ".join(titles) or "a forbidden key") + ", a marker of another shape"


def _branch_label(branch: Any) -> str | None:
    if not isinstance(branch, dict):
        return None
    if "title" in branch:
        return str(branch["title"])
    required = branch.get("required")
    if isinstance(required, list) and set(branch) == {"required"}:
        return " + ".join(f"`{key}`" for key in required)
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _listing(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"
