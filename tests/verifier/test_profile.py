from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.errors import ProfileError
from verifier.model import LATEST
from verifier.profile import load_profile


@pytest.mark.parametrize(
    ("key", "job_type", "date", "run"),
    [
        ("analysis_2026-11-16", "analysis", "2026-11-16", LATEST),
        ("analysis_2026-11-16_083000", "analysis", "2026-11-16", "083000"),
        ("status:analysis:2026-11-16", "analysis", "2026-11-16", LATEST),
        ("status:morning_predictions:2026-11-16", "pre-market", "2026-11-16", LATEST),
        ("pre_market_report_2026-11-16", "pre-market", "2026-11-16", LATEST),
        ("intraday_report_2026-11-16", "intraday", "2026-11-16", LATEST),
        ("end_of_day_summary_2026-11-16", "end-of-day", "2026-11-16", LATEST),
        ("weekly_2026-11-15", "weekly", "2026-11-15", LATEST),
    ],
)
def test_default_profile_maps_the_plan_keys(key: str, job_type: str, date: str, run: str) -> None:
    match = load_profile().match(key)
    assert match is not None
    assert (match.job_type, match.date, match.run) == (job_type, date, run)


@pytest.mark.parametrize(
    "key",
    [
        "analysis_2026-11-16_AAPL",  # a granular symbol key, not a run (reference §2.4)
        "status:kv_test:2026-11-16",
        "premarket_html_2026-11-16",
        "weekly_report_2026-W47",
        "cron_health_latest",
    ],
)
def test_other_keys_are_skipped_by_pattern(key: str) -> None:
    assert load_profile().match(key) is None


def test_a_profile_file_is_data(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            {
                "name": "mine",
                "patterns": [
                    {
                        "name": "x",
                        "prefix": "job:",
                        "regex": "^job:(?P<date>\\d{4}-\\d{2}-\\d{2})$",
                        "kind": "report",
                        "job_type": "weekly",
                        "shapes": ["W"],
                    }
                ],
            }
        )
    )
    profile = load_profile(path)
    assert profile.match("job:2026-11-15") is not None


def test_a_malformed_profile_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"name": "bad", "patterns": [{"name": "x", "regex": "(", "kind": "job"}]}')
    with pytest.raises(ProfileError, match="malformed"):
        load_profile(path)
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "absent.json")
