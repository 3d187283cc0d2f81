"""KV entries → the shared model, by payload shape (see reference/kv-payloads.md §3–§5).

Per-symbol fields follow the field map's fallback order (§4); the first path that is *present*
wins, so an explicit `null` confidence stays NULL (null means failed). A confidence above 1 is a
percentage: divided by 100 and flagged in the record's notes. A symbol listed but absent from the
per-symbol map (shape A's failures) is counted as failed and yields no row.

A field none of whose paths is present in the payload is *absent* (`absent` on the record): None,
and not compared, unlike a field present as `null` (PRODUCT.md "What is compared"). A field kv2d1
derives (status, the symbol counts of a job, shape E's sentiment from its direction) is present
when what it is derived from is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from verifier.calendar import instant_from_epoch_ms, instant_of_run, iso_utc, parse_instant
from verifier.canonical import (
    canonical_json_of_parsed,
    parse_json_text,
    sha256_hex,
)
from verifier.model import (
    LATEST,
    NOTHING_ABSENT,
    JobKey,
    JobRecord,
    KvEntry,
    KvRecord,
    ReportRecord,
    SymbolResult,
)
from verifier.profile import KeyMatch, Profile
from verifier.shapes import detect_shape, explain_no_shape

FAILED_ANALYSIS_TYPES = frozenset({"failed", "critical_failure", "error", "neutral_fallback"})
FAILED_SYMBOL_STATUSES = frozenset({"skipped", "failed"})
E_SENTIMENT = {"up": "bullish", "down": "bearish", "neutral": "neutral", "hold": "neutral"}
_MISSING = object()


@dataclass(frozen=True, slots=True)
class InvalidPayload:
    """A KV value that is not UTF-8, not JSON, or matches none of its pattern's shapes."""

    kv_key: str
    match: KeyMatch
    reason: str
    expiration: int | None


def normalise_entry(entry: KvEntry, match: KeyMatch, profile: Profile) -> KvRecord | InvalidPayload:
    """One KV entry as a record of the shared model, or the reason it cannot be one."""
    payload = _decode(entry)
    if isinstance(payload, _Failure):
        return InvalidPayload(entry.key, match, payload.reason, entry.expiration)
    if match.pattern.kind == "status" and isinstance(payload, str):
        inner = _decode_text(payload)  # a JSON string holding the JSON object
        payload = inner if not isinstance(inner, _Failure) else payload
    shape = detect_shape(payload, match.pattern.shapes)
    if shape is None:
        reason = explain_no_shape(payload, match.pattern.shapes)
        return InvalidPayload(entry.key, match, reason, entry.expiration)
    builder = _BUILDERS[match.pattern.kind]
    return builder(entry, match, profile, shape, payload)


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str


def _decode(entry: KvEntry) -> Any:
    try:
        return parse_json_text(entry.value)
    except UnicodeDecodeError as exc:
        return _Failure(f"value is not UTF-8 text (byte {exc.start}: {exc.reason})")
    except (ValueError, RecursionError) as exc:
        return _Failure(f"value is not JSON: {str(exc)[:120]}")


def _decode_text(text: str) -> Any:
    try:
        return parse_json_text(text)
    except (ValueError, RecursionError) as exc:
        return _Failure(f"value is not JSON: {str(exc)[:120]}")


# --- small path helpers --------------------------------------------------------------------


