"""KV entries → the shared model, by payload shape (see reference/kv-payloads.md §3–§5).

Per-symbol fields follow the field map's fallback order (§4); the first path that is *present*
wins, so an explicit `null` confidence stays NULL (null means failed). A confidence above 1 is a
percentage: divided by 100 and flagged in the record's notes. A symbol listed but absent from the
per-symbol map (shape A's failures) is counted as failed and yields no row.
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
from verifier.model import LATEST, JobKey, JobRecord, KvEntry, KvRecord, ReportRecord, SymbolResult
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


def first_present(obj: Any, *paths: tuple[str | int, ...]) -> Any:
    for path in paths:
        value = get_path(obj, *path)
        if value is not _MISSING:
            return value
    return None


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


def _symbols_a(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("sentiment_signals") or {}
    names = _symbol_list(p.get("symbols_analyzed"), per_symbol)
    results = []
    for name in names:
        o = per_symbol.get(name)
        if not isinstance(o, dict):
            continue  # a failure: shape A drops failed symbols from sentiment_signals
        sa = o.get("sentiment_analysis") or {}
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=_text(sa.get("sentiment")),
                confidence=_confidence(sa.get("confidence"), notes, name),
                reasoning=_text(sa.get("reasoning")),
                news_count=_int(o.get("news_count")),
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
        confidence = first_present(
            o,
            ("confidence_metrics", "overall_confidence"),
            ("enhanced_prediction", "confidence"),
            ("confidence",),
        )
        if _b_symbol_failed(o, confidence):
            failed += 1
        nested = get_path(o, "trading_signals")
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=_text(get_path(o, "sentiment_layers", 0, "sentiment")),
                confidence=_confidence(confidence, notes, name),
                direction=_text(
                    first_present(o, ("direction",), ("trading_signals", "primary_direction"))
                ),
                reasoning=_text(
                    first_present(
                        o,
                        ("trading_signals", "entry_signals", "reasoning"),
                        ("sentiment_layers", 0, "detailed_analysis", "reasoning"),
                    )
                ),
                signals=_json_or_none([nested] if isinstance(nested, dict) else None),
                news_count=_int(
                    get_path(o, "sentiment_layers", 0, "detailed_analysis", "articles_analyzed")
                ),
            )
        )
    return _Symbols(tuple(results), len(names), failed)


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
        raw_signal = o.get("signal")
        signal: dict[str, Any] = raw_signal if isinstance(raw_signal, dict) else {}
        confidence = first_present(
            o, ("signal", "confidence"), ("sentiment_layers", 0, "confidence")
        )
        if o.get("status") in FAILED_SYMBOL_STATUSES or signal.get("confidence") is None:
            failed += 1
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=_text(get_path(o, "sentiment_layers", 0, "sentiment")),
                confidence=_confidence(confidence, notes, name),
                direction=_text(signal.get("direction")),
                reasoning=_text(signal.get("reasoning")),
                signals=_json_or_none([signal] if signal else None),
                news_count=_int(o.get("articles_count")),
            )
        )
    return _Symbols(tuple(results), len(names), failed)


def _symbols_e(p: dict[str, Any], notes: list[str]) -> _Symbols:
    per_symbol = p.get("trading_signals") or {}
    names = _symbol_list(p.get("symbols_analyzed"), per_symbol)
    results = []
    for name in names:
        o = per_symbol.get(name)
        if not isinstance(o, dict):
            continue
        direction = _text(o.get("direction"))
        results.append(
            SymbolResult(
                symbol=name,
                sentiment=E_SENTIMENT.get((direction or "").lower()),
                confidence=_confidence(o.get("confidence"), notes, name),
                direction=direction,
                reasoning=_text(o.get("reasoning")),
                technical_data=_json_or_none(o.get("technical_indicators")),
            )
        )
    return _Symbols(tuple(results), len(names), len(names) - len(results))


def _symbols_c(p: dict[str, Any], notes: list[str]) -> _Symbols:
    by_symbol: dict[str, dict[str, Any]] = {}
    for s in p.get("symbols") or []:  # a repeated symbol keeps its first entry
        if isinstance(s, dict) and isinstance(s.get("symbol"), str):
            by_symbol.setdefault(s["symbol"], s)
    entries = list(by_symbol.values())
    results = tuple(
        SymbolResult(
            symbol=s["symbol"],
            sentiment=_text(s.get("sentiment")),
            confidence=_confidence(s.get("confidence"), notes, s["symbol"]),
            direction=_text(s.get("direction")),
        )
        for s in entries
    )
    processed = _int(p.get("total_symbols")) or len(results)
    fallbacks = sum(1 for s in entries if s.get("analysis_type") in FAILED_ANALYSIS_TYPES)
    return _Symbols(results, processed, max(processed - len(results), 0) + fallbacks)


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
    duration = first_present(p, *_DURATION_PATHS.get(shape, ()))
    job = JobRecord(
        key=JobKey(match.date, match.job_type, match.run),
        execution_time=_execution_time(match, shape, p),
        status=derived_status(symbols.processed, symbols.failed),
        duration_ms=_int(duration),
        symbols_processed=symbols.processed,
        symbols_successful=symbols.processed - symbols.failed,
        symbols_failed=symbols.failed,
    )
    ordered = tuple(sorted(symbols.results, key=lambda s: s.symbol))
    return _record(entry, shape, job, symbols=ordered, notes=notes)


def _report_status(shape: str, p: dict[str, Any], profile: Profile) -> str:
    if shape == "W":
        raw = p.get("job_status") or get_path(p, "_generation", "status")
        if isinstance(raw, str):
            return profile.status_map.get(raw, raw)
    return "success"  # a report that exists was produced by a run that finished


def _build_report(
    entry: KvEntry, match: KeyMatch, profile: Profile, shape: str, p: Any
) -> KvRecord:
    processed = _int(p.get("symbols_analyzed")) if isinstance(p, dict) else None
    high = first_present(p, ("high_confidence_count",), ("high_confidence_signals",))
    job = JobRecord(
        key=JobKey(match.date, match.job_type, match.run),
        execution_time=_execution_time(match, shape, p),
        status=_report_status(shape, p, profile),
        symbols_processed=processed,
    )
    report = ReportRecord(
        report_type=match.job_type,
        report_date=match.date,
        content=canonical_json_of_parsed(p),
        high_confidence_count=_int(high),
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
