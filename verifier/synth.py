"""Synthetic workers: realistic KV payloads of every shape, the D1 a dual-writer made, seeded defects.

`generate` describes a worker of the default profile over a window of business days
(reference/kv-payloads.md §2–§7):

- every NYSE trading day an `analysis` job whose shape follows the eras — KV-era cron runs (B,
  per-run keys `analysis_{date}_{HHMMSS}` plus the daily key) or the batch summary C, then
  HEAD-era B, then a mix of manual A, fallback E, bridge D and B — and the pre-market (G),
  intraday (I) and end-of-day (EOD) reports; `status:analysis:` / `status:morning_predictions:`
  keys in the cron eras (sometimes double-encoded, as the worker stored them);
- every Sunday the weekly report (W);
- optionally `unrelated_per_job` keys no pattern maps (page caches, telemetry, granular C′).

The D1 side is what a correct dual-writer wrote: each job's KV record normalised with the real
`normalise_entry` and mapped with `job_row` / `symbol_row` / `report_row`, once per job natural
key (a per-run key, the daily key holding that run and its `status:` key are one job). So verify
finds nothing but the seeded defects, each listed in `SyntheticWorker.seeded` under the natural
key verify reports it with.

Everything is deterministic and lazy: a day's content comes from its own `random.Random` seeded by
(seed, date), so `iter_kv_entries` and `iter_d1_jobs` stream any number of days in bounded memory
and always agree. `write_worker` lays a worker out as a wrangler project (config, local KV and D1
state) that `kv2d1 verify --local` reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import json
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from verifier.calendar import ET, et_run_time, is_trading_day, iso_utc, parse_instant, today_et
from verifier.canonical import OPTIONAL_COUNTERS, canonical_json
from verifier.d1 import job_row, report_row, run_of, symbol_row
from verifier.model import Category, JobKey, KvEntry, KvRecord, Window
from verifier.normalise import InvalidPayload, normalise_entry
from verifier.profile import Profile, load_profile, schema_dir

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "GOOGL", "TSLA", "NVDA")
_MORE = "AMZN META AMD NFLX AVGO CRM ORCL ADBE INTC QCOM JPM BAC GS V MA XOM CVX PFE LLY UNH KO PEP"
MORE_SYMBOLS = tuple(f"{_MORE} WMT COST DIS BA UBER SHOP PLTR BRK.B".split())
KV_BINDING = "MARKET_ANALYSIS_CACHE"
D1_BINDING = "PREDICT_JOBS_DB"
D1_DATABASE_NAME = "predict-jobs"
COMPATIBILITY_DATE = "2025-10-24"
SEEDED_FILE = "SEEDED_DEFECTS.json"

LIVE_FOR = dt.timedelta(days=180)  # instead of the real 1 h – 90 d TTLs: a demo must stay live
LIVE_AT_LEAST = dt.timedelta(days=14)
EXPIRES_SOON_IN = dt.timedelta(hours=30)  # inside verify's 48 h
MIN_DEFECT_DAYS = 8
NOISE_RULES = ("enum_case", "float_rel_1e-9", "json_canonical", "zero_as_null")
_CRONS_UTC = (
    (12, 30, "morning_prediction_alerts"),
    (16, 0, "midday_validation_prediction"),
    (20, 5, "next_day_market_prediction"),
)
_INSERT_CHUNK = 5000

Payload = dict[str, Any]


# --- public records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeededDefect:
    """One finding verify must report: its category and natural key (as in verifier/diff.py)."""

    category: Category
    natural_key: str
    note: str

    def to_json(self) -> dict[str, str]:
        return {"category": self.category.value, "natural_key": self.natural_key, "note": self.note}


@dataclass(frozen=True, slots=True)
class D1Row:
    """One row to insert: its primary key and its other columns (children carry execution_id)."""

    row_id: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class D1JobRows:
    """One `job_executions` row with its `analysis_results` and `report_snapshots` rows."""

    execution: D1Row
    symbols: tuple[D1Row, ...] = ()
    reports: tuple[D1Row, ...] = ()


@dataclass(frozen=True, slots=True)
class SymbolView:
    """One symbol's analysis in one run, before a payload shape lays it out."""

    symbol: str
    sentiment: str  # bullish | bearish | neutral
    confidence: float
    primary_confidence: float
    mate_confidence: float
    articles: int
    reasoning: str
    move: float  # the day's price change in percent
    price: float
    failed: bool = False

    @property
    def direction(self) -> str:
        return {"bullish": "up", "bearish": "down"}.get(self.sentiment, "neutral")

    @property
    def strength(self) -> str:
        if self.failed:
            return "FAILED"
        return (
            "STRONG"
            if self.confidence >= 0.8
            else "MODERATE"
            if self.confidence >= 0.65
            else "WEAK"
        )

    @property
    def action(self) -> str:
        if self.failed:
            return "SKIP"
        if self.sentiment == "neutral":
            return "HOLD"
        side = "BUY" if self.sentiment == "bullish" else "SELL"
        return {"STRONG": f"STRONG_{side}", "MODERATE": side}.get(self.strength, f"WEAK_{side}")

    @property
    def agree(self) -> bool:
        return abs(self.primary_confidence - self.mate_confidence) < 0.1


# --- symbols and per-run market views --------------------------------------------------------

_PHRASES = {
    "bullish": (
        "Earnings beat with raised full-year guidance",
        "Analyst upgrades on a stronger demand outlook",
        "Buyback expanded; services revenue at a record",
        "New product cycle lifts estimates",
        "Data-center demand outpaces supply",
        "Margins expand ahead of consensus",
    ),
    "bearish": (
        "Capex guidance raised; margin concern",
        "Regulatory probe widens",
        "Delivery miss; price cuts widen",
        "Guidance cut on softer demand",
        "Downgrades after weak channel checks",
        "Insider selling and cautious commentary",
    ),
    "neutral": (
        "Mixed headlines, no clear catalyst",
        "Quiet news flow ahead of earnings",
        "Upgrades and downgrades offset",
    ),
}


def resolve_symbols(symbols: Sequence[str] | int) -> tuple[str, ...]:
    """The symbol list: as given, or the first `n` of the worker's defaults and more tickers."""
    if not isinstance(symbols, int):
        return tuple(dict.fromkeys(symbols))
    if symbols < 1:
        raise ValueError("a worker analyses at least one symbol")
    known = DEFAULT_SYMBOLS + MORE_SYMBOLS
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    extra = (f"Q{a}{b}{c}" for a in letters for b in letters for c in letters)
    return tuple(islice((*known, *extra), symbols)) if symbols > len(known) else known[:symbols]


def draw_views(
    rng: random.Random, symbols: Sequence[str], *, failures: int | None = None
) -> tuple[SymbolView, ...]:
    """One run's views of every symbol; `failures` symbols failed (at most all but one)."""
    if failures is None:
        failures = rng.choices((0, 1, 2), weights=(55, 35, 10))[0]
    failed = set(rng.sample(list(symbols), min(failures, len(symbols) - 1)))
    return tuple(_draw_view(rng, s, failed=s in failed) for s in symbols)


def _draw_view(rng: random.Random, symbol: str, *, failed: bool) -> SymbolView:
    sentiment = (
        "neutral" if failed else rng.choices(("bullish", "bearish", "neutral"), (45, 35, 20))[0]
    )
    confidence = round(rng.uniform(0.52, 0.93), 2)
    primary = round(min(0.99, max(0.3, confidence + rng.uniform(-0.06, 0.06))), 2)
    mate = round(min(0.99, max(0.3, confidence + rng.uniform(-0.14, 0.08))), 2)
    articles = 0 if failed else rng.randint(3, 18)
    phrase = rng.choice(_PHRASES[sentiment])
    reasoning = f"{phrase} ({articles} articles)"
    move = round(rng.gauss(0.2 if sentiment == "bullish" else -0.2, 1.4), 2)
    price = round(rng.uniform(40, 900), 2)
    return SymbolView(
        symbol, sentiment, confidence, primary, mate, articles, reasoning, move, price, failed
    )


def _drift(views: tuple[SymbolView, ...], rng: random.Random) -> tuple[SymbolView, ...]:
    """A later run of the same day: the same views, confidences moved a little."""

    def moved(v: SymbolView) -> SymbolView:
        c = round(min(0.97, max(0.5, v.confidence + rng.uniform(-0.05, 0.05))), 2)
        return dataclasses.replace(v, confidence=c)

    return tuple(moved(v) for v in views)


# --- time ----------------------------------------------------------------------------------


