"""verify on synthetic workers written to local wrangler state: exactly the seeded findings.

Each worker is laid out by `verifier.synth.write_worker` (wrangler.toml, `.wrangler/state/v3`)
and read back through the local sources, as `kv2d1 verify --local` reads a real worker.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from verifier import synth
from verifier.model import Category, Coverage, Finding
from verifier.profile import load_profile
from verifier.sources.local import LocalD1, LocalKv
from verifier.verify import Verification

UNTIL = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
PLAN_FIELDS = {"sentiment", "confidence", "direction", "reasoning"}


@dataclass(frozen=True)
class Run:
    worker: synth.SyntheticWorker
    files: synth.WorkerFiles
    findings: list[Finding]
    coverage: Coverage

    @property
    def found(self) -> set[tuple[Category, str]]:
        return {(f.category, f.natural_key) for f in self.findings}

    @property
    def seeded(self) -> set[tuple[Category, str]]:
        return {(d.category, d.natural_key) for d in self.worker.seeded}


def verify(worker: synth.SyntheticWorker, directory: Path) -> Run:
    files = synth.write_worker(directory, worker)
    now_ms = int(worker.now.timestamp() * 1000)
    with (
        LocalKv(files.v3_dir, files.kv_namespace_id, now_ms=now_ms) as kv,
        LocalD1(files.d1_path) as d1,
    ):
        run = Verification(
            kv=kv, d1=d1, profile=load_profile(), window=worker.window, now=worker.now
        )
        findings = list(run.findings())
    return Run(worker, files, findings, run.coverage)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Run:
    worker = synth.generate(until=UNTIL, business_days=20, seed=7, unrelated_per_job=1, now=NOW)
    return verify(worker, tmp_path_factory.mktemp("seeded"))


def test_verify_reports_exactly_the_seeded_defects(seeded: Run) -> None:
    assert seeded.found == seeded.seeded
    assert {c for c, _ in seeded.found} == set(Category)


def test_every_defect_is_reported_once_per_field(seeded: Run) -> None:
    per_key = Counter((f.category, f.natural_key, f.field, f.table) for f in seeded.findings)
    assert max(per_key.values()) == 1


def test_the_plan_adapters_all_null_job_is_a_field_mismatch(seeded: Run) -> None:
    keys = {d.natural_key for d in seeded.worker.seeded if d.note.startswith("plan adapter")}
    assert keys
    findings = [f for f in seeded.findings if f.natural_key in keys]
    assert {f.category for f in findings} == {Category.FIELD_MISMATCH}
    assert {f.field for f in findings} <= PLAN_FIELDS and "sentiment" in {f.field for f in findings}
    assert all(f.d1_value is None and f.kv_value is not None for f in findings)
    assert {f.shape for f in findings} == {"A"}  # the plan's Task 3: handleManualAnalysis


def test_the_expiring_job_carries_its_expiration(seeded: Run) -> None:
    [expiring] = [f for f in seeded.findings if f.category is Category.EXPIRING_SOON]
    assert expiring.expiration is not None
    assert (
        dt.timedelta(0)
        < dt.datetime.fromtimestamp(expiring.expiration, dt.UTC) - NOW
        < dt.timedelta(hours=48)
    )


def test_invalid_d1_rows_name_the_broken_columns(seeded: Run) -> None:
    invalid = [f for f in seeded.findings if f.category is Category.INVALID_D1_ROW]
    assert sorted((f.table, f.field) for f in invalid) == [
        ("analysis_results", "confidence"),
        ("analysis_results", "signals"),
    ]
    assert all(f.natural_key == f"{f.table}#{f.row_id}" for f in invalid)


def test_unrelated_keys_are_counted_as_skipped(seeded: Run) -> None:
    coverage = seeded.coverage
    assert coverage.keys_skipped_by_pattern == coverage.keys_matched > 0  # unrelated_per_job=1
    assert coverage.keys_listed == seeded.files.kv_keys


def test_a_clean_worker_gives_no_findings(tmp_path: Path) -> None:
    worker = synth.generate(until=UNTIL, business_days=20, seed=7, defects=False, now=NOW)
    run = verify(worker, tmp_path)
    assert run.findings == []
    assert run.coverage.records_matched == run.coverage.d1_executions


@pytest.mark.parametrize(
    ("seed", "until", "business_days"),
    [
        (1, dt.date(2026, 3, 13), 8),  # the smallest window with defects; EST → EDT on 03-08
        (2, dt.date(2027, 1, 5), 30),  # across the year, Christmas and New Year's Day
        (5, dt.date(2026, 11, 6), 25),  # EDT → EST on 11-01
    ],
)
def test_other_seeds_and_windows_report_exactly_their_seeds(
    tmp_path: Path, seed: int, until: dt.date, business_days: int
) -> None:
    now = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(15), tzinfo=dt.UTC)
    worker = synth.generate(until=until, business_days=business_days, seed=seed, now=now)
    run = verify(worker, tmp_path)
    assert run.found == run.seeded
    assert {c for c, _ in run.found} == set(Category)


def test_normalisation_cases_differ_only_by_accepted_rules(tmp_path: Path) -> None:
    worker = synth.normalisation_cases(until=UNTIL, business_days=10, seed=7, now=NOW)
    run = verify(worker, tmp_path)
    assert run.findings == []
    assert worker.seeded == []
    expected = set(worker.accepted_rules)
    assert "json_canonical" in expected
    assert expected <= set(run.coverage.equal_by_rule), run.coverage.equal_by_rule


def test_normalisation_cases_really_differ_in_d1(tmp_path: Path) -> None:
    worker = synth.normalisation_cases(until=UNTIL, business_days=10, seed=7, now=NOW)
    files = synth.write_worker(tmp_path, worker)
    with sqlite3.connect(files.d1_path) as conn:
        sentiments = {r[0] for r in conn.execute("SELECT DISTINCT sentiment FROM analysis_results")}
        loose = conn.execute(
            "SELECT count(*) FROM analysis_results WHERE signals LIKE '%' || char(10) || '%'"
        )
        nulls = conn.execute("SELECT count(*) FROM job_executions WHERE symbols_failed IS NULL")
        content = conn.execute("SELECT content FROM report_snapshots LIMIT 1").fetchone()[0]
        (loose_count,), (null_count,) = loose.fetchone(), nulls.fetchone()
    assert "Bullish" in sentiments and "bullish" not in sentiments
    assert loose_count > 0 and null_count > 0 and content.startswith("{\n  ")
