"""Realistic KV payloads of every shape (reference/kv-payloads.md §3, §6), for any test to reuse.

One function per shape returns a fresh dict (mutate it freely). The symbols are the worker's
default list, AAPL MSFT GOOGL TSLA NVDA; by default TSLA failed (no news), and shape A also lost
GOOGL, as the reference describes each shape's failures: A drops failed symbols from
`sentiment_signals` but keeps them in `symbols_analyzed`; B keeps them with failure markers (KV
era: fake 0.5 / 0.05 confidences; HEAD: `null`); D keeps them with `status` and a null confidence;
E leaves them out of `trading_signals`.

`EXAMPLES` maps each shape name to its default builder, `VARIANTS` adds the drift the reference
documents (B at HEAD, the D1 wrapper of D, EOD's other forms, …); `kv_value` encodes a payload
the way the worker stored it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

SYMBOLS = ("AAPL", "MSFT", "GOOGL", "TSLA", "NVDA")
DEFAULT_DATE = "2026-11-16"  # a Monday, a trading day
DEFAULT_SUNDAY = "2026-11-22"  # the Sunday the weekly job of that week runs on
NEW_YORK = ZoneInfo("America/New_York")

Payload = dict[str, Any]


# by symbol: sentiment, confidence, direction, action, reasoning, articles, primary/mate confidence
_GOOD: dict[str, tuple[str, float, str, str, str, int, float, float]] = {
    "AAPL": (
        "bullish",
        0.82,
        "up",
        "BUY",
        "Services revenue beat; buyback expanded",
        12,
        0.78,
        0.71,
    ),
    "MSFT": (
        "bearish",
        0.64,
        "down",
        "SELL",
        "Capex guidance raised; margin concern",
        8,
        0.66,
        0.58,
    ),
    "GOOGL": ("bullish", 0.71, "up", "WEAK_BUY", "Cloud growth re-accelerates", 10, 0.72, 0.65),
    "TSLA": (
        "bearish",
        0.58,
        "down",
        "WEAK_SELL",
        "Delivery miss; price cuts widen",
        14,
        0.6,
        0.52,
    ),
    "NVDA": (
        "bullish",
        0.88,
        "up",
        "STRONG_BUY",
        "Data-center demand outpaces supply",
        15,
        0.9,
        0.81,
    ),
}


def _at(date: str, clock: str) -> str:
    return f"{date}T{clock}Z"


def _epoch_ms(date: str, clock: str) -> int:
    instant = dt.datetime.fromisoformat(f"{date}T{clock}+00:00")
    return int(instant.timestamp() * 1000)


def run_of(date: str, utc_clock: str) -> str:
    """The ET wall-clock `HHMMSS` (a per-run key suffix) of a UTC time on a date."""
    instant = dt.datetime.fromisoformat(f"{date}T{utc_clock}+00:00")
    return instant.astimezone(NEW_YORK).strftime("%H%M%S")


def _confidence(symbol: str) -> float:
    return _GOOD[symbol][1]


# --- job payloads (analysis_{date}, analysis_{date}_{HHMMSS}) ------------------------------


def shape_a(date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("GOOGL", "TSLA")) -> Payload:
    """Manual enhanced analysis (§3.1): failed symbols are absent from `sentiment_signals`."""
    signals = {}
    for symbol in SYMBOLS:
        if symbol in failed:
            continue
        sentiment, confidence, _, _, reasoning, _, _, _ = _GOOD[symbol]
        agree = confidence >= 0.7
        signals[symbol] = {
            "symbol": symbol,
            "sentiment_analysis": {
                "sentiment": sentiment,
                "confidence": confidence,
                "reasoning": reasoning,
                "dual_ai_comparison": {
                    "agree": agree,
                    "agreement_type": "full_agreement" if agree else "partial_agreement",
                    "signal_type": "AGREEMENT" if agree else "PARTIAL_AGREEMENT",
                    "signal_strength": "STRONG" if agree else "MODERATE",
                },
            },
            "news_count": 2,  # really the number of models that answered
            "timestamp": _at(date, "13:02:11.410"),
            "method": "dual_ai_comparison",
        }
    return {
        "sentiment_signals": signals,
        "analysis_time": _at(date, "13:01:20.003"),
        "trigger_mode": "manual_analysis_enhanced",
        "symbols_analyzed": list(SYMBOLS),
        "dual_ai_statistics": {
            "total_symbols": len(SYMBOLS),
            "full_agreement": sum(1 for s in signals if _confidence(s) >= 0.7),
            "partial_agreement": sum(1 for s in signals if _confidence(s) < 0.7),
            "disagreement": 0,
            "errors": len(failed),
        },
        "execution_metrics": {
            "total_time_ms": 51234,
            "analysis_enabled": True,
            "sentiment_sources": ["free_news", "dual_ai_analysis"],
            "cloudflare_ai_enabled": True,
            "analysis_method": "dual_ai_comparison",
        },
    }


def _b_signal(symbol: str, *, era: str) -> Payload:
    sentiment, confidence, direction, action, reasoning, articles, primary, mate = _GOOD[symbol]
    kv_era = era == "kv"
    return {
        "symbol": symbol,
        "predicted_price": None,
        "current_price": None,
        "direction": direction,
        "confidence": confidence,
        "model": "dual_ai_comparison",
        "sentiment_layers": [
            {
                "layer_type": "gpt_oss_120b" if kv_era else "primary_model",
                "model": "openchat-3.5-0106" if kv_era else "gpt-oss-120b",
                "sentiment": sentiment,
                "confidence": primary,
                "detailed_analysis": {"reasoning": reasoning, "articles_analyzed": articles},
            },
            {
                "layer_type": "distilbert_sst_2" if kv_era else "mate_model",
                "model": "distilbert-sst-2-int8" if kv_era else "deepseek-r1-32b",
                "sentiment": sentiment,
                "confidence": mate,
                "sentiment_breakdown": {"positive": 0.7, "negative": 0.3},
                "articles_analyzed": articles,
            },
        ],
        "trading_signals": {
            "symbol": symbol,
            "primary_direction": direction,
            "overall_confidence": confidence,
            "recommendation": action,
            "signal_strength": "STRONG" if confidence >= 0.8 else "MODERATE",
            "signal_type": "AGREEMENT",
            "entry_signals": {"direction": direction, "strength": "STRONG", "reasoning": reasoning},
        },
        "confidence_metrics": {
            "overall_confidence": confidence,
            "base_confidence": round((primary + mate) / 2, 3),
            "consistency_bonus": 0.15,
            "agreement_bonus": 0.1,
            "confidence_breakdown": (
                {"gpt_confidence": primary, "distilbert_confidence": mate}
                if kv_era
                else {"primary_confidence": primary, "mate_confidence": mate, "agreement_score": 1}
            ),
        },
        "sentiment_patterns": {
            "model_agreement": True,
            "agreement_type": "full_agreement",
            "signal_strength": "STRONG",
            "signal_type": "AGREEMENT",
        },
        "analysis_metadata": {
            "method": "dual_ai_comparison",
            "models_used": [
                "gpt-oss-120b",
                "distilbert-sst-2-int8" if kv_era else "deepseek-r1-32b",
            ],
            "total_processing_time": 9120,
            "news_quality_score": 0.8,
        },
        "enhanced_prediction": {
            "direction": direction,
            "confidence": confidence,
            "method": "dual_ai_comparison",
            "sentiment_analysis": {
                "sentiment": direction,
                "confidence": confidence,
                "source": "dual_ai_comparison",
                "model": "GPT-OSS-120B + DistilBERT",
            },
        },
        "analysis_type": "dual_ai_comparison",
        "fallback_used": False,
    }


def _b_failed(symbol: str, *, era: str) -> Payload:
    if era == "kv":  # KV era: fake confidences under a non-failure analysis_type (§6)
        return {
            "symbol": symbol,
            "direction": "NEUTRAL",
            "confidence": 0.5,
            "model": "dual_ai_comparison",
            "sentiment_layers": [
                {"layer_type": "gpt_oss_120b", "sentiment": "neutral", "confidence": 0}
            ],
            "trading_signals": {
                "symbol": symbol,
                "primary_direction": "UNCLEAR",
                "overall_confidence": 0.05,
                "recommendation": "SKIP",
                "signal_type": "ERROR",
            },
            "analysis_type": "dual_ai_comparison",
            "fallback_used": False,
        }
    return {  # HEAD: null confidence, an explicit failure
        "symbol": symbol,
        "predicted_price": None,
        "current_price": None,
        "direction": "neutral",
        "confidence": None,
        "model": "dual_ai_comparison",
        "sentiment_layers": [],
        "trading_signals": {
            "symbol": symbol,
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


def shape_b(
    date: str = DEFAULT_DATE,
    *,
    failed: Sequence[str] = ("TSLA",),
    era: str = "kv",
    run: str | None = None,
) -> Payload:
    """Cron "legacy format" (§3.2, §6); `era` "kv" (2025) or "head".

    `run` is the ET wall-clock `HHMMSS` of the run (the key suffix); by default the 12:30 UTC cron.
    KV-era `last_updated` is that ET wall clock labelled `Z` (§7.1); the cron id is the instant.
    """
    signals = {s: _b_failed(s, era=era) if s in failed else _b_signal(s, era=era) for s in SYMBOLS}
    run = run or run_of(date, "12:30:00")
    wall = f"{run[:2]}:{run[2:4]}:{run[4:]}"
    instant = dt.datetime.fromisoformat(f"{date}T{wall}").replace(tzinfo=NEW_YORK)
    ok = len(SYMBOLS) - len(failed)
    return {
        "symbols_analyzed": list(SYMBOLS),
        "trading_signals": signals,
        "pre_market_analysis": {
            "trigger_mode": "morning_prediction_alerts",
            "prediction_horizons": [1, 24],
            "execution_time_ms": 48211,
            "enhancement_enabled": True,
            "batch_pipeline_used": True,
            "symbols_processed": len(SYMBOLS),
            "success_rate": ok / len(SYMBOLS),
            "storage_operations": 6,
            "storage_successful": 6,
        },
        "analysis_statistics": {
            "total_symbols": len(SYMBOLS),
            "successful_full_analysis": ok,
            "fallback_sentiment_used": 0,
            "neutral_fallback_used": len(failed),
            "overall_success": True,
        },
        "cron_execution_id": f"cron_{int(instant.timestamp() * 1000) + 123}",
        "trigger_mode": "morning_prediction_alerts",
        "last_updated": _at(date, f"{wall}.000"),
    }


def shape_c(date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("TSLA",)) -> Payload:
    """KV-era batch daily summary (§3.3): missing confidence → 0.5, direction → NEUTRAL."""
    symbols = []
    for symbol in SYMBOLS:
        sentiment, confidence, direction, *_ = _GOOD[symbol]
        bad = symbol in failed
        symbols.append(
            {
                "symbol": symbol,
                "sentiment": "neutral" if bad else sentiment,
                "confidence": 0.5 if bad else confidence,
                "direction": "NEUTRAL" if bad else direction,
                "model": "dual_ai_comparison",
                "layer_consistency": 0 if bad else 0.9,
                "analysis_type": "neutral_fallback" if bad else "dual_ai_comparison",
            }
        )
    return {
        "date": date,
        "symbols": symbols,
        "execution_time": _epoch_ms(date, "12:31:02.448"),  # epoch ms: an instant
        "batch_stored": True,
        "total_symbols": len(SYMBOLS),
    }


def shape_c_prime(date: str = DEFAULT_DATE, *, symbol: str = "AAPL") -> Payload:
    """KV-era granular record `analysis_{date}_{SYMBOL}` (§3.4, §6)."""
    sentiment, confidence, direction, action, _, articles, primary, _ = _GOOD[symbol]
    since = _epoch_ms(date, "00:00:00") - 86_400_000
    return {
        "symbol": symbol,
        "analysis_type": "dual_ai_comparison",
        "timestamp": _at(date, "12:30:41.552"),
        "sentiment_layers": [
            {
                "layer_type": "gpt_oss_120b",
                "sentiment": sentiment,
                "confidence": primary,
                "model": "openchat-3.5-0106",
            },
        ],
        "confidence_metrics": {
            "overall_confidence": confidence,
            "base_confidence": 0.745,
            "consistency_bonus": 0.15,
            "agreement_bonus": 0.1,
        },
        "trading_signals": {
            "symbol": symbol,
            "primary_direction": direction,
            "overall_confidence": confidence,
            "recommendation": action,
        },
        "sentiment_patterns": {
            "overall_consistency": "high",
            "primary_sentiment": sentiment,
            "model_agreement": True,
        },
        "analysis_metadata": {
            "method": "dual_ai_comparison",
            "models_used": ["gpt-oss-120b", "distilbert-sst-2-int8"],
            "total_processing_time": 9120,
            "news_quality_score": 0.8,
        },
        "news_data": {
            "total_articles": articles,
            "time_range": {"earliest": since, "latest": since + 80_000_000},
        },
    }


def _d_signal(symbol: str) -> Payload:
    sentiment, confidence, _, action, reasoning, articles, primary, mate = _GOOD[symbol]
    return {
        "symbol": symbol,
        "signal": {
            "direction": sentiment,
            "confidence": confidence,
            "reasoning": reasoning,
            "action": action,
            "type": "AGREEMENT",
        },
        "models": {
            "primary": {"direction": sentiment, "confidence": primary, "reasoning": reasoning},
            "mate": {"direction": sentiment, "confidence": mate, "reasoning": reasoning},
        },
        "sentiment_layers": [
            {"sentiment": sentiment, "confidence": confidence, "reasoning": reasoning}
        ],
        "dual_model": {
            "primary": {
                "status": "success",
                "confidence": primary,
                "direction": sentiment,
                "response_time_ms": 8123,
            },
            "mate": {
                "status": "success",
                "confidence": mate,
                "direction": sentiment,
                "response_time_ms": 11230,
            },
            "selection_reason": "agreement",
        },
        "articles_count": articles,
        "articles_content": [f"{symbol} headline {i}" for i in range(1, 4)],
    }


def _d_skipped(symbol: str) -> Payload:
    return {
        "symbol": symbol,
        "signal": {
            "direction": "neutral",
            "confidence": None,
            "reasoning": "No news articles available",
            "action": "SKIP",
            "type": "ERROR",
        },
        "status": "skipped",
        "error_message": "No news articles available",
    }


def shape_d(
    date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("TSLA",), wrapper: bool = False
) -> Payload:
    """Pre-market data bridge (§3.5): no `symbols_analyzed`; skipped symbols kept with `status`.

    `wrapper=True` gives the D1 content form of `POST /api/v1/jobs/pre-market` (§3.5, §9.4):
    `date`, `job_type`, and *numeric* `symbols_analyzed` / `high_confidence_signals`.
    """
    signals = {s: _d_skipped(s) if s in failed else _d_signal(s) for s in SYMBOLS}
    payload: Payload = {
        "trading_signals": signals,
        "market_pulse": {
            "symbol": "SPY",
            "name": "S&P 500",
            "status": "success",
            "direction": "neutral",
            "confidence": 0.55,
            "articles_count": 20,
            "source": "finnhub",
            "reasoning": "Mixed macro headlines ahead of CPI",
            "generated_at": _at(date, "12:31:38.870"),
        },
        "timestamp": _at(date, "12:31:40.101"),
        "generated_at": _at(date, "12:31:40.101"),
    }
    if wrapper:
        high = sum(1 for s in SYMBOLS if s not in failed and _confidence(s) > 0.7)
        payload = {
            "date": date,
            "job_type": "pre-market",
            "symbols_analyzed": len(SYMBOLS),
            "high_confidence_signals": high,
            **payload,
        }
    return payload


def shape_e(date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("TSLA",)) -> Payload:
    """Basic fallback analysis (§3.6) with `fallback_reason`; failed symbols left out."""
    signals = {}
    for symbol in SYMBOLS:
        if symbol in failed:
            continue
        _, confidence, direction, _, reasoning, *_ = _GOOD[symbol]
        signals[symbol] = {
            "symbol": symbol,
            "direction": direction if confidence >= 0.6 else "hold",
            "current_price": 100.0,
            "predicted_price": 101.2 if direction == "up" else 98.9,
            "confidence": confidence,
            "reasoning": reasoning,
            "model_type": "basic_sentiment",
            "timestamp": _at(date, "13:01:22.512"),
            "technical_indicators": {"rsi": 58.2, "sma_20": 99.1},
            "market_conditions": {"trend": "sideways"},
        }
    ok = len(signals)
    return {
        "symbols_analyzed": list(SYMBOLS),
        "trading_signals": signals,
        "analysis_time": _at(date, "13:01:20.003"),
        "trigger_mode": "manual_analysis_enhanced",
        "performance_metrics": {
            "success_rate": ok / len(SYMBOLS),
            "total_symbols": len(SYMBOLS),
            "successful_analyses": ok,
            "failed_analyses": len(SYMBOLS) - ok,
        },
        "fallback_reason": "Enhanced analysis failed: AI binding timeout",
    }


# --- report payloads -----------------------------------------------------------------------


def shape_f(date: str = DEFAULT_DATE, *, updated: bool = True) -> Payload:
    """`morning_predictions_{date}` (§3.7, §6): confidence >= 0.7; `updated`: after intraday."""
    predictions = []
    for i, symbol in enumerate(SYMBOLS):
        sentiment, confidence, direction, _, reasoning, *_ = _GOOD[symbol]
        if confidence < 0.7 or symbol == "TSLA":
            continue
        prediction: Payload = {
            "id": f"6f0c{i:04d}-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
            "symbol": symbol,
            "prediction": direction,
            "confidence": confidence,
            "morningPrice": None,
            "predictedPrice": None,
            "timestamp": _at(date, "12:31:05.120"),
            "status": "tracking" if updated else "pending",
            "analysis": {"sentiment_layers": [], "reasoning": reasoning},
        }
        if updated:
            prediction.update(
                {
                    "currentPrice": 262.1,
                    "currentChange": 0.84,
                    "performance": {
                        "isCorrect": sentiment == "bullish",
                        "accuracy": 0.9,
                        "divergenceLevel": "low",
                        "status": "tracking",
                        "predictedChange": 1.0,
                        "actualChange": 0.84,
                    },
                    "lastUpdated": _at(date, "16:02:40.000"),
                }
            )
        predictions.append(prediction)
    payload: Payload = {
        "date": date,
        "predictions": predictions,
        "metadata": {
            "totalSignals": len(predictions),
            "averageConfidence": round(
                sum(p["confidence"] for p in predictions) / len(predictions), 3
            ),
            "bullishCount": sum(1 for p in predictions if p["prediction"] == "up"),
            "bearishCount": sum(1 for p in predictions if p["prediction"] == "down"),
            "generatedAt": _at(date, "12:31:05.121"),
        },
    }
    if updated:
        payload["lastPerformanceUpdate"] = _at(date, "16:02:40.000")
    return payload


def shape_g(date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("TSLA",)) -> Payload:
    """`pre_market_report_{date}` (§3.8): numeric `symbols_analyzed`, failed signals kept."""
    signals = []
    for symbol in SYMBOLS:
        sentiment, confidence, *_, primary, mate = _GOOD[symbol]
        bad = symbol in failed
        signals.append(
            {
                "symbol": symbol,
                "sentiment": "neutral" if bad else sentiment,
                "confidence": None if bad else confidence,
                "primary_model": "gpt-oss-120b",
                "primary_confidence": None if bad else primary,
                "mate_model": "deepseek-r1-32b",
                "mate_confidence": None if bad else mate,
                "status": "failed" if bad else "success",
                "reason": "No news articles available" if bad else None,
            }
        )
    high = [s for s in signals if s["confidence"] is not None and s["confidence"] > 0.7]
    return {
        "type": "pre_market_briefing",
        "timestamp": _at(date, "12:32:00.004"),
        "market_status": "pre_market",
        "date": date,
        "is_stale": False,
        "key_insights": ["3 high-confidence bullish signals", "TSLA skipped: no news"],
        "high_confidence_signals": high,
        "all_signals": signals,
        "high_confidence_count": len(high),
        "data_source": "d1_snapshot",
        "generated_at": _at(date, "12:31:40.101"),
        "symbols_analyzed": len(SYMBOLS),
    }


def shape_i(date: str = DEFAULT_DATE, *, failed: Sequence[str] = ("TSLA",)) -> Payload:
    """Intraday report, D1 content (§3.9): `overall_accuracy` a 0–1 fraction."""
    rows, comparisons = [], []
    for symbol in SYMBOLS:
        sentiment, confidence, *_ = _GOOD[symbol]
        bad = symbol in failed
        rows.append(
            {
                "symbol": symbol,
                "morning_prediction": None if bad else sentiment,
                "morning_confidence": None if bad else confidence,
                "current_sentiment": sentiment,
                "current_confidence": round(confidence - 0.03, 2),
                "performance": "diverged" if bad else "on_track",
                "accuracy_score": 0 if bad else 0.9,
            }
        )
        side = {
            "direction": sentiment,
            "confidence": confidence,
            "reasoning": "…",
            "articles_count": 6,
            "status": "success",
        }
        comparisons.append(
            {
                "symbol": symbol,
                "premarket": {"status": "skipped", "error": "No news articles available"}
                if bad
                else side,
                "intraday": {**side, "confidence": round(confidence - 0.03, 2)},
                "comparison": {
                    "direction_match": not bad,
                    "confidence_change": None if bad else -0.03,
                    "status": "incomplete" if bad else "consistent",
                },
            }
        )
    on_track = len(SYMBOLS) - len(failed)
    return {
        "date": date,
        "job_type": "intraday",
        "symbols_analyzed": len(SYMBOLS),
        "on_track_count": on_track,
        "diverged_count": len(failed),
        "overall_accuracy": on_track / len(SYMBOLS),
        "market_status": "open",
        "symbols": rows,
        "comparisons": comparisons,
        "pre_market_run_id": f"{date}_pre-market_5b1d2c4e",
        "timestamp": _at(date, "16:01:12.330"),
    }


def shape_eod(date: str = DEFAULT_DATE, *, form: str = "result") -> Payload:
    """End-of-day report (§3.10); `form` "result" (EndOfDayResult + scheduler fields),
    "wrapper" (storeDailyReport: `metadata.reportType`) or "head" (`{summary, tomorrowOutlook}`)."""
    if form == "head":
        return {
            "summary": {"totalSignals": 4, "correctCalls": 3, "successRate": 75},
            "tomorrowOutlook": {
                "marketBias": "bullish",
                "confidence": "medium",
                "keyFocus": ["NVDA"],
            },
        }
    breakdown = []
    for symbol in SYMBOLS:
        sentiment, confidence, direction, action, reasoning, articles, primary, mate = _GOOD[symbol]
        if symbol == "TSLA":
            continue
        correct = symbol != "MSFT"
        breakdown.append(
            {
                "ticker": symbol,
                "predicted": sentiment,
                "predictedDirection": direction,
                "actual": "+0.84%" if correct else "+0.40%",
                "actualDirection": direction if correct else "up",
                "confidence": confidence,
                "confidenceLevel": "high" if confidence >= 0.7 else "medium",
                "correct": correct,
                "primary_confidence": primary,
                "mate_confidence": mate,
                "models_agree": True,
                "action": action,
                "signal_reasoning": reasoning,
                "articles_count": articles,
            }
        )
    result: Payload = {
        "overallAccuracy": 75,  # an integer percentage
        "totalSignals": len(breakdown),
        "correctCalls": sum(1 for b in breakdown if b["correct"]),
        "wrongCalls": sum(1 for b in breakdown if not b["correct"]),
        "modelGrade": "B",
        "topWinners": [{"ticker": "NVDA", "performance": "+2.10%"}],
        "topLosers": [{"ticker": "MSFT", "performance": "+0.40%"}],
        "signalBreakdown": breakdown,
        "modelStats": {
            "primary": {"accuracy": 75, "correct": 3, "total": 4},
            "mate": {"accuracy": 50, "correct": 2, "total": 4},
            "agreementRate": 100,
        },
        "tomorrowOutlook": {"marketBias": "bullish", "confidence": "medium"},
        "insights": {"summary": "Bullish tech calls held up"},
        "marketCloseTime": _at(date, "21:00:00.000"),
        "dataWarnings": ["TSLA: no pre-market signal (no news)"],
        "marketPulse": {
            "symbol": "SPY",
            "predicted": "neutral",
            "actual": "+0.22%",
            "correct": True,
        },
    }
    if form == "wrapper":
        trimmed = {
            k: v
            for k, v in result.items()
            if k not in ("overallAccuracy", "signalBreakdown", "tomorrowOutlook")
        }
        return {
            **trimmed,
            "metadata": {
                "reportType": "end-of-day",
                "date": date,
                "generatedAt": _at(date, "20:06:40.000"),
                "version": "1.0",
            },
        }
    return {
        **result,
        "symbols_analyzed": len(SYMBOLS),
        "symbols_list": list(SYMBOLS),
        "timestamp": _at(date, "20:07:44.918"),
        "trigger_mode": "end_of_day_summary",
        "pre_market_run_id": f"{date}_pre-market_5b1d2c4e",
        "intraday_run_id": f"{date}_intraday_77aa01f2",
    }


def shape_w(date: str = DEFAULT_SUNDAY, *, generation: str = "success") -> Payload:
    """Weekly report `weekly_{weekSunday}` (§3.11); `generation` "default" means it failed."""
    failed = generation in ("default", "failed")
    return {
        "weeklyOverview": {
            "weekStart": "2026-11-16",
            "weekEnd": "2026-11-20",
            "tradingDays": 5,
            "totalSignals": 20,
        },
        "accuracyMetrics": {
            "weeklyAverage": None if failed else 71.4,
            "bestDay": None if failed else {"date": "2026-11-18", "accuracy": 100},
            "worstDay": None if failed else {"date": "2026-11-20", "accuracy": 50},
            "consistency": None if failed else 0.82,
            "totalSignals": 20,
            "avgDailySignals": 4,
            "trend": "improving",
        },
        "patternAnalysis": {"bestSymbol": "NVDA"},
        "trends": {"accuracy": [75, 60, 100, 72, 50]},
        "insights": ["NVDA led all week"],
        "topPerformers": [{"symbol": "NVDA", "accuracy": 100}],
        "underperformers": [{"symbol": "TSLA", "accuracy": 20}],
        "sectorRotation": None,
        "nextWeekOutlook": {"bias": "bullish"},
        "modelStats": {"primary": {"accuracy": 72}, "mate": {"accuracy": 64}},
        "_generation": {
            "status": generation,
            "errors": ["no trading days found"] if failed else [],
            "warnings": [],
            "dataSource": "d1",
            "tradingDaysFound": 0 if failed else 5,
            "generatedAt": _at(date, "14:00:41.003"),
        },
        "cron_execution_id": f"cron_{_epoch_ms(date, '14:00:00.210')}",
        "trigger_mode": "weekly_review_analysis",
        "generated_at": _at(date, "14:00:41.003"),
        "job_status": "failed" if failed else "done",
    }


def shape_status(
    date: str = DEFAULT_DATE, *, job: str = "analysis", status: str = "done"
) -> Payload:
    """The decoded `status:{job}:{date}` value (§3.12, §6), with the job's metadata."""
    payload: Payload = {"status": status, "timestamp": _at(date, "13:02:12.001")}
    if job == "analysis":
        payload.update({"symbols_processed": len(SYMBOLS), "execution_time_ms": 51234})
    elif job == "morning_predictions":
        payload.update(
            {"signalCount": 3, "averageConfidence": 0.803, "bullishCount": 3, "bearishCount": 0}
        )
    return payload


