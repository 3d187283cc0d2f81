"""The naive verification the migration plan implies: the baseline the benchmark divides by.

List every key; for each key a profile pattern matches, GET its value alone (locally
`LocalKv.get_many([key])`, remotely one `GET …/values/{key}`); read the D1 rows of its date and
job type (three queries per (date, job type), as a per-day `wrangler d1 execute --json` would);
and `DeepDiff` the parsed payload against those rows as Python dicts. No normalisation, no
hashing, no merge: it finds differences everywhere (the shapes differ), which is the point of
a baseline for cost, not for correctness.

`wrangler_verify` is the same script written with the plan's own tooling: `wrangler kv key
list` once, `wrangler kv key get` per matched key and `wrangler d1 execute --json` per day (the
three SELECTs in one command), each a fresh `wrangler` process against the worker's local state.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdiff import DeepDiff

from verifier.model import Window
from verifier.profile import load_profile

Rows = dict[str, list[dict[str, Any]]]  # table → rows as dicts

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
    rows = d1.query(_QUERIES[table], (date, job_type))
    return [dict(zip(columns, row, strict=False)) for row in rows]


def _pair(payload: Any, rows: Rows) -> tuple[Any, Any]:
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
    """List every key, then GET, query and DeepDiff each matched one (or `limit` of them).

    A limited run still lists everything, then reads ten runs of consecutive matched keys
    spread over the listing: what a key costs depends on its place (key prefixes sort by kind;
    neighbours share a day's rows), so the first `limit` keys would be a biased sample.
    `keyed_seconds` is the time after the listing, the part to extrapolate per key.
    """
    profile = load_profile()
    get = one_get or (lambda key: next(iter(kv.get_many([key])), None))
    started = time.perf_counter()
    listed = 0
    keys: list[tuple[str, tuple[str, str]]] = []
    for info in kv.iter_keys():
        listed += 1
        match = profile.match(info.name)
        if match is not None and window.contains(match.date):
            keys.append((info.name, (match.date, match.job_type)))
    listed_at = time.perf_counter()
    chosen = keys if limit is None else _spread(keys, limit)
    differing = d1_rows = 0
    cache: dict[tuple[str, str], Rows] = {}
    for name, group in chosen:
        entry = get(name)
        if entry is None:
            continue
        if group not in cache:
            cache = {group: {t: _rows(d1, t, *group) for t in _QUERIES}}  # one day at a time
            d1_rows += sum(len(v) for v in cache[group].values())
        differing += _differs(_parse(entry.value), cache[group])
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "keyed_seconds": done - listed_at,
        "listed": listed,
        "matched": len(chosen),
        "matched_total": len(keys),
        "d1_rows": d1_rows,
        "differing": differing,
        "limited_to": limit,
    }


def _spread(items: list[Any], count: int, *, runs: int = 10) -> list[Any]:
    """About `count` items in `runs` runs of neighbours, evenly spaced over `items`."""
    if count >= len(items):
        return items
    runs = min(runs, count)
    length = count // runs
    starts = [i * len(items) // runs for i in range(runs)]
    return [item for start in starts for item in items[start : start + length]]


def _parse(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", "replace")


def _differs(payload: Any, rows: Rows) -> bool:
    kv_side, d1_side = _pair(payload, rows)
    return bool(DeepDiff(kv_side, d1_side, ignore_order=True, verbose_level=2))


# What `wrangler kv key get --text` prints, exit status 0, for a key that is absent or expired.
_NOT_FOUND = b"Value not found\n"
WRANGLER_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
}


@dataclass(frozen=True)
class Wrangler:
    """The `wrangler` CLI against one worker's local state (`--local --persist-to`).

    wrangler writes into the state it opens (caches, metadata, WAL files): give it a copy.
    """

    executable: Path
    config: Path
    namespace_id: str
    database: str

    @classmethod
    def for_worker(cls, executable: Path, config: Path) -> Wrangler:
        """The first KV namespace and D1 database of the worker's `wrangler.toml`."""
        toml = tomllib.loads(config.read_text())
        return cls(
            executable,
            config,
            toml["kv_namespaces"][0]["id"],
            toml["d1_databases"][0]["database_name"],
        )

    def list_argv(self) -> list[str]:
        return self._argv("kv", "key", "list", "--namespace-id", self.namespace_id)

    def get_argv(self, key: str) -> list[str]:
        return self._argv("kv", "key", "get", key, "--namespace-id", self.namespace_id, "--text")

    def day_argv(self, date: str) -> list[str]:
        """One `d1 execute --json` with the day's three SELECTs."""
        sql = "; ".join(_DAY_QUERIES[t].replace("?", f"'{date}'") for t in _QUERIES)
        return self._argv("d1", "execute", self.database, "--json", "--command", sql)

    def list_keys(self) -> list[str]:
        return [k["name"] for k in json.loads(self._run(self.list_argv()))]

    def get(self, key: str) -> bytes | None:
        value = self._run(self.get_argv(key))
        return None if value == _NOT_FOUND else value

    def day_rows(self, date: str) -> Rows:
        answers = json.loads(self._run(self.day_argv(date)))
        return {t: a["results"] for t, a in zip(_QUERIES, answers, strict=True)}

    def _argv(self, *args: str) -> list[str]:
        """Run in the worker's directory (`_run` does)."""
        return [str(self.executable), *args, "--local", "--persist-to", ".wrangler/state",
                "--config", self.config.name]

    def _run(self, argv: list[str]) -> bytes:
        done = subprocess.run(argv, cwd=self.config.parent, env={**os.environ, **WRANGLER_ENV},
                              capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr.decode()[-2000:]}")
        return done.stdout


_DAY_QUERIES = {
    "job_executions": "SELECT * FROM job_executions WHERE execution_date = ?",
    "analysis_results": (
        "SELECT ar.* FROM analysis_results ar JOIN job_executions je ON je.id = ar.execution_id "
        "WHERE je.execution_date = ?"
    ),
    "report_snapshots": (
        "SELECT rs.* FROM report_snapshots rs JOIN job_executions je ON je.id = rs.execution_id "
        "WHERE je.execution_date = ?"
    ),
}


def _of_job_type(day: Rows, job_type: str) -> Rows:
    executions = [r for r in day["job_executions"] if r["job_type"] == job_type]
    ids = {r["id"] for r in executions}
    return {
        "job_executions": executions,
        "analysis_results": [r for r in day["analysis_results"] if r["execution_id"] in ids],
        "report_snapshots": [r for r in day["report_snapshots"] if r["execution_id"] in ids],
    }


def wrangler_verify(
    wrangler: Wrangler, window: Window, *, limit: int | None = None
) -> dict[str, Any]:
    """The naive script with wrangler commands: list, a GET per key, an execute per day."""
    profile = load_profile()
    started = time.perf_counter()
    names = wrangler.list_keys()
    by_date: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name in names:
        match = profile.match(name)
        if match is not None and window.contains(match.date):
            by_date[match.date].append((name, match.job_type))
    matched = differing = d1_rows = days = 0
    for date in sorted(by_date):
        keys = by_date[date] if limit is None else by_date[date][: limit - matched]
        if not keys:
            break  # the limit is reached
        day = wrangler.day_rows(date)
        days += 1
        d1_rows += sum(map(len, day.values()))
        for name, job_type in keys:
            if (value := wrangler.get(name)) is not None:
                differing += _differs(_parse(value), _of_job_type(day, job_type))
        matched += len(keys)
    seconds = time.perf_counter() - started
    calls = 1 + days + matched
    first_date = min(by_date, default="")
    return {
        "seconds": seconds,
        "listed": len(names),
        "matched": matched,
        "days": days,
        "wrangler_calls": calls,
        "seconds_per_call": seconds / calls,
        "wrangler_commands": [  # as run in the worker's directory
            _shown(wrangler.list_argv()),
            _shown(wrangler.day_argv(first_date)),
            _shown(wrangler.get_argv(by_date[first_date][0][0] if first_date else "KEY")),
        ],
        "d1_rows": d1_rows,
        "differing": differing,
        "limited_to": limit,
    }


def _shown(argv: list[str]) -> str:
    return shlex.join(["wrangler", *argv[1:]])