def get_path(obj: Any, *path: str | int) -> Any:
    """The value at a path of keys/indexes, or `_MISSING` when any step is absent."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or len(obj) <= step:
                return _MISSING
            obj = obj[step]
        elif isinstance(obj, dict) and step in obj:
            obj = obj[step]
        else:
            return _MISSING
    return obj


def _first(obj: Any, *paths: tuple[str | int, ...]) -> Any:
    """The value at the first present path, or `_MISSING` when none is."""
    for path in paths:
        value = get_path(obj, *path)
        if value is not _MISSING:
            return value
    return _MISSING


_ABSENT_SETS: dict[frozenset[str], frozenset[str]] = {}


def _absent(never: frozenset[str] = NOTHING_ABSENT, **values: Any) -> frozenset[str]:
    """The fields a payload does not carry: `never` (the shape has no path for them) and those
    whose value is `_MISSING`. Interned: a few distinct sets stand for millions of records."""
    names = never.union(name for name, value in values.items() if value is _MISSING)
    return _ABSENT_SETS.setdefault(names, names)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def _confidence(value: Any, notes: list[str], symbol: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if number > 1:
        notes.append(f"{symbol}: confidence {value} read as percent")
        return number / 100
    return number


def _json_or_none(value: Any) -> str | None:
    return None if value is None or value is _MISSING else canonical_json_of_parsed(value)


# --- per-symbol extraction, by shape (reference §4) ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Symbols:
    results: tuple[SymbolResult, ...]
    processed: int
    failed: int


_NEVER_A = frozenset({"direction", "signals", "technical_data"})
_NEVER_B = _NEVER_D = frozenset({"technical_data"})
_NEVER_C = frozenset({"reasoning", "signals", "technical_data", "news_count"})
_NEVER_E = frozenset({"signals", "news_count"})


def _symbols_a(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("sentiment_signals") or {}
    names = _symbol_list(p.get("symbols_analyzed"), per_symbol)
    results = []
    for name in names:
        o = per_symbol.get(name)
        if not isinstance(o, dict):
            continue  # a failure: shape A drops failed symbols from sentiment_signals
        sentiment = get_path(o, "sentiment_analysis", "sentiment")
        confidence = get_path(o, "sentiment_analysis", "confidence")
        reasoning = get_path(o, "sentiment_analysis", "reasoning")
        news = get_path(o, "news_count")
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=_text(sentiment),
                confidence=_confidence(confidence, notes, name),
                reasoning=_text(reasoning),
                news_count=_int(news),
                absent=_absent(
                    _NEVER_A,
                    sentiment=sentiment,
                    confidence=confidence,
                    reasoning=reasoning,
                    news_count=news,
                ),
            )
        )
    return _Symbols(tuple(results), len(names), len(names) - len(results))


def _symbols_b(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("trading_signals") or {}
    names = _symbol_list(p.get("symbols_analyzed"), per_symbol)
    results, failed = [], 0
    for name in names:
        o = per_symbol.get(name)
        if not isinstance(o, dict):
            failed += 1
            continue
        confidence = _first(
            o,
            ("confidence_metrics", "overall_confidence"),
            ("enhanced_prediction", "confidence"),
            ("confidence",),
        )
        if _b_symbol_failed(o, None if confidence is _MISSING else confidence):
            failed += 1
        sentiment = get_path(o, "sentiment_layers", 0, "sentiment")
        direction = _first(o, ("direction",), ("trading_signals", "primary_direction"))
        reasoning = _first(
            o,
            ("trading_signals", "entry_signals", "reasoning"),
            ("sentiment_layers", 0, "detailed_analysis", "reasoning"),
        )
        nested = get_path(o, "trading_signals")
        news = get_path(o, "sentiment_layers", 0, "detailed_analysis", "articles_analyzed")
        signals = [nested] if isinstance(nested, dict) else None
        results.append(_layered_symbol(
            name, _NEVER_B, notes, sentiment=sentiment, confidence=confidence,
            direction=direction, reasoning=reasoning, signals=(nested, signals), news=news,
        ))  # fmt: skip
    return _Symbols(tuple(results), len(names), failed)


def _layered_symbol(
    name: str,
    never: frozenset[str],
    notes: list[str],
    *,
    sentiment: Any,
    confidence: Any,
    direction: Any,
    reasoning: Any,
    signals: tuple[Any, Any],  # (the raw value, for `absent`; what `signals` holds)
    news: Any,
) -> SymbolResult:
    """A symbol result of a shape with sentiment layers and signals (B, D), from its raw values:
    converted for the model, and those the payload lacks named in `absent`."""
    raw_signals, held = signals
    return SymbolResult(
        symbol=name,
        sentiment=_text(sentiment),
        confidence=_confidence(confidence, notes, name),
        direction=_text(direction),
        reasoning=_text(reasoning),
        signals=_json_or_none(held),
        news_count=_int(news),
        absent=_absent(
            never, sentiment=sentiment, confidence=confidence, direction=direction,
            reasoning=reasoning, signals=raw_signals, news_count=news,
        ),
    )


def _b_symbol_failed(o: dict[str, Any], confidence: Any) -> bool:
    """Shape B's failure markers, including the KV era's fake confidences (reference §7.2)."""
    if o.get("analysis_type") in FAILED_ANALYSIS_TYPES or confidence is None:
        return True
    if get_path(o, "analysis_metadata", "fully_failed") is True:
        return True
    return bool(get_path(o, "trading_signals", "signal_type") == "ERROR")


def _symbols_d(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("trading_signals") or {}
    names = sorted(per_symbol)
    results, failed = [], 0
    for name in names:
        o = per_symbol[name]
        if not isinstance(o, dict):
            failed += 1
            continue
        raw_signal = get_path(o, "signal")
        signal: dict[str, Any] = raw_signal if isinstance(raw_signal, dict) else {}
        confidence = _first(o, ("signal", "confidence"), ("sentiment_layers", 0, "confidence"))
        if o.get("status") in FAILED_SYMBOL_STATUSES or signal.get("confidence") is None:
            failed += 1
        sentiment = get_path(o, "sentiment_layers", 0, "sentiment")
        direction = get_path(o, "signal", "direction")
        reasoning = get_path(o, "signal", "reasoning")
        news = get_path(o, "articles_count")
        results.append(_layered_symbol(
            name, _NEVER_D, notes, sentiment=sentiment, confidence=confidence,
            direction=direction, reasoning=reasoning,
            signals=(raw_signal, [signal] if signal else None), news=news,
        ))  # fmt: skip
    return _Symbols(tuple(results), len(names), failed)


def _symbols_e(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("trading_signals") or {}
    names = _symbol_list(p.get("symbols_analyzed"), per_symbol)
    results = []
    for name in names:
        o = per_symbol.get(name)
        if not isinstance(o, dict):
            continue
        raw_direction = get_path(o, "direction")
        direction = _text(raw_direction)
        confidence = get_path(o, "confidence")
        reasoning = get_path(o, "reasoning")
        technical = get_path(o, "technical_indicators")
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=E_SENTIMENT.get((direction or "").lower()),
                confidence=_confidence(confidence, notes, name),
                direction=direction,
                reasoning=_text(reasoning),
                technical_data=_json_or_none(technical),
                absent=_absent(
                    _NEVER_E,
                    sentiment=raw_direction,  # derived from the direction
                    confidence=confidence,
                    direction=raw_direction,
                    reasoning=reasoning,
                    technical_data=technical,
                ),
            )
        )
    return _Symbols(tuple(results), len(names), len(names) - len(results))


def _symbols_c(p: dict[str, Any], notes: list[str]) -> _Symbols:
    by_symbol: dict[str, dict[str, Any]] = {}
    for s in p.get("symbols") or []:  # a repeated symbol keeps its first entry
        if isinstance(s, dict) and isinstance(s.get("symbol"), str):
            by_symbol.setdefault(s["symbol"], s)
    entries = list(by_symbol.values())
    results = tuple(_symbol_c(s, notes) for s in entries)
    processed = _int(p.get("total_symbols")) or len(results)
    fallbacks = sum(1 for s in entries if s.get("analysis_type") in FAILED_ANALYSIS_TYPES)
    return _Symbols(results, processed, max(processed - len(results), 0) + fallbacks)


def _symbol_c(s: dict[str, Any], notes: list[str]) -> SymbolResult:
    sentiment, confidence = get_path(s, "sentiment"), get_path(s, "confidence")
    direction = get_path(s, "direction")
    return SymbolResult(
        symbol=s["symbol"],
        sentiment=_text(sentiment),
        confidence=_confidence(confidence, notes, s["symbol"]),
        direction=_text(direction),
        absent=_absent(_NEVER_C, sentiment=sentiment, confidence=confidence, direction=direction),
    )


def _symbol_list(listed: Any, per_symbol: dict[str, Any]) -> list[str]:
    if isinstance(listed, list) and all(isinstance(s, str) for s in listed):
        return list(dict.fromkeys(listed))  # keep order, drop repeats
    return sorted(per_symbol)


SYMBOL_EXTRACTORS: dict[str, Callable[[dict[str, Any], list[str]], _Symbols]] = {
    "A": _symbols_a,
    "B": _symbols_b,
    "C": _symbols_c,
    "D": _symbols_d,
    "E": _symbols_e,
}


# --- job-level fields ----------------------------------------------------------------------

_DURATION_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "A": (("execution_metrics", "total_time_ms"),),
    "B": (("pre_market_analysis", "execution_time_ms"),),
}
_INSTANT_PATHS: tuple[tuple[str, ...], ...] = (
    ("analysis_time",),
    ("generated_at",),
    ("timestamp",),
    ("last_updated",),
    ("metadata", "generatedAt"),
    ("_generation", "generatedAt"),
)
_CRON_ID = re.compile(r"^cron_(\d{10,16})$")


def payload_instant(shape: str, p: Any) -> dt.datetime | None:
    """When the run happened, from the payload; the cron id is a true instant, so it wins."""
    if not isinstance(p, dict):
        return None
    cron = _CRON_ID.match(str(p.get("cron_execution_id", "")))
    if cron:
        return instant_from_epoch_ms(int(cron.group(1)))
    if shape == "C" and _int(p.get("execution_time")):
        return instant_from_epoch_ms(int(p["execution_time"]))
    for path in _INSTANT_PATHS:
        value = get_path(p, *path)
        if isinstance(value, str) and (instant := parse_instant(value)) is not None:
            return instant
    return None


def derived_status(processed: int, failed: int) -> str:
    if failed == 0:
        return "success"
    return "failure" if failed >= processed else "partial"


def _execution_time(match: KeyMatch, shape: str, payload: Any) -> str | None:
    if match.run != LATEST:
        return iso_utc(instant_of_run(match.date, match.run))
    instant = payload_instant(shape, payload)
    return iso_utc(instant) if instant else None


def _build_job(entry: KvEntry, match: KeyMatch, profile: Profile, shape: str, p: Any) -> KvRecord:
    notes: list[str] = []
    extractor = SYMBOL_EXTRACTORS.get(shape)
    symbols = extractor(p, notes) if extractor else _Symbols((), 0, 0)
    duration = _first(p, *_DURATION_PATHS.get(shape, ()))
    job = JobRecord(
        key=JobKey(match.date, match.job_type, match.run),
        execution_time=_execution_time(match, shape, p),
        status=derived_status(symbols.processed, symbols.failed),
        duration_ms=_int(duration),
        symbols_processed=symbols.processed,
        symbols_successful=symbols.processed - symbols.failed,
        symbols_failed=symbols.failed,
        absent=_absent(_NEVER_JOB, duration_ms=duration),
    )
    ordered = tuple(sorted(symbols.results, key=lambda s: s.symbol))
    return _record(entry, shape, job, symbols=ordered, notes=notes)


# No payload carries an error message; a report's payload carries no duration and no symbol
# counts but (some shapes) `symbols_analyzed`, the number processed.
_NEVER_JOB = frozenset({"error_message"})
_NEVER_REPORT_JOB = frozenset(
    {"duration_ms", "symbols_successful", "symbols_failed", "error_message"}
)
_NEVER_REPORT = frozenset({"summary"})


def _report_status(shape: str, p: dict[str, Any], profile: Profile) -> str:
    if shape == "W":
        raw = p.get("job_status") or get_path(p, "_generation", "status")
        if isinstance(raw, str):
            return profile.status_map.get(raw, raw)
    return "success"  # a report that exists was produced by a run that finished


def _build_report(
    entry: KvEntry, match: KeyMatch, profile: Profile, shape: str, p: Any
) -> KvRecord:
    processed = get_path(p, "symbols_analyzed")
    high = _first(p, ("high_confidence_count",), ("high_confidence_signals",))
    job = JobRecord(
        key=JobKey(match.date, match.job_type, match.run),
        execution_time=_execution_time(match, shape, p),
        status=_report_status(shape, p, profile),
        symbols_processed=_int(processed),
        absent=_absent(_NEVER_REPORT_JOB, symbols_processed=processed),
    )
    report = ReportRecord(
        report_type=match.job_type,
        report_date=match.date,
        content=canonical_json_of_parsed(p),
        high_confidence_count=_int(high),
        absent=_absent(_NEVER_REPORT, high_confidence_count=high),
    )
    return _record(entry, shape, job, report=report)


def _build_status(
    entry: KvEntry, match: KeyMatch, profile: Profile, shape: str, p: Any
) -> KvRecord:
    raw = p.get("status") if isinstance(p, dict) else None
    status = profile.status_map.get(raw) if isinstance(raw, str) else None
    notes = [] if status else [f"status {raw!r} is not representable in D1; ignored"]
    job = JobRecord(key=JobKey(match.date, match.job_type, LATEST), status=status)
    return _record(entry, shape, job, status_only=True, notes=notes)


def _record(
    entry: KvEntry,
    shape: str,
    job: JobRecord,
    *,
    symbols: tuple[SymbolResult, ...] = (),
    report: ReportRecord | None = None,
    status_only: bool = False,
    notes: Iterable[str] = (),
) -> KvRecord:
    return KvRecord(
        kv_key=entry.key,
        shape=shape,
        job=job,
        symbols=symbols,
        report=report,
        expiration=entry.expiration,
        value_sha256=sha256_hex(entry.value),
        status_only=status_only,
        notes=tuple(notes),
    )


_BUILDERS: dict[str, Callable[[KvEntry, KeyMatch, Profile, str, Any], KvRecord]] = {
    "job": _build_job,
    "report": _build_report,
    "status": _build_status,
}