def kv_value(payload: object, *, double_encoded: bool = False) -> bytes:
    """The bytes the worker stored; `double_encoded`: JSON text of a JSON string (status keys)."""
    text = json.dumps(payload)
    return (json.dumps(text) if double_encoded else text).encode("utf-8")


EXAMPLES: dict[str, Callable[[], Payload]] = {
    "A": shape_a,
    "B": shape_b,
    "C": shape_c,
    "C_PRIME": shape_c_prime,
    "D": shape_d,
    "E": shape_e,
    "F": shape_f,
    "G": shape_g,
    "I": shape_i,
    "EOD": shape_eod,
    "W": shape_w,
    "STATUS": shape_status,
}
"""The default example of each shape, by shape name."""

VARIANTS: dict[str, tuple[str, Callable[[], Payload]]] = {
    **{name: (name, build) for name, build in EXAMPLES.items()},
    "A-all-ok": ("A", lambda: shape_a(failed=())),
    "A-all-failed": ("A", lambda: shape_a(failed=SYMBOLS)),
    "B-head": ("B", lambda: shape_b(era="head")),
    "B-midday": (
        "B",
        lambda: shape_b(run=run_of(DEFAULT_DATE, "16:00:00"), failed=("TSLA", "MSFT")),
    ),
    "C-all-ok": ("C", lambda: shape_c(failed=())),
    "C_PRIME-NVDA": ("C_PRIME", lambda: shape_c_prime(symbol="NVDA")),
    "D-wrapper": ("D", lambda: shape_d(wrapper=True)),
    "E-all-ok": ("E", lambda: shape_e(failed=())),
    "F-morning": ("F", lambda: shape_f(updated=False)),
    "EOD-wrapper": ("EOD", lambda: shape_eod(form="wrapper")),
    "EOD-head": ("EOD", lambda: shape_eod(form="head")),
    "W-default": ("W", lambda: shape_w(generation="default")),
    "STATUS-morning": ("STATUS", lambda: shape_status(job="morning_predictions", status="running")),
    "STATUS-failed": ("STATUS", lambda: shape_status(status="failed")),
}
"""Every example, by id: (the shape it must match, its builder) — defaults plus documented drift."""