def _at_utc(date: str, hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(date).replace(
        hour=hour, minute=minute, second=second, tzinfo=dt.UTC
    )


def _epoch_ms(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)


def _wall_z(instant: dt.datetime) -> str:
    """The KV era's stamp: New York wall-clock time labelled `Z` (reference §7.1)."""
    return iso_utc(instant.astimezone(ET).replace(tzinfo=dt.UTC))


def _sql_time(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- payload builders: analysis shapes (reference §3.1–§3.6) ---------------------------------


def payload_a(views: Sequence[SymbolView], *, instant: dt.datetime, duration_ms: int) -> Payload:
    """Manual enhanced analysis (A): failed symbols absent from `sentiment_signals`."""
    signals = {v.symbol: _a_signal(v, instant) for v in views if not v.failed}
    agreeing = sum(1 for v in views if not v.failed and v.agree)
    return {
        "sentiment_signals": signals,
        "analysis_time": iso_utc(instant),
        "trigger_mode": "manual_analysis_enhanced",
        "symbols_analyzed": [v.symbol for v in views],
        "dual_ai_statistics": {
            "total_symbols": len(views),
            "full_agreement": agreeing,
            "partial_agreement": len(signals) - agreeing,
            "disagreement": 0,
            "errors": len(views) - len(signals),
        },
        "execution_metrics": {
            "total_time_ms": duration_ms,
            "analysis_enabled": True,
            "sentiment_sources": ["free_news", "dual_ai_analysis"],
            "cloudflare_ai_enabled": True,
            "analysis_method": "dual_ai_comparison",
        },
    }


def _a_signal(v: SymbolView, instant: dt.datetime) -> Payload:
    return {
        "symbol": v.symbol,
        "sentiment_analysis": {
            "sentiment": v.sentiment,
            "confidence": v.confidence,
            "reasoning": v.reasoning,
            "dual_ai_comparison": {
                "agree": v.agree,
                "agreement_type": "full_agreement" if v.agree else "partial_agreement",
                "signal_type": "AGREEMENT" if v.agree else "PARTIAL_AGREEMENT",
                "signal_strength": v.strength,
            },
        },
        "news_count": 2 if v.agree else 1,  # really the number of models that answered
        "timestamp": iso_utc(instant + dt.timedelta(seconds=41)),
        "method": "dual_ai_comparison",
    }


def payload_b(
    views: Sequence[SymbolView],
    *,
    instant: dt.datetime,
    duration_ms: int,
    era: str = "head",
    trigger: str = "morning_prediction_alerts",
    stamp: str = "timestamp",
) -> Payload:
    """Cron "legacy format" (B); `era` "kv" (2025: fake 0.5 confidences, ET stamps labelled Z)
    or "head" (null confidence, `analysis_type: failed`); `stamp` `timestamp` or `last_updated`."""
    ok = sum(1 for v in views if not v.failed)
    kv = era == "kv"
    return {
        "symbols_analyzed": [v.symbol for v in views],
        "trading_signals": {v.symbol: _b_signal(v, kv=kv) for v in views},
        "pre_market_analysis": {
            "trigger_mode": trigger,
            "prediction_horizons": [1, 24],
            "execution_time_ms": duration_ms,
            "enhancement_enabled": True,
            "batch_pipeline_used": True,
            "symbols_processed": len(views),
            "success_rate": round(ok / len(views), 3),
        },
        "analysis_statistics": {
            "total_symbols": len(views),
            "successful_full_analysis": ok,
            "fallback_sentiment_used": 0,
            "neutral_fallback_used": len(views) - ok,
            "overall_success": ok > 0,
        },
        "cron_execution_id": f"cron_{_epoch_ms(instant)}",
        "trigger_mode": trigger,
        stamp: _wall_z(instant) if kv else iso_utc(instant),
    }


def _b_signal(v: SymbolView, *, kv: bool) -> Payload:
    if v.failed:
        return _b_failed_kv(v) if kv else _b_failed_head(v)
    direction = "NEUTRAL" if kv and v.direction == "neutral" else v.direction
    layers = (
        (("gpt_oss_120b", "openchat-3.5-0106"), ("distilbert_sst_2", "distilbert-sst-2-int8"))
        if kv
        else (("primary_model", "gpt-oss-120b"), ("mate_model", "deepseek-r1-32b"))
    )
    breakdown = (
        {"gpt_confidence": v.primary_confidence, "distilbert_confidence": v.mate_confidence}
        if kv
        else {
            "primary_confidence": v.primary_confidence,
            "mate_confidence": v.mate_confidence,
            "agreement_score": 1 if v.agree else 0.5,
        }
    )
    return {
        "symbol": v.symbol,
        "predicted_price": None,
        "current_price": None,
        "direction": direction,
        "confidence": v.confidence,
        "model": "dual_ai_comparison",
        "sentiment_layers": [
            {
                "layer_type": layers[0][0],
                "model": layers[0][1],
                "sentiment": v.sentiment,
                "confidence": v.primary_confidence,
                "detailed_analysis": {"reasoning": v.reasoning, "articles_analyzed": v.articles},
            },
            {
                "layer_type": layers[1][0],
                "model": layers[1][1],
                "sentiment": v.sentiment,
                "confidence": v.mate_confidence,
                "articles_analyzed": v.articles,
            },
        ],
        "trading_signals": {
            "symbol": v.symbol,
            "primary_direction": direction,
            "overall_confidence": v.confidence,
            "recommendation": v.action,
            "signal_strength": v.strength,
            "signal_type": "AGREEMENT" if v.agree else "PARTIAL_AGREEMENT",
            "entry_signals": {
                "direction": direction,
                "strength": v.strength,
                "reasoning": v.reasoning,
            },
        },
        "confidence_metrics": {
            "overall_confidence": v.confidence,
            "base_confidence": round((v.primary_confidence + v.mate_confidence) / 2, 3),
            "consistency_bonus": 0.15 if v.agree else 0.05,
            "agreement_bonus": 0.1 if v.agree else 0,
            "confidence_breakdown": breakdown,
        },
        "analysis_type": "dual_ai_comparison",
        "fallback_used": False,
    }


def _b_failed_kv(v: SymbolView) -> Payload:
    """KV era: a failure dressed as a result — fake 0.5 / 0.05 confidences, signal_type ERROR."""
    return {
        "symbol": v.symbol,
        "direction": "NEUTRAL",
        "confidence": 0.5,
        "model": "dual_ai_comparison",
        "sentiment_layers": [
            {"layer_type": "gpt_oss_120b", "sentiment": "neutral", "confidence": 0}
        ],
        "trading_signals": {
            "symbol": v.symbol,
            "primary_direction": "UNCLEAR",
            "overall_confidence": 0.05,
            "recommendation": "SKIP",
            "signal_type": "ERROR",
        },
        "analysis_type": "dual_ai_comparison",
        "fallback_used": False,
    }


def _b_failed_head(v: SymbolView) -> Payload:
    """HEAD: an explicit failure — `analysis_type: failed`, confidence null."""
    return {
        "symbol": v.symbol,
        "predicted_price": None,
        "current_price": None,
        "direction": "neutral",
        "confidence": None,
        "model": "dual_ai_comparison",
        "sentiment_layers": [],
        "trading_signals": {
            "symbol": v.symbol,
            "primary_direction": "neutral",
            "overall_confidence": None,
            "recommendation": "SKIP",
            "signal_type": "ERROR",
            "signal_strength": "FAILED",
        },
        "analysis_metadata": {
            "method": "dual_ai_comparison",
            "models_used": [],
            "fully_failed": True,
            "errors": ["No news articles available"],
        },
        "analysis_type": "failed",
        "fallback_used": False,
    }


def payload_c(views: Sequence[SymbolView], *, date: str, instant: dt.datetime) -> Payload:
    """KV-era batch daily summary (C): failures default to 0.5 / NEUTRAL / neutral_fallback."""
    return {
        "date": date,
        "symbols": [
            {
                "symbol": v.symbol,
                "sentiment": "neutral" if v.failed else v.sentiment,
                "confidence": 0.5 if v.failed else v.confidence,
                "direction": "NEUTRAL" if v.failed else v.direction,
                "model": "dual_ai_comparison",
                "layer_consistency": 0
                if v.failed
                else round(1 - abs(v.primary_confidence - v.mate_confidence), 2),
                "analysis_type": "neutral_fallback" if v.failed else "dual_ai_comparison",
            }
            for v in views
        ],
        "execution_time": _epoch_ms(instant),  # epoch ms: an instant, not a duration
        "batch_stored": True,
        "total_symbols": len(views),
    }


def payload_d(views: Sequence[SymbolView], *, instant: dt.datetime) -> Payload:
    """Pre-market data bridge (D): skipped symbols kept with `status` and a null confidence."""
    return {
        "trading_signals": {v.symbol: _d_skipped(v) if v.failed else _d_signal(v) for v in views},
        "market_pulse": {
            "symbol": "SPY",
            "name": "S&P 500",
            "status": "success",
            "direction": "neutral",
            "confidence": 0.55,
            "articles_count": 20,
            "source": "finnhub",
            "reasoning": "Mixed macro headlines ahead of the open",
            "generated_at": iso_utc(instant - dt.timedelta(seconds=2)),
        },
        "timestamp": iso_utc(instant),
        "generated_at": iso_utc(instant),
    }


def _d_signal(v: SymbolView) -> Payload:
    model = {"direction": v.sentiment, "reasoning": v.reasoning}
    return {
        "symbol": v.symbol,
        "signal": {
            "direction": v.sentiment,
            "confidence": v.confidence,
            "reasoning": v.reasoning,
            "action": v.action,
            "type": "AGREEMENT" if v.agree else "PARTIAL_AGREEMENT",
        },
        "models": {
            "primary": {**model, "confidence": v.primary_confidence},
            "mate": {**model, "confidence": v.mate_confidence},
        },
        "sentiment_layers": [
            {"sentiment": v.sentiment, "confidence": v.confidence, "reasoning": v.reasoning}
        ],
        "dual_model": {
            "primary": {
                "status": "success",
                "confidence": v.primary_confidence,
                "direction": v.sentiment,
                "response_time_ms": 8123,
            },
            "mate": {
                "status": "success",
                "confidence": v.mate_confidence,
                "direction": v.sentiment,
                "response_time_ms": 11230,
            },
            "selection_reason": "agreement" if v.agree else "higher_confidence",
        },
        "articles_count": v.articles,
        "articles_content": [f"{v.symbol}: {v.reasoning.split(' (')[0]}"],
    }


def _d_skipped(v: SymbolView) -> Payload:
    return {
        "symbol": v.symbol,
        "signal": {
            "direction": "neutral",
            "confidence": None,
            "reasoning": "No news articles available",
            "action": "SKIP",
            "type": "ERROR",
        },
        "status": "skipped",
        "error_message": "No news articles available",
        "articles_count": 0,
    }


def payload_e(views: Sequence[SymbolView], *, instant: dt.datetime) -> Payload:
    """Basic fallback analysis (E) with `fallback_reason`: failed symbols left out."""
    signals = {v.symbol: _e_signal(v, instant) for v in views if not v.failed}
    return {
        "symbols_analyzed": [v.symbol for v in views],
        "trading_signals": signals,
        "analysis_time": iso_utc(instant),
        "trigger_mode": "manual_analysis_enhanced",
        "performance_metrics": {
            "success_rate": round(len(signals) / len(views), 3),
            "total_symbols": len(views),
            "successful_analyses": len(signals),
            "failed_analyses": len(views) - len(signals),
        },
        "fallback_reason": "Enhanced analysis failed: AI binding timeout",
    }


def _e_signal(v: SymbolView, instant: dt.datetime) -> Payload:
    direction = v.direction if v.confidence >= 0.6 else "hold"
    drift = {"up": 1.012, "down": 0.988}.get(direction, 1.0)
    return {
        "symbol": v.symbol,
        "direction": direction,
        "current_price": v.price,
        "predicted_price": round(v.price * drift, 2),
        "confidence": v.confidence,
        "reasoning": v.reasoning,
        "model_type": "basic_sentiment",
        "timestamp": iso_utc(instant + dt.timedelta(seconds=2)),
        "technical_indicators": {
            "rsi": round(50 + (v.confidence - 0.5) * (40 if direction == "up" else -40), 1),
            "sma_20": round(v.price * 0.985, 2),
            "sma_50": round(v.price * 0.962, 2),
        },
        "market_conditions": {
            "trend": "up" if v.move > 0.5 else "down" if v.move < -0.5 else "sideways"
        },
    }


# --- payload builders: reports and status (reference §3.8–§3.12) -----------------------------


def payload_g(views: Sequence[SymbolView], *, date: str, instant: dt.datetime) -> Payload:
    """`pre_market_report_{date}` (G): numeric `symbols_analyzed`, failed signals kept."""
    signals: list[Payload] = [
        {
            "symbol": v.symbol,
            "sentiment": v.sentiment,
            "confidence": None if v.failed else round(v.confidence, 3),
            "primary_model": "gpt-oss-120b",
            "primary_confidence": None if v.failed else v.primary_confidence,
            "mate_model": "deepseek-r1-32b",
            "mate_confidence": None if v.failed else v.mate_confidence,
            "status": "failed" if v.failed else "success",
            "reason": "No news articles available" if v.failed else None,
        }
        for v in views
    ]
    high = [s for s, v in zip(signals, views, strict=True) if not v.failed and v.confidence > 0.7]
    failed = [v.symbol for v in views if v.failed]
    insights = [f"{len(high)} high-confidence signals"] + [f"{s} skipped: no news" for s in failed]
    return {
        "type": "pre_market_briefing",
        "timestamp": iso_utc(instant + dt.timedelta(seconds=20)),
        "market_status": "pre_market",
        "date": date,
        "is_stale": False,
        "key_insights": insights,
        "high_confidence_signals": high,
        "all_signals": signals,
        "high_confidence_count": len(high),
        "data_source": "d1_snapshot",
        "generated_at": iso_utc(instant),
        "symbols_analyzed": len(views),
    }


def payload_i(views: Sequence[SymbolView], *, date: str, instant: dt.datetime) -> Payload:
    """Intraday report (I): `overall_accuracy` a 0–1 fraction."""
    rows = [_i_row(v) for v in views]
    on_track = sum(1 for r in rows if r["performance"] == "on_track")
    return {
        "date": date,
        "job_type": "intraday",
        "symbols_analyzed": len(views),
        "on_track_count": on_track,
        "diverged_count": len(rows) - on_track,
        "overall_accuracy": round(on_track / len(rows), 3),
        "market_status": "open",
        "symbols": rows,
        "comparisons": [_i_comparison(v) for v in views],
        "pre_market_run_id": f"{date}_pre-market_{_short_hash(date, 'pre-market')}",
        "timestamp": iso_utc(instant),
    }


def _i_row(v: SymbolView) -> Payload:
    on_track = not v.failed and (v.move >= 0) == (v.sentiment != "bearish")
    return {
        "symbol": v.symbol,
        "morning_prediction": None if v.failed else v.sentiment,
        "morning_confidence": None if v.failed else v.confidence,
        "current_sentiment": v.sentiment,
        "current_confidence": round(max(0.0, v.confidence - 0.03), 2),
        "performance": "on_track" if on_track else "diverged",
        "accuracy_score": 0.9 if on_track else 0.2,
    }


def _i_comparison(v: SymbolView) -> Payload:
    side = {
        "direction": v.sentiment,
        "confidence": v.confidence,
        "reasoning": v.reasoning,
        "articles_count": v.articles,
        "status": "success",
    }
    skipped = {"status": "skipped", "error": "No news articles available"}
    return {
        "symbol": v.symbol,
        "premarket": skipped if v.failed else side,
        "intraday": {**side, "confidence": round(max(0.0, v.confidence - 0.03), 2)},
        "comparison": {
            "direction_match": not v.failed,
            "confidence_change": None if v.failed else -0.03,
            "status": "incomplete" if v.failed else "consistent",
        },
    }


def payload_eod(views: Sequence[SymbolView], *, date: str, instant: dt.datetime) -> Payload:
    """End-of-day report (EOD, EndOfDayResult + scheduler fields): `overallAccuracy` 0–100."""
    breakdown = [_eod_row(v) for v in views if not v.failed]
    correct = sum(1 for b in breakdown if b["correct"])
    ranked = sorted(views, key=lambda v: v.move)
    return {
        "overallAccuracy": round(100 * correct / len(breakdown)) if breakdown else 0,
        "totalSignals": len(breakdown),
        "correctCalls": correct,
        "wrongCalls": len(breakdown) - correct,
        "modelGrade": "A"
        if correct >= 0.8 * len(breakdown)
        else "B"
        if correct >= 0.6 * len(breakdown)
        else "C",
        "topWinners": [
            {"ticker": v.symbol, "performance": f"{v.move:+.2f}%"} for v in ranked[::-1][:2]
        ],
        "topLosers": [{"ticker": v.symbol, "performance": f"{v.move:+.2f}%"} for v in ranked[:2]],
        "signalBreakdown": breakdown,
        "tomorrowOutlook": {
            "marketBias": "bullish" if correct * 2 >= len(breakdown) else "neutral",
            "confidence": "medium",
        },
        "marketCloseTime": iso_utc(_at_utc(date, 21, 0)),
        "dataWarnings": [f"{v.symbol}: no pre-market signal (no news)" for v in views if v.failed],
        "symbols_analyzed": len(views),
        "symbols_list": [v.symbol for v in views],
        "timestamp": iso_utc(instant),
        "trigger_mode": "end_of_day_summary",
        "pre_market_run_id": f"{date}_pre-market_{_short_hash(date, 'pre-market')}",
        "intraday_run_id": f"{date}_intraday_{_short_hash(date, 'intraday')}",
    }


def _eod_row(v: SymbolView) -> Payload:
    actual = "up" if v.move > 0.1 else "down" if v.move < -0.1 else "neutral"
    return {
        "ticker": v.symbol,
        "predicted": v.sentiment,
        "predictedDirection": v.direction,
        "actual": f"{v.move:+.2f}%",
        "actualDirection": actual,
        "confidence": v.confidence,
        "confidenceLevel": "high" if v.confidence >= 0.7 else "medium",
        "correct": actual == v.direction,
        "primary_confidence": v.primary_confidence,
        "mate_confidence": v.mate_confidence,
        "models_agree": v.agree,
        "action": v.action,
        "signal_reasoning": v.reasoning,
        "articles_count": v.articles,
    }


def payload_w(
    sunday: str, *, instant: dt.datetime, daily_accuracy: Sequence[int], symbols: Sequence[str]
) -> Payload:
    """Weekly report `weekly_{sunday}` (W); no trading days means `_generation.status: default`."""
    failed = not daily_accuracy
    week_start = dt.date.fromisoformat(sunday) - dt.timedelta(days=6)
    average = round(sum(daily_accuracy) / len(daily_accuracy), 1) if daily_accuracy else None
    return {
        "weeklyOverview": {
            "weekStart": week_start.isoformat(),
            "weekEnd": sunday,
            "tradingDays": len(daily_accuracy),
            "totalSignals": len(daily_accuracy) * len(symbols),
        },
        "accuracyMetrics": {
            "weeklyAverage": average,
            "bestDay": None if failed else max(daily_accuracy),
            "worstDay": None if failed else min(daily_accuracy),
            "consistency": None
            if failed
            else round(1 - (max(daily_accuracy) - min(daily_accuracy)) / 100, 2),
            "totalSignals": len(daily_accuracy) * len(symbols),
            "avgDailySignals": len(symbols),
            "trend": "declining"
            if failed or daily_accuracy[-1] < daily_accuracy[0]
            else "improving",
        },
        "patternAnalysis": {"bestSymbol": symbols[0]},
        "insights": [f"{len(daily_accuracy)} trading days reviewed"],
        "topPerformers": [{"symbol": s, "accuracy": 80} for s in symbols[:2]],
        "underperformers": [{"symbol": s, "accuracy": 40} for s in symbols[-1:]],
        "sectorRotation": None,
        "nextWeekOutlook": {"bias": "bullish" if (average or 0) >= 60 else "neutral"},
        "_generation": {
            "status": "default" if failed else "success",
            "errors": ["no trading days found"] if failed else [],
            "warnings": [],
            "dataSource": "d1",
            "tradingDaysFound": len(daily_accuracy),
            "generatedAt": iso_utc(instant),
        },
        "cron_execution_id": f"cron_{_epoch_ms(instant)}",
        "trigger_mode": "weekly_review_analysis",
        "generated_at": iso_utc(instant),
        "job_status": "failed" if failed else "done",
    }


def payload_status(
    job: str, *, instant: dt.datetime, views: Sequence[SymbolView], duration_ms: int
) -> Payload:
    """The decoded `status:{job}:{date}` value, with the metadata the worker added (§3.12)."""
    payload: Payload = {"status": "done", "timestamp": iso_utc(instant)}
    if job == "analysis":
        payload |= {"symbols_processed": len(views), "execution_time_ms": duration_ms}
    else:
        signals = [v for v in views if not v.failed and v.confidence >= 0.7]
        average = sum(v.confidence for v in signals) / len(signals) if signals else 0
        payload |= {
            "signalCount": len(signals),
            "averageConfidence": round(average, 3),
            "bullishCount": sum(1 for v in signals if v.sentiment == "bullish"),
            "bearishCount": sum(1 for v in signals if v.sentiment == "bearish"),
        }
    return payload


def _short_hash(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:8]


def kv_bytes(payload: object, *, double_encoded: bool = False) -> bytes:
    """The bytes the worker stored (JSON.stringify); `double_encoded`: a JSON string of that text."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return (json.dumps(text, ensure_ascii=False) if double_encoded else text).encode("utf-8")


# --- defects -------------------------------------------------------------------------------


class Variant(enum.StrEnum):
    """How a day's analysis job was stored (by era, reference §1–§3)."""

    B_KV_RUNS = "B-kv-runs"  # KV-era cron: per-run keys + the daily key holding the last run
    C_DAILY = "C"  # KV-era batch summary left under the daily key
    B_HEAD_RUNS = "B-head-runs"
    B_HEAD_DAILY = "B-head"
    A = "A"
    E = "E"
    D = "D"


_RUN_VARIANTS = frozenset({Variant.B_KV_RUNS, Variant.B_HEAD_RUNS})
_CRON_VARIANTS = frozenset(
    {Variant.B_KV_RUNS, Variant.C_DAILY, Variant.B_HEAD_RUNS, Variant.B_HEAD_DAILY}
)


class Defect(enum.Enum):
    """The seeded defects; each becomes one or more findings (`SeededDefect`)."""

    MISSING_JOB = "missing job"
    MISSING_SYMBOL = "missing symbol result"
    MISSING_REPORT = "missing report snapshot"
    ORPHAN = "orphan job"
    CONFIDENCE_CHANGED = "confidence changed"
    STATUS_CHANGED = "status changed"
    PLAN_ADAPTER_NULLS = "plan adapter all-NULL rows"
    DUPLICATE = "job written twice"
    NOT_JSON = "KV value not JSON"
    NO_SHAPE = "KV value matches no shape"
    CONFIDENCE_OUT_OF_RANGE = "confidence 1.7"
    SIGNALS_NOT_JSON = "signals not JSON"
    EXPIRING = "missing and expiring"
    SCHEDULE_GAP = "schedule gap"


@dataclass(frozen=True, slots=True)
class _Rule:
    job_type: str
    placement: str  # any | early (row ids computed cheaply) | recent
    variant: Variant | None = None


_RULES: dict[Defect, _Rule] = {  # in placement order: the constrained ones first
    Defect.CONFIDENCE_OUT_OF_RANGE: _Rule("analysis", "early", Variant.B_KV_RUNS),
    Defect.SIGNALS_NOT_JSON: _Rule("analysis", "early", Variant.B_KV_RUNS),
    Defect.ORPHAN: _Rule("intraday", "recent"),
    Defect.MISSING_JOB: _Rule("analysis", "any", Variant.B_HEAD_RUNS),
    Defect.MISSING_SYMBOL: _Rule("analysis", "any", Variant.D),
    Defect.CONFIDENCE_CHANGED: _Rule("analysis", "any", Variant.B_HEAD_DAILY),
    Defect.PLAN_ADAPTER_NULLS: _Rule("analysis", "any", Variant.A),
    Defect.NO_SHAPE: _Rule("analysis", "any"),
    Defect.MISSING_REPORT: _Rule("pre-market", "any"),
    Defect.NOT_JSON: _Rule("intraday", "any"),
    Defect.STATUS_CHANGED: _Rule("end-of-day", "any"),
    Defect.DUPLICATE: _Rule("end-of-day", "any"),
    Defect.SCHEDULE_GAP: _Rule("end-of-day", "any"),
}


@dataclass(frozen=True)
class DefectPlan:
    """Which defect each (date, job type) carries, and forced analysis variants."""

    by_date: dict[str, dict[str, Defect]] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def on(self, date: str) -> dict[str, Defect]:
        return self.by_date.get(date, {})


def plan_defects(
    trading_days: Sequence[str], sundays: Sequence[str], *, seed: int, now: dt.datetime
) -> DefectPlan:
    """Place one defect of each kind on a date inside the window (distinct per job type)."""
    yesterday = (dt.date.fromisoformat(today_et(now)) - dt.timedelta(days=1)).isoformat()
    eligible = [d for d in trading_days if d <= yesterday]
    if len(eligible) < MIN_DEFECT_DAYS:
        raise ValueError(
            f"seeded defects need at least {MIN_DEFECT_DAYS} trading days before `now` in the "
            f"window, found {len(eligible)}; widen business_days or pass defects=False"
        )
    rng = random.Random(f"{seed}:defects")
    by_date: dict[str, dict[str, Defect]] = {}
    for defect, rule in _RULES.items():
        date = _place(rng, _candidates(rule.placement, eligible), rule.job_type, by_date)
        by_date.setdefault(date, {})[rule.job_type] = defect
    _place_expiring(rng, eligible, sundays, by_date)
    variants = {
        d: forced.variant
        for d, jobs in by_date.items()
        for defect in jobs.values()
        if (forced := _RULES.get(defect)) is not None and forced.variant is not None
    }
    return DefectPlan(by_date, variants)


def _candidates(placement: str, eligible: Sequence[str]) -> Sequence[str]:
    return {"early": eligible[:4], "recent": eligible[-5:]}.get(placement, eligible)


def _place(
    rng: random.Random,
    candidates: Sequence[str],
    job_type: str,
    by_date: dict[str, dict[str, Defect]],
) -> str:
    untouched = [d for d in candidates if d not in by_date]
    pool = untouched or [d for d in candidates if job_type not in by_date[d]]
    if not pool:
        raise ValueError(f"no free date left for a seeded {job_type} defect; widen business_days")
    return rng.choice(pool)


def _place_expiring(
    rng: random.Random,
    eligible: Sequence[str],
    sundays: Sequence[str],
    by_date: dict[str, dict[str, Defect]],
) -> None:
    """The most recent weekly report (the shortest-lived key), else a recent end-of-day job."""
    if sundays:
        by_date.setdefault(sundays[-1], {})["weekly"] = Defect.EXPIRING
        return
    date = _place(rng, eligible[-5:], "end-of-day", by_date)
    by_date.setdefault(date, {})["end-of-day"] = Defect.EXPIRING


# --- one day's content ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Execution:
    """One job execution: its KV keys, and whether (and from what) the dual-writer wrote D1.

    `primary` is the execution's own key as KV holds it (None: KV has none); `companions` are
    the daily key holding this run and its `status:` key; `written` is the payload D1 was
    written from when KV's copy is not it (a corrupt value, a lost key).
    """

    job_type: str
    primary: KvEntry | None
    companions: tuple[KvEntry, ...] = ()
    written: KvEntry | None = None
    in_d1: bool = True
    defect: Defect | None = None

    @property
    def kv_entries(self) -> tuple[KvEntry, ...]:
        return ((self.primary,) if self.primary else ()) + self.companions

    @property
    def d1_source(self) -> KvEntry | None:
        return self.written or self.primary


@dataclass(frozen=True, slots=True)
class _Day:
    date: str
    executions: tuple[_Execution, ...]
    gaps: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class _Spec:
    since: dt.date
    until: dt.date
    seed: int
    symbols: tuple[str, ...]
    now: dt.datetime
    unrelated_per_job: int
    plan: DefectPlan
    d1_noise: bool


class _DayBuilder:
    """Builds one day's executions from the day's own random stream."""

    def __init__(self, spec: _Spec, date: str):
        self.spec = spec
        self.date = date
        self.rng = random.Random(f"{spec.seed}:{date}")
        self.defects = spec.plan.on(date)

    def build(self) -> _Day:
        if dt.date.fromisoformat(self.date).weekday() == 6:
            return _Day(self.date, (self._weekly(),))
        views, executions = self._analysis()
        for job_type in ("pre-market", "intraday", "end-of-day"):
            if self.defects.get(job_type) is not Defect.SCHEDULE_GAP:
                executions.append(self._report(job_type, views))
        gaps = tuple(jt for jt, d in self.defects.items() if d is Defect.SCHEDULE_GAP)
        return _Day(self.date, tuple(executions), gaps)

    # KV entries ----------------------------------------------------------------------------

    def entry(
        self, key: str, payload: object, instant: dt.datetime, *, double: bool = False
    ) -> KvEntry:
        return KvEntry(key, kv_bytes(payload, double_encoded=double), self.expiration(instant))

    def expiration(self, instant: dt.datetime) -> int:
        live = max(instant + LIVE_FOR, self.spec.now + LIVE_AT_LEAST)
        return int(live.timestamp()) + self.rng.randrange(3600)

    def era(self) -> float:
        span = max(1, (self.spec.until - self.spec.since).days)
        return (dt.date.fromisoformat(self.date) - self.spec.since).days / span

    # analysis ------------------------------------------------------------------------------

    def variant(self) -> Variant:
        forced = self.spec.plan.variants.get(self.date)
        era, rng = self.era(), self.rng
        if era < 0.3:
            drawn = rng.choices((Variant.B_KV_RUNS, Variant.C_DAILY), (80, 20))[0]
        elif era < 0.5:
            drawn = rng.choices((Variant.B_HEAD_RUNS, Variant.B_HEAD_DAILY), (60, 40))[0]
        else:
            drawn = rng.choices(
                (Variant.A, Variant.E, Variant.D, Variant.B_HEAD_DAILY), (30, 15, 35, 20)
            )[0]
        return forced or drawn

    def _analysis(self) -> tuple[tuple[SymbolView, ...], list[_Execution]]:
        variant = self.variant()
        defect = self.defects.get("analysis")
        views = draw_views(
            self.rng, self.spec.symbols, failures=self.spec.plan.failures.get(self.date)
        )
        if defect is Defect.NO_SHAPE:
            return views, [self._error_payload(defect)]
        if variant in _RUN_VARIANTS:
            return self._runs(variant, views, defect)
        return views, [self._daily(variant, views, defect)]

    def _runs(
        self, variant: Variant, views: tuple[SymbolView, ...], defect: Defect | None
    ) -> tuple[tuple[SymbolView, ...], list[_Execution]]:
        """One execution per cron run; the last also holds the daily key and the status key.

        A lost run is the first (the later ones and the daily key still tell of the day)."""
        count = self.rng.choices((1, 2, 3), (35, 40, 25))[0]
        if defect is Defect.MISSING_JOB:
            count = max(count, 2)
        executions = []
        for index, cron in enumerate(_CRONS_UTC[:count]):
            views = views if index == 0 else _drift(views, self.rng)
            executions.append(self._run(variant, views, cron, last=index == count - 1))
        if defect is Defect.MISSING_JOB:
            executions[0] = dataclasses.replace(executions[0], in_d1=False, defect=defect)
        elif defect is not None:
            executions[-1] = dataclasses.replace(executions[-1], defect=defect)
        return views, executions

    def _run(
        self,
        variant: Variant,
        views: tuple[SymbolView, ...],
        cron: tuple[int, int, str],
        *,
        last: bool,
    ) -> _Execution:
        hour, minute, trigger = cron
        instant = _at_utc(self.date, hour, minute, self.rng.randrange(1, 9))
        duration = self.rng.randint(38_000, 74_000)
        era = "kv" if variant is Variant.B_KV_RUNS else "head"
        b = functools.partial(
            payload_b, views, instant=instant, duration_ms=duration, era=era, trigger=trigger
        )
        primary = self.entry(f"analysis_{self.date}_{et_run_time(instant)}", b(), instant)
        if not last:
            return _Execution("analysis", primary)
        daily = self.entry(f"analysis_{self.date}", b(stamp="last_updated"), instant)
        status = self._status("analysis", instant, views, duration, cron_era=True)
        return _Execution("analysis", primary, (daily, *status))

    def _daily(
        self, variant: Variant, views: tuple[SymbolView, ...], defect: Defect | None
    ) -> _Execution:
        rng, date = self.rng, self.date
        duration = rng.randint(38_000, 74_000)
        if variant is Variant.A or variant is Variant.E:
            instant = _at_utc(date, 13, 1, rng.randrange(60))
            payload = (
                payload_a(views, instant=instant, duration_ms=duration)
                if variant is Variant.A
                else payload_e(views, instant=instant)
            )
        elif variant is Variant.D:
            instant = _at_utc(date, 12, 31, rng.randrange(30, 50))
            payload = payload_d(views, instant=instant)
        elif variant is Variant.C_DAILY:
            instant = _at_utc(date, 12, 31, rng.randrange(60))
            payload = payload_c(views, date=date, instant=instant)
        else:
            instant = _at_utc(date, 12, 30, rng.randrange(1, 9))
            payload = payload_b(views, instant=instant, duration_ms=duration)
        primary = self.entry(f"analysis_{date}", payload, instant)
        status = self._status(
            "analysis", instant, views, duration, cron_era=variant in _CRON_VARIANTS
        )
        return _Execution("analysis", primary, status, defect=defect)

    def _status(
        self,
        job: str,
        instant: dt.datetime,
        views: Sequence[SymbolView],
        duration: int,
        *,
        cron_era: bool,
    ) -> tuple[KvEntry, ...]:
        """A `status:` key on most days of the cron eras, as JSON text or double-encoded."""
        if not cron_era or self.rng.random() >= 0.8:
            return ()
        done = instant + dt.timedelta(milliseconds=duration)
        payload = payload_status(job, instant=done, views=views, duration_ms=duration)
        double = self.rng.random() < 0.5
        return (self.entry(f"status:{job}:{self.date}", payload, done, double=double),)

    def _error_payload(self, defect: Defect) -> _Execution:
        """The worker stored its error response under the job's key: JSON of no known shape."""
        instant = _at_utc(self.date, 13, 1, self.rng.randrange(60))
        payload = {
            "success": False,
            "error": "AI binding timeout after 30000ms",
            "timestamp": iso_utc(instant),
            "request_id": _short_hash(self.date, "error"),
        }
        entry = self.entry(f"analysis_{self.date}", payload, instant)
        return _Execution("analysis", entry, in_d1=False, defect=defect)

    # reports -------------------------------------------------------------------------------

    def _report(self, job_type: str, views: tuple[SymbolView, ...]) -> _Execution:
        defect = self.defects.get(job_type)
        key, instant, payload = self._report_payload(job_type, views)
        entry = self.entry(key, payload, instant)
        if defect is Defect.EXPIRING:
            return self._expiring(job_type, entry)
        if defect is Defect.ORPHAN:
            return _Execution(job_type, None, written=entry, defect=defect)
        if defect is Defect.NOT_JSON:
            cut = dataclasses.replace(entry, value=entry.value[: len(entry.value) // 2])
            return _Execution(job_type, cut, written=entry, defect=defect)
        companions: tuple[KvEntry, ...] = ()
        if job_type == "pre-market":
            cron_era = self.era() < 0.5
            companions = self._status("morning_predictions", instant, views, 0, cron_era=cron_era)
        return _Execution(job_type, entry, companions, defect=defect)

    def _expiring(self, job_type: str, entry: KvEntry) -> _Execution:
        """A key about to expire (its real TTL was short) whose job never reached D1."""
        soon = int((self.spec.now + EXPIRES_SOON_IN).timestamp())
        expiring = dataclasses.replace(entry, expiration=soon)
        return _Execution(job_type, expiring, in_d1=False, defect=Defect.EXPIRING)

    def _report_payload(
        self, job_type: str, views: tuple[SymbolView, ...]
    ) -> tuple[str, dt.datetime, Payload]:
        date, rng = self.date, self.rng
        if job_type == "pre-market":
            instant = _at_utc(date, 12, 31, rng.randrange(35, 59))
            return (
                f"pre_market_report_{date}",
                instant,
                payload_g(views, date=date, instant=instant),
            )
        if job_type == "intraday":
            instant = _at_utc(date, 16, 1, rng.randrange(60))
            return f"intraday_report_{date}", instant, payload_i(views, date=date, instant=instant)
        instant = _at_utc(date, 20, 7, rng.randrange(60))
        return f"end_of_day_summary_{date}", instant, payload_eod(views, date=date, instant=instant)

    def _weekly(self) -> _Execution:
        sunday = dt.date.fromisoformat(self.date)
        days = [sunday - dt.timedelta(days=n) for n in range(6, 1, -1)]
        accuracy = [self.rng.randint(40, 100) for d in days if is_trading_day(d)]
        instant = _at_utc(self.date, 14, 0, self.rng.randrange(20, 50))
        payload = payload_w(
            self.date, instant=instant, daily_accuracy=accuracy, symbols=self.spec.symbols
        )
        entry = self.entry(f"weekly_{self.date}", payload, instant)
        if self.defects.get("weekly") is Defect.EXPIRING:
            return self._expiring("weekly", entry)
        return _Execution("weekly", entry)


# --- unrelated keys ------------------------------------------------------------------------


def _unrelated(spec: _Spec, date: str, count: int) -> Iterator[KvEntry]:
    """`count` keys no pattern of the profile maps: page caches, telemetry, granular C′, news."""
    expiration = int((max(_at_utc(date, 21, 0) + LIVE_FOR, spec.now + LIVE_AT_LEAST)).timestamp())
    catalogue = _unrelated_catalogue(spec, date)
    for index in range(count):
        if index < len(catalogue):
            key, value = catalogue[index]
        else:
            symbol = spec.symbols[index % len(spec.symbols)]
            key = f"news_cache:{symbol}:{date}:{index:06d}"
            value = kv_bytes(
                {
                    "symbol": symbol,
                    "fetched_at": f"{date}T12:2{index % 10}:00.000Z",
                    "articles": [{"title": f"{symbol} headline {index}", "source": "finnhub"}],
                }
            )
        yield KvEntry(key, value, expiration)


def _unrelated_catalogue(spec: _Spec, date: str) -> list[tuple[str, bytes]]:
    day = dt.date.fromisoformat(date)
    if day.weekday() == 6:
        year, week, _ = day.isocalendar()
        return [
            (f"weekly_html_{date}", _html("Weekly review", date)),
            (
                f"weekly_report_{year}-W{week:02d}",
                kv_bytes({"success": True, "week": f"{year}-W{week:02d}"}),
            ),
        ]
    tomorrow = (day + dt.timedelta(days=1)).isoformat()
    granular = [
        (
            f"analysis_{date}_{s}",
            kv_bytes(
                {
                    "symbol": s,
                    "analysis_type": "dual_ai_comparison",
                    "timestamp": f"{date}T12:30:41.552Z",
                    "sentiment_layers": [{"layer_type": "gpt_oss_120b", "sentiment": "neutral"}],
                    "confidence_metrics": {"overall_confidence": 0.7, "base_confidence": 0.6},
                    "trading_signals": {"symbol": s, "primary_direction": "neutral"},
                    "news_data": {"total_articles": 6},
                }
            ),
        )
        for s in spec.symbols
    ]
    return [  # the key-parsing hazards first (reference §2.4): C′ granular, an unmapped status
        granular[0],
        (
            f"status:kv_test:{date}",
            kv_bytes({"status": "testing", "timestamp": f"{date}T12:00:00.000Z"}),
        ),
        (f"premarket_html_{date}", _html("Pre-market briefing", date)),
        (
            f"cron_health_{date}",
            kv_bytes(
                {"executions": [{"date": date, "status": "success", "execution_time_ms": 51234}]}
            ),
        ),
        (f"high_confidence_signals_{date}", kv_bytes({"date": date, "signals": []})),
        (f"intraday_html_{date}", _html("Intraday check", date)),
        (f"end_of_day_html_{date}", _html("End-of-day summary", date)),
        (
            f"tomorrow_outlook_{tomorrow}",
            kv_bytes({"targetDate": tomorrow, "evaluationStatus": "pending"}),
        ),
        (f"daily_report_{date}", kv_bytes({"success": True, "date": date})),
        *granular[1:],
    ]


def _html(title: str, date: str) -> bytes:
    return (
        f"<!doctype html><html><head><title>{title} {date}</title></head>"
        f"<body><h1>{title}</h1><p>{date}</p></body></html>"
    ).encode()


# --- D1 rows: what the dual-writer inserted ------------------------------------------------


@functools.cache
def default_profile() -> Profile:
    return load_profile("default")


@dataclass
class _Ids:
    job: int = 1
    symbol: int = 1
    report: int = 1


@dataclass
class _Rows:
    """One job's rows before ids are given (defects edit them here)."""

    job: dict[str, Any]
    symbols: list[dict[str, Any]]
    reports: list[dict[str, Any]]


def _normalised(entry: KvEntry, profile: Profile) -> KvRecord:
    match = profile.match(entry.key)
    if match is None:
        raise RuntimeError(f"synthetic key {entry.key!r} matches no pattern of the profile")
    record = normalise_entry(entry, match, profile)
    if isinstance(record, InvalidPayload):
        raise RuntimeError(f"synthetic payload {entry.key!r} does not normalise: {record.reason}")
    return record


def _record_for_d1(execution: _Execution, source: KvEntry, profile: Profile) -> KvRecord:
    """The record the dual-writer wrote: the job's payload, its `status:` key's status applied."""
    record = _normalised(source, profile)
    for companion in execution.companions:
        if companion.key.startswith("status:"):
            status = _normalised(companion, profile).job.status
            if status:
                record = dataclasses.replace(
                    record, job=dataclasses.replace(record.job, status=status)
                )
    return record


def _rows_of(record: KvRecord) -> _Rows:
    trigger = "manual" if record.shape in ("A", "E") else "cron"
    metadata = canonical_json({"source": "dual-write", "trigger": trigger})
    job = job_row(record.job, metadata=metadata)
    started = parse_instant(job["execution_time"])
    if started is None:
        raise ValueError(f"a generated job has no execution time: {job['execution_time']!r}")
    created = {"created_at": _sql_time(started + dt.timedelta(seconds=2))}
    return _Rows(
        job={**job, **created},
        symbols=[{**symbol_row(s), **created} for s in record.symbols],
        reports=[{**report_row(record.report), **created}] if record.report else [],
    )


def _with_ids(rows: _Rows, ids: _Ids) -> D1JobRows:
    execution = D1Row(ids.job, dict(rows.job))
    symbols = tuple(
        D1Row(ids.symbol + i, {"execution_id": ids.job, **s}) for i, s in enumerate(rows.symbols)
    )
    reports = tuple(
        D1Row(ids.report + i, {"execution_id": ids.job, **r}) for i, r in enumerate(rows.reports)
    )
    ids.job, ids.symbol, ids.report = (
        ids.job + 1,
        ids.symbol + len(symbols),
        ids.report + len(reports),
    )
    return D1JobRows(execution, symbols, reports)


def _d1_day(spec: _Spec, day: _Day, ids: _Ids) -> tuple[list[D1JobRows], list[SeededDefect]]:
    """The rows the dual-writer inserted for one day, and the findings its defects must give."""
    profile = default_profile()
    jobs: list[D1JobRows] = []
    seeds = [
        SeededDefect(Category.SCHEDULE_GAP, f"{jt}/{day.date}/latest", "no job in KV or D1")
        for jt in day.gaps
    ]
    for execution in day.executions:
        seeds += _kv_side_seeds(execution, profile)
        source = execution.d1_source
        if not execution.in_d1 or source is None:
            continue
        record = _record_for_d1(execution, source, profile)
        rows = _rows_of(record)
        if spec.d1_noise:
            _add_noise(rows)
        if execution.defect is not None and (edit := _ROW_DEFECTS.get(execution.defect)):
            rng = random.Random(f"{spec.seed}:{day.date}:{execution.job_type}:defect")
            seeds += edit(rows, record, ids, rng)
        jobs.append(_with_ids(rows, ids))
        if execution.defect is Defect.DUPLICATE:
            jobs.append(_with_ids(rows, ids))
    return jobs, seeds


def _kv_side_seeds(execution: _Execution, profile: Profile) -> list[SeededDefect]:
    defect, entry = execution.defect, execution.primary
    if entry is None or defect not in (
        Defect.MISSING_JOB,
        Defect.EXPIRING,
        Defect.NOT_JSON,
        Defect.NO_SHAPE,
    ):
        return []
    if defect is Defect.MISSING_JOB or defect is Defect.EXPIRING:
        category = (
            Category.MISSING_IN_D1 if defect is Defect.MISSING_JOB else Category.EXPIRING_SOON
        )
        key = _normalised(entry, profile).job.key
        return [
            SeededDefect(category, str(key), f"KV {entry.key}: the dual-write never reached D1")
        ]
    match = profile.match(entry.key)
    assert match is not None
    key = JobKey(match.date, match.job_type, match.run)
    return [SeededDefect(Category.INVALID_KV_PAYLOAD, str(key), f"KV {entry.key}: {defect.value}")]


# Row defects: each edits one job's rows (before ids are given) and says what verify must report.

RowEdit = Callable[[_Rows, KvRecord, _Ids, random.Random], list[SeededDefect]]


def _pick(rng: random.Random, rows: list[dict[str, Any]], column: str | None = None) -> int:
    indexes = [i for i, r in enumerate(rows) if column is None or r[column] is not None]
    if not indexes:
        raise RuntimeError(f"no analysis_results row with a {column} to seed a defect on")
    return rng.choice(indexes)


def _missing_symbol(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    symbol = rows.symbols.pop(_pick(rng, rows.symbols))["symbol"]
    nk = f"{record.job.key}/{symbol}"
    return [
        SeededDefect(
            Category.MISSING_IN_D1, nk, "one symbol's analysis_results row was never written"
        )
    ]


def _missing_report(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    rows.reports.clear()
    nk = f"{record.job.key}/report:{record.job.key.job_type}"
    return [
        SeededDefect(
            Category.MISSING_IN_D1, nk, "the execution exists, its report snapshot does not"
        )
    ]


def _confidence_changed(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    row = rows.symbols[_pick(rng, rows.symbols, "confidence")]
    old = float(row["confidence"])
    row["confidence"] = round(old - 0.15 if old >= 0.5 else old + 0.15, 2)
    nk = f"{record.job.key}/{row['symbol']}"
    return [
        SeededDefect(
            Category.FIELD_MISMATCH, nk, f"confidence {old} in KV, {row['confidence']} in D1"
        )
    ]


def _status_changed(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    old = rows.job["status"]
    rows.job["status"] = "failure" if old != "failure" else "success"
    note = f"status {old} in KV, {rows.job['status']} in D1"
    return [SeededDefect(Category.FIELD_MISMATCH, str(record.job.key), note)]


def _plan_adapter_nulls(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    """The plan's adapter read `analysis[symbol]?.sentiment` etc.: always undefined (§5)."""
    seeds = []
    for row in rows.symbols:
        if any(row[c] is not None for c in ("sentiment", "confidence", "direction", "reasoning")):
            nk = f"{record.job.key}/{row['symbol']}"
            seeds.append(
                SeededDefect(Category.FIELD_MISMATCH, nk, "plan adapter: per-symbol fields NULL")
            )
        row.update(sentiment=None, confidence=None, direction=None, reasoning=None)
    return seeds


def _duplicate(rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random) -> list[SeededDefect]:
    key = JobKey(
        record.job.key.execution_date,
        record.job.key.job_type,
        run_of(rows.job["execution_time"]) or "",
    )
    return [SeededDefect(Category.DUPLICATE_IN_D1, str(key), "the execution was written twice")]


def _orphan(rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random) -> list[SeededDefect]:
    key = JobKey(
        record.job.key.execution_date,
        record.job.key.job_type,
        run_of(rows.job["execution_time"]) or "",
    )
    return [
        SeededDefect(Category.ORPHAN_IN_D1, str(key), f"KV lost {record.kv_key}; D1 kept the job")
    ]


def _confidence_out_of_range(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    index = _pick(rng, rows.symbols, "confidence")
    return _broken_symbol(rows, record, ids, index, "confidence", 1.7)


def _signals_not_json(
    rows: _Rows, record: KvRecord, ids: _Ids, rng: random.Random
) -> list[SeededDefect]:
    index = _pick(rng, rows.symbols, "signals")
    text = str(
        json.loads(rows.symbols[index]["signals"])
    )  # a Python repr: single quotes, True/None
    return _broken_symbol(rows, record, ids, index, "signals", text)


def _broken_symbol(
    rows: _Rows, record: KvRecord, ids: _Ids, index: int, column: str, value: Any
) -> list[SeededDefect]:
    """A row breaking the schema's rules is also a field that differs from KV: two findings."""
    row = rows.symbols[index]
    row[column] = value
    return [
        SeededDefect(
            Category.INVALID_D1_ROW,
            f"analysis_results#{ids.symbol + index}",
            f"{column} {value!r:.40}",
        ),
        SeededDefect(
            Category.FIELD_MISMATCH, f"{record.job.key}/{row['symbol']}", f"the same row's {column}"
        ),
    ]


_ROW_DEFECTS: dict[Defect, RowEdit] = {
    Defect.MISSING_SYMBOL: _missing_symbol,
    Defect.MISSING_REPORT: _missing_report,
    Defect.CONFIDENCE_CHANGED: _confidence_changed,
    Defect.STATUS_CHANGED: _status_changed,
    Defect.PLAN_ADAPTER_NULLS: _plan_adapter_nulls,
    Defect.DUPLICATE: _duplicate,
    Defect.ORPHAN: _orphan,
    Defect.CONFIDENCE_OUT_OF_RANGE: _confidence_out_of_range,
    Defect.SIGNALS_NOT_JSON: _signals_not_json,
}


# --- the normalisation-cases dataset: differences the rules accept ---------------------------


def _add_noise(rows: _Rows) -> None:
    """Differences PRODUCT.md accepts: float noise, enum case, JSON layout, 0 stored as NULL."""
    _zero_as_null(rows.job)
    for row in rows.symbols:
        _zero_as_null(row)
        if isinstance(row["confidence"], float) and row["confidence"] > 0:
            row["confidence"] *= 1 - 4e-10
        if row["sentiment"]:
            row["sentiment"] = row["sentiment"].capitalize()
        if row["direction"]:
            row["direction"] = row["direction"].upper()
        for column in ("signals", "technical_data"):
            row[column] = _loose_json(row[column])
    for row in rows.reports:
        _zero_as_null(row)
        row["content"] = _loose_json(row["content"])


def _zero_as_null(row: dict[str, Any]) -> None:
    for name in OPTIONAL_COUNTERS.intersection(row):
        if row[name] == 0:
            row[name] = None


def _loose_json(text: str | None) -> str | None:
    """The same JSON with keys in reverse order, indented."""
    return None if text is None else json.dumps(_reversed_keys(json.loads(text)), indent=2)


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


# --- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticWorker:
    """A synthetic worker: lazily streamed KV entries and D1 rows, and the findings it seeds.

    `dates` are the days with jobs (trading days and Sundays) in ascending order; `seeded` lists
    every finding verify must report over `window` at `now`, and nothing else;
    `accepted_rules` the canonical rules its D1 side relies on (normalisation cases only).
    """

    window: Window
    dates: tuple[str, ...]
    seed: int
    symbols: tuple[str, ...]
    now: dt.datetime
    seeded: list[SeededDefect]
    accepted_rules: tuple[str, ...]
    _spec: _Spec = field(repr=False)

    def _iter_days(self) -> Iterator[_Day]:
        for date in self.dates:
            yield _DayBuilder(self._spec, date).build()

    def iter_kv_entries(self) -> Iterator[KvEntry]:
        """Every KV entry: job, report and status keys, then the day's unrelated keys."""
        for day in self._iter_days():
            keys = [e for ex in day.executions for e in ex.kv_entries]
            yield from keys
            yield from _unrelated(self._spec, day.date, self._spec.unrelated_per_job * len(keys))

    def iter_d1_jobs(self) -> Iterator[D1JobRows]:
        """What the dual-writer inserted, execution by execution, ids from 1 in insertion order."""
        ids = _Ids()
        for day in self._iter_days():
            jobs, _ = _d1_day(self._spec, day, ids)
            yield from jobs


def generate(
    *,
    until: dt.date,
    business_days: int = 60,
    seed: int = 7,
    symbols: Sequence[str] | int = DEFAULT_SYMBOLS,
    defects: bool = True,
    unrelated_per_job: int = 0,
    now: dt.datetime,
) -> SyntheticWorker:
    """A worker over the `business_days` trading days up to `until` (and the Sundays among them).

    With `defects`, one or more findings of every category are seeded on dates before `now`'s
    ET date (see `SyntheticWorker.seeded`). Example:
    `generate(until=dt.date(2026, 11, 27), business_days=20, now=dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC))`
    """
    trading, sundays = _calendar(until, business_days)
    plan = plan_defects(trading, sundays, seed=seed, now=_aware(now)) if defects else DefectPlan()
    return _worker(
        trading, sundays, until, seed, symbols, now, unrelated_per_job, plan, d1_noise=False
    )


def normalisation_cases(
    *,
    until: dt.date,
    business_days: int = 10,
    seed: int = 7,
    symbols: Sequence[str] | int = DEFAULT_SYMBOLS,
    now: dt.datetime,
) -> SyntheticWorker:
    """A worker whose D1 differs from KV only in ways PRODUCT.md's rules accept (no findings).

    Float noise within 1e-9 relative (confidence), enum case (`Bullish`, `UP`), JSON key order and
    white space (signals, technical_data, content), and the plan adapter's `0 → NULL` for the
    optional counters. The last two trading days are pinned so every rule is exercised: a bridge
    (D) run with a skipped symbol (news_count 0) and a run without failures (symbols_failed 0).
    """
    trading, sundays = _calendar(until, business_days)
    if len(trading) < 2:
        raise ValueError("normalisation cases need at least 2 business days")
    plan = DefectPlan(
        variants={trading[-1]: Variant.D, trading[-2]: Variant.B_HEAD_DAILY},
        failures={trading[-1]: 1, trading[-2]: 0},
    )
    return _worker(trading, sundays, until, seed, symbols, now, 0, plan, d1_noise=True)


def _worker(
    trading: list[str],
    sundays: list[str],
    until: dt.date,
    seed: int,
    symbols: Sequence[str] | int,
    now: dt.datetime,
    unrelated_per_job: int,
    plan: DefectPlan,
    *,
    d1_noise: bool,
) -> SyntheticWorker:
    if unrelated_per_job < 0:
        raise ValueError("unrelated_per_job cannot be negative")
    since = dt.date.fromisoformat(trading[0])
    plan = _with_shape_pins(trading, plan)
    spec = _Spec(
        since, until, seed, resolve_symbols(symbols), _aware(now), unrelated_per_job, plan, d1_noise
    )
    dates = tuple(sorted([*trading, *sundays]))
    return SyntheticWorker(
        window=Window(trading[0], until.isoformat()),
        dates=dates,
        seed=seed,
        symbols=spec.symbols,
        now=spec.now,
        seeded=_collect_seeded(spec, dates),
        accepted_rules=NOISE_RULES if d1_noise else (),
        _spec=spec,
    )


_SHAPE_PINS = ((0.1, Variant.C_DAILY), (0.6, Variant.A), (0.7, Variant.E), (0.85, Variant.D))


def _with_shape_pins(trading: Sequence[str], plan: DefectPlan) -> DefectPlan:
    """Pin one day of each rarer analysis shape in its era, so even a short window has them all.

    A pin takes the first day from its position on whose analysis job carries no defect.
    """
    if len(trading) < MIN_DEFECT_DAYS:
        return plan
    variants = dict(plan.variants)
    for position, variant in _SHAPE_PINS:
        start = round(position * (len(trading) - 1))
        free = (d for d in trading[start:] if d not in variants and "analysis" not in plan.on(d))
        if (date := next(free, None)) is not None:
            variants[date] = variant
    return dataclasses.replace(plan, variants=variants)


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware (e.g. datetime.now(datetime.UTC))")
    return now


def _calendar(until: dt.date, business_days: int) -> tuple[list[str], list[str]]:
    """The last `business_days` trading days up to `until`, and the Sundays from the first to `until`."""
    if business_days < 1:
        raise ValueError("business_days must be at least 1")
    trading: list[str] = []
    day = until
    while len(trading) < business_days:
        if is_trading_day(day):
            trading.append(day.isoformat())
        day -= dt.timedelta(days=1)
    trading.reverse()
    first = dt.date.fromisoformat(trading[0])
    sundays = [
        (first + dt.timedelta(days=n)).isoformat()
        for n in range((until - first).days + 1)
        if (first + dt.timedelta(days=n)).weekday() == 6
    ]
    return trading, sundays


def _collect_seeded(spec: _Spec, dates: Sequence[str]) -> list[SeededDefect]:
    """The seeded findings, from the defect days only (and every day up to the last one whose
    findings name a row id, so the ids are those the full stream gives)."""
    by_date = spec.plan.by_date
    id_bound = max(
        (
            d
            for d, jobs in by_date.items()
            if {Defect.CONFIDENCE_OUT_OF_RANGE, Defect.SIGNALS_NOT_JSON} & set(jobs.values())
        ),
        default="",
    )
    ids = _Ids()
    seeded: list[SeededDefect] = []
    for date in dates:
        if date <= id_bound or date in by_date:
            _, seeds = _d1_day(spec, _DayBuilder(spec, date).build(), ids)
            seeded += seeds
    return seeded


# --- writing a wrangler project ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerFiles:
    """Where `write_worker` put a worker, and what wrangler knows its bindings by."""

    directory: Path
    config: Path
    persist_to: Path  # `--persist-to` (wrangler's `.wrangler/state`); the state is under `v3`
    v3_dir: Path
    kv_binding: str
    kv_namespace_id: str
    d1_binding: str
    d1_database_name: str
    d1_database_id: str
    d1_path: Path
    window: Window
    seeded: tuple[SeededDefect, ...]
    seeded_file: Path
    kv_keys: int
    d1_rows: dict[str, int]


def binding_ids(seed: int) -> tuple[str, str]:
    """A KV namespace id (32 hex) and a D1 database id (a UUID), stable for a seed."""
    digest = hashlib.sha256(f"kv2d1-synth:{seed}".encode()).hexdigest()
    return digest[:32], str(uuid.UUID(hex=digest[32:64], version=4))


def wrangler_toml(name: str, namespace_id: str, database_id: str) -> str:
    return (
        f'name = "{name}"\n'
        'main = "src/index.ts"\n'
        f'compatibility_date = "{COMPATIBILITY_DATE}"\n'
        "\n[[kv_namespaces]]\n"
        f'binding = "{KV_BINDING}"\n'
        f'id = "{namespace_id}"\n'
        "\n[[d1_databases]]\n"
        f'binding = "{D1_BINDING}"\n'
        f'database_name = "{D1_DATABASE_NAME}"\n'
        f'database_id = "{database_id}"\n'
    )


def write_worker(
    directory: Path, worker: SyntheticWorker, *, name: str = "tft-trading-system"
) -> WorkerFiles:
    """Write `wrangler.toml`, the local KV and D1 state and `SEEDED_DEFECTS.json` into `directory`.

    Refuses a directory that already holds wrangler state (the rows would collide).
    """
    from verifier.sources.localwriter import LocalKvWriter, create_local_d1

    persist_to = directory / ".wrangler" / "state"
    v3_dir = persist_to / "v3"
    if v3_dir.exists():
        raise FileExistsError(
            f"{v3_dir} already exists; write a synthetic worker into an empty directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    namespace_id, database_id = binding_ids(worker.seed)
    config = directory / "wrangler.toml"
    config.write_text(wrangler_toml(name, namespace_id, database_id), encoding="utf-8")
    with LocalKvWriter(v3_dir, namespace_id) as kv:
        kv_keys = kv.put_many(worker.iter_kv_entries())
    d1_path = create_local_d1(v3_dir, database_id)
    d1_rows = write_d1(d1_path, worker.iter_d1_jobs())
    seeded_file = directory / SEEDED_FILE
    seeded_file.write_text(_seeded_json(worker), encoding="utf-8")
    return WorkerFiles(
        directory,
        config,
        persist_to,
        v3_dir,
        KV_BINDING,
        namespace_id,
        D1_BINDING,
        D1_DATABASE_NAME,
        database_id,
        d1_path,
        worker.window,
        tuple(worker.seeded),
        seeded_file,
        kv_keys,
        d1_rows,
    )


def _seeded_json(worker: SyntheticWorker) -> str:
    document = {
        "window": worker.window.to_json(),
        "now": iso_utc(worker.now),
        "seed": worker.seed,
        "defects": [d.to_json() for d in worker.seeded],
    }
    return json.dumps(document, indent=2) + "\n"


def write_d1(path: Path, jobs: Iterable[D1JobRows]) -> dict[str, int]:
    """Apply the plan's schema and insert the rows, `_INSERT_CHUNK` executions per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    counts = {"job_executions": 0, "analysis_results": 0, "report_snapshots": 0}
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript((schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8"))
        iterator = iter(jobs)
        while chunk := list(islice(iterator, _INSERT_CHUNK)):
            conn.execute("BEGIN")
            _insert(conn, "job_executions", [j.execution for j in chunk], counts)
            _insert(conn, "analysis_results", [s for j in chunk for s in j.symbols], counts)
            _insert(conn, "report_snapshots", [r for j in chunk for r in j.reports], counts)
            conn.execute("COMMIT")
    finally:
        conn.close()
    return counts


def _insert(
    conn: sqlite3.Connection, table: str, rows: list[D1Row], counts: dict[str, int]
) -> None:
    if not rows:
        return
    columns = ("id", *rows[0].values)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn.executemany(sql, ((r.row_id, *(r.values[c] for c in columns[1:])) for r in rows))
    counts[table] += len(rows)


__all__ = [
    "DEFAULT_SYMBOLS",
    "D1JobRows",
    "D1Row",
    "Defect",
    "DefectPlan",
    "SeededDefect",
    "SymbolView",
    "SyntheticWorker",
    "Variant",
    "WorkerFiles",
    "draw_views",
    "generate",
    "normalisation_cases",
    "write_worker",
]
