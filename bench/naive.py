"""The naive verification the migration plan implies: the baseline the benchmark divides by.

List every key; for each key a profile pattern matches, GET its value alone (locally
`LocalKv.get_many([key])`, remotely one `GET …/values/{key}`); read the D1 rows of its date and
job type (three queries per (date, job type), as a per-day `wrangler d1 execute --json` would);
and `DeepDiff` the parsed payload against those rows as Python dicts. No normalisation, no
hashing, no merge: it finds differences everywhere (the shapes differ), which is the point of
a baseline for cost, not for correctness.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from deepdiff import DeepDiff

from verifier.model import Window
from verifier.profile import load_profile

_QUERIES = {
    "job_executions": "SELECT * FROM job_executions WHERE execution_date = ? AND job_type = ?",
    "analysis_results": (
        "SELECT ar.* FROM analysis_results ar JOIN job_executions je ON je.id = ar.execution_id "
        "WHERE je.execution_date = ? AND je.job_type = ?"
    ),
    "report_snapshots": (
        "SELECT rs.* FROM report_snapshots rs JOIN job_executions je ON je.id = rs.execution_id "
        "WHERE je.execution_date = ? AND je.job_type = ?"
    ),
}


def _rows(d1: Any, table: str, date: str, job_type: str) -> list[dict[str, Any]]:
    columns = [r[1] for r in d1.query(f"PRAGMA table_info({table})")]
    return [dict(zip(columns, row, strict=False)) for row in d1.query(_QUERIES[table], (date, job_type))]


def _pair(payload: Any, rows: dict[str, list[dict[str, Any]]]) -> tuple[Any, Any]:
    """What a hand-written script would line up: a report's content with the payload, the
    per-symbol objects with the `analysis_results` rows, else the payload with the executions."""
    if rows["report_snapshots"]:
        contents = [json.loads(r["content"]) for r in rows["report_snapshots"] if r["content"]]
        return payload, contents[0] if len(contents) == 1 else contents
    symbols = {r["symbol"]: r for r in rows["analysis_results"]}
    if symbols and isinstance(payload, dict):
        for value in payload.values():
            if isinstance(value, dict) and symbols.keys() & value.keys():
                return value, symbols
    return payload, rows["job_executions"]


def naive_verify(
    kv: Any,
    d1: Any,
    window: Window,
    *,
    limit: int | None = None,
    one_get: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    profile = load_profile()
    get = one_get or (lambda key: next(iter(kv.get_many([key])), None))
    started = time.perf_counter()
    listed = matched = differing = 0
    d1_rows = 0
    cache: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for info in kv.iter_keys():
        listed += 1
        match = profile.match(info.name)
        if match is None or not window.contains(match.date):
            continue
        if limit is not None and matched >= limit:
            continue  # keep listing: the list cost is part of the run
        matched += 1
        entry = get(info.name)
        if entry is None:
            continue
        try:
            payload = json.loads(entry.value)
        except ValueError:
            payload = entry.value.decode("utf-8", "replace")
        group = (match.date, match.job_type)
        if group not in cache:
            cache = {group: {t: _rows(d1, t, *group) for t in _QUERIES}}  # one day at a time
            d1_rows += sum(len(v) for v in cache[group].values())
        kv_side, d1_side = _pair(payload, cache[group])
        differing += bool(DeepDiff(kv_side, d1_side, ignore_order=True, verbose_level=2))
    return {
        "seconds": time.perf_counter() - started,
        "listed": listed,
        "matched": matched,
        "d1_rows": d1_rows,
        "differing": differing,
        "limited_to": limit,
    }
