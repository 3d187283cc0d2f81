"""Synthetic workers for the benchmark, cached under `bench/.cache/<size>/`.

A size is the number of KV keys *listed* (the namespace as a whole). `verifier.synth` writes
about 62 keys per business day with `unrelated_per_job=10` (≈ 5.6 matched job/report/status
keys, each with ten unrelated keys), so a size maps to a number of business days.

Defect density: synth seeds one defect of each kind (about 20 findings) whatever the size. To
keep about 1 % of the matched records defective at every size, the bench adds its own defects
on top: it deletes the D1 rows (execution and children) of every k-th end-of-day job on dates
synth left untouched. Each gives exactly one `missing_in_d1` finding, natural key
`end-of-day/{date}/latest`; those are listed with synth's seeded ones in `expected.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from verifier import synth  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
UNTIL = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
SEED = 7
UNRELATED_PER_JOB = 10
KEYS_PER_BUSINESS_DAY = 61.9  # measured on synth at unrelated_per_job=10
DEFECT_RATE = 0.01
FORMAT = 2  # bump when the cached layout or the injected defects change


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


@dataclass(frozen=True)
class BenchWorker:
    """A cached worker: its files and what verify must find."""

    label: str
    directory: Path
    meta: dict[str, Any]

    @property
    def v3_dir(self) -> Path:
        return self.directory / ".wrangler" / "state" / "v3"

    @property
    def d1_path(self) -> Path:
        return Path(self.meta["d1_path"])

    @property
    def expected(self) -> set[tuple[str, str]]:
        return {(c, k) for c, k in self.meta["expected"]}


def business_days_for(size: int) -> int:
    return max(synth.MIN_DEFECT_DAYS * 2, round(size / KEYS_PER_BUSINESS_DAY))


def make_worker(size: int) -> synth.SyntheticWorker:
    return synth.generate(
        until=UNTIL,
        business_days=business_days_for(size),
        seed=SEED,
        unrelated_per_job=UNRELATED_PER_JOB,
        now=NOW,
    )


def load(size: int, *, log: Callable[[str], None] = print) -> BenchWorker:
    """The cached worker of `size` listed keys, generated and written first when absent."""
    label = size_label(size)
    directory = CACHE / label
    meta_file = directory / "bench-meta.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("format") == FORMAT:
            return BenchWorker(label, directory, meta)
    if directory.exists():
        shutil.rmtree(directory)
    log(f"generating the {label} worker in {directory} (cached for next time) ...")
    started = time.perf_counter()
    worker = make_worker(size)
    files = synth.write_worker(directory, worker)
    matched = files.kv_keys // (UNRELATED_PER_JOB + 1)
    injected = inject_missing_jobs(files.d1_path, worker, round(DEFECT_RATE * matched))
    expected = [[d.category.value, d.natural_key] for d in worker.seeded] + injected
    meta = {
        "format": FORMAT,
        "size": size,
        "business_days": business_days_for(size),
        "window": worker.window.to_json(),
        "now": NOW.isoformat(),
        "seed": SEED,
        "kv_keys": files.kv_keys,
        "d1_rows": files.d1_rows,
        "d1_path": str(files.d1_path),
        "kv_namespace_id": files.kv_namespace_id,
        "d1_database_id": files.d1_database_id,
        "config": str(files.config),
        "seeded_by_synth": len(worker.seeded),
        "injected_by_bench": len(injected),
        "expected": sorted(expected),
        "generate_s": round(time.perf_counter() - started, 1),
    }
    meta_file.write_text(json.dumps(meta, indent=1))
    log(f"  {files.kv_keys:,} keys, {sum(files.d1_rows.values()):,} D1 rows in {meta['generate_s']} s")
    return BenchWorker(label, directory, meta)


def inject_missing_jobs(d1_path: Path, worker: synth.SyntheticWorker, count: int) -> list[list[str]]:
    """Delete `count` end-of-day jobs (rows and children) spread over the window; their findings."""
    if count <= 0:
        return []
    touched = set(worker._spec.plan.by_date)
    conn = sqlite3.connect(d1_path, isolation_level=None)
    try:
        rows = conn.execute(
            "SELECT execution_date, group_concat(id) FROM job_executions "
            "WHERE job_type = 'end-of-day' GROUP BY execution_date HAVING count(*) = 1 "
            "ORDER BY execution_date"
        ).fetchall()
        # keep clear of synth's defect dates and of the last two weeks (expiring / orphan rules)
        candidates = [(d, int(i)) for d, i in rows if d not in touched][:-10]
        step = max(len(candidates) // count, 1)
        chosen = candidates[::step][:count]
        conn.execute("BEGIN")
        for _, execution_id in chosen:
            for table in ("analysis_results", "report_snapshots"):
                conn.execute(f"DELETE FROM {table} WHERE execution_id = ?", (execution_id,))
            conn.execute("DELETE FROM job_executions WHERE id = ?", (execution_id,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return [["missing_in_d1", f"end-of-day/{date}/latest"] for date, _ in chosen]
