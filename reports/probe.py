"""`kv2d1 probe`: the plan's read queries against D1, repeated, with P50 / P95 / max latency.

The queries are the ones `D1JobStorage` and the plan's API run (d1-migration-plan.md, Tasks 2
and 5): job history with each filter (none, type, status, date range, limit), the latest job of
each type, and job detail (the job, its analysis results and its report snapshot) for a few
recent executions. Detail is timed as one call of three statements, as the endpoint makes them.

Timing: one untimed warm-up round, then `repeat` rounds; in each round every query runs once,
so a passing disturbance spreads over all queries instead of spoiling one. Percentiles are
nearest-rank. Locally the figure is the time to run the query and read every row; remotely it
is the REST round trip (less the client's own rate-limit and backoff waits) and D1's own
`meta.duration`, which is what a worker next to the database would see.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from verifier.errors import ApiError
from verifier.model import JobType
from verifier.sources import D1Source
from verifier.sources.remote import D1_READ, RemoteD1, RequestKind

DEFAULT_REPEAT = 20
DETAIL_IDS = 3
TARGET_MS = 50.0
ROLLBACK_MS = 200.0
Clock = Callable[[], float]
Statement = tuple[str, tuple[str, ...]]

HISTORY_SQL = "SELECT * FROM job_executions WHERE 1=1"
LATEST_SQL = "SELECT * FROM job_executions WHERE job_type = ? ORDER BY execution_time DESC LIMIT 1"
JOB_SQL = "SELECT * FROM job_executions WHERE id = {id}"
RESULTS_SQL = "SELECT * FROM analysis_results WHERE execution_id = {id} ORDER BY symbol"
SNAPSHOT_SQL = "SELECT * FROM report_snapshots WHERE execution_id = {id}"


class QueryKind(enum.StrEnum):
    HISTORY = "history"
    LATEST = "latest"
    DETAIL = "detail"


@dataclass(frozen=True, slots=True)
class ProbeQuery:
    """One read the plan's code makes: one statement, or several timed as one call (detail).

    Parameters are text; numbers (limits, ids) are written into the SQL as literals, as
    `RemoteD1` does, because D1's REST API binds text only.
    """

    name: str
    kind: QueryKind
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed call: the round trip, and D1's own duration when the API reports it."""

    round_trip_ms: float
    d1_ms: float | None = None


class QueryTimer(Protocol):
    """Runs one statement, reads all its rows, and says how long it took."""

    def run(self, sql: str, params: tuple[str, ...]) -> Sample: ...


class LocalTimer:
    """Times a `D1Source` (local state or a snapshot file) with a monotonic clock."""

    def __init__(self, d1: D1Source, *, clock: Clock = time.perf_counter) -> None:
        self.d1 = d1
        self._clock = clock

    def run(self, sql: str, params: tuple[str, ...]) -> Sample:
        started = self._clock()
        for _ in self.d1.query(sql, params):
            pass
        return Sample((self._clock() - started) * 1000)


class RemoteTimer:
    """Times `/raw` calls of a `RemoteD1` and reads D1's `meta.duration` from each answer."""

    def __init__(self, d1: RemoteD1, *, clock: Clock = time.perf_counter) -> None:
        self.d1 = d1
        self._clock = clock
        self._path = d1.client.account_path("d1", "database", d1.database_id, "raw")

    def run(self, sql: str, params: tuple[str, ...]) -> Sample:
        client = self.d1.client
        body: dict[str, Any] = {"sql": sql, "params": list(params)} if params else {"sql": sql}
        waited_before = client.stats.waited_s
        started = self._clock()
        envelope = client.call(
            "POST",
            self._path,
            kind=RequestKind.D1_QUERY,
            permission=D1_READ,
            what=f"probing {self.d1.describe()}",
            body=body,
        )
        elapsed_ms = (self._clock() - started) * 1000
        waited_ms = (client.stats.waited_s - waited_before) * 1000
        return Sample(max(elapsed_ms - waited_ms, 0.0), _meta_duration(envelope.result))


def _meta_duration(result: Any) -> float | None:
    """`meta.duration` (else `meta.timings.sql_duration_ms`) of the last statement's result."""
    if not isinstance(result, list) or not result or not isinstance(result[-1], dict):
        raise ApiError("the API answered a probe query without a statement result")
    meta = result[-1].get("meta")
    if not isinstance(meta, dict):
        return None
    value = meta.get("duration")
    if not isinstance(value, int | float):
        timings = meta.get("timings")
        value = timings.get("sql_duration_ms") if isinstance(timings, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def timer_for(d1: D1Source) -> QueryTimer:
    """The timer that fits a D1 source: D1's own durations when it is the REST API."""
    return RemoteTimer(d1) if isinstance(d1, RemoteD1) else LocalTimer(d1)


# --- the plan's queries ----------------------------------------------------------------------


def _history(
    *,
    job_type: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 50,
) -> Statement:
    """`getJobHistory(filters)`: the plan's SQL, clause by clause."""
    sql, params = HISTORY_SQL, []
    for clause, value in (
        ("job_type = ?", job_type),
        ("status = ?", status),
        ("execution_date >= ?", since),
        ("execution_date <= ?", until),
    ):
        if value is not None:
            sql += f" AND {clause}"
            params.append(value)
    return f"{sql} ORDER BY execution_time DESC LIMIT {int(limit)}", tuple(params)


def _detail(execution_id: int) -> tuple[Statement, ...]:
    ident = int(execution_id)
    return tuple((sql.format(id=ident), ()) for sql in (JOB_SQL, RESULTS_SQL, SNAPSHOT_SQL))


def plan_queries(*, last_date: str | None, recent_ids: Sequence[int]) -> list[ProbeQuery]:
    """The plan's reads: history with each filter, latest per job type, detail per recent id."""
    since = _days_before(last_date, 6) if last_date else None
    queries = [
        ProbeQuery("history", QueryKind.HISTORY, (_history(),)),
        ProbeQuery("history?type=analysis", QueryKind.HISTORY, (_history(job_type="analysis"),)),
        ProbeQuery("history?status=success", QueryKind.HISTORY, (_history(status="success"),)),
        ProbeQuery(
            "history?dates=last 7 days",
            QueryKind.HISTORY,
            (_history(since=since, until=last_date),),
        ),
        ProbeQuery("history?limit=20", QueryKind.HISTORY, (_history(limit=20),)),
    ]
    queries += [
        ProbeQuery(f"latest?type={t.value}", QueryKind.LATEST, ((LATEST_SQL, (t.value,)),))
        for t in JobType
    ]
    queries += [ProbeQuery(f"detail/{i}", QueryKind.DETAIL, _detail(i)) for i in recent_ids]
    return queries


def _days_before(date: str, days: int) -> str:
    return (dt.date.fromisoformat(date) - dt.timedelta(days=days)).isoformat()


def discover_queries(d1: D1Source, *, detail_ids: int = DETAIL_IDS) -> list[ProbeQuery]:
    """The plan's queries with parameters taken from the data: its last date, its newest ids."""
    rows = list(d1.query("SELECT max(execution_date) FROM job_executions"))
    last = rows[0][0] if rows and isinstance(rows[0][0], str) else None
    ids = [
        int(r[0])
        for r in d1.query(
            f"SELECT id FROM job_executions ORDER BY execution_time DESC LIMIT {int(detail_ids)}"
        )
    ]
    return plan_queries(last_date=last, recent_ids=ids)


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (P95 of 20 samples is the 19th smallest)."""
    if not values:
        raise ValueError("a percentile of no samples")
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(len(values), percentile(values, 50), percentile(values, 95), max(values))

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "p50_ms": round(self.p50, 3),
            "p95_ms": round(self.p95, 3),
            "max_ms": round(self.max, 3),
        }


@dataclass(frozen=True, slots=True)
class QueryStats:
    query: ProbeQuery
    round_trip: Stats
    d1: Stats | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.query.name,
            "kind": self.query.kind.value,
            "sql": [sql for sql, _ in self.query.statements],
            "round_trip": self.round_trip.to_json(),
            "d1": self.d1.to_json() if self.d1 else None,
        }


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Per-query and overall statistics; `p95_ms` is the figure the plan's target applies to."""

    repeat: int
    queries: tuple[QueryStats, ...]
    round_trip: Stats
    d1: Stats | None

    @property
    def p95_ms(self) -> float:
        """D1's own P95 when the API reports durations, else the measured one."""
        return (self.d1 or self.round_trip).p95

    @property
    def basis(self) -> str:
        return "d1_duration" if self.d1 else "round_trip"

    def slowest(self, count: int) -> list[QueryStats]:
        return sorted(self.queries, key=lambda q: -(q.d1 or q.round_trip).p95)[:count]

    def to_json(self) -> dict[str, Any]:
        return {
            "repeat": self.repeat,
            "basis": self.basis,
            "target_ms": TARGET_MS,
            "rollback_ms": ROLLBACK_MS,
            "overall": {
                "round_trip": self.round_trip.to_json(),
                "d1": self.d1.to_json() if self.d1 else None,
            },
            "queries": [q.to_json() for q in self.queries],
        }


def _call(timer: QueryTimer, query: ProbeQuery) -> Sample:
    samples = [timer.run(sql, params) for sql, params in query.statements]
    d1 = [s.d1_ms for s in samples]
    total_d1 = None if any(v is None for v in d1) else sum(v for v in d1 if v is not None)
    return Sample(sum(s.round_trip_ms for s in samples), total_d1)


def run_probe(
    timer: QueryTimer,
    queries: Sequence[ProbeQuery],
    *,
    repeat: int = DEFAULT_REPEAT,
    warmup: bool = True,
) -> ProbeResult:
    """Run every query `repeat` times (after one untimed round) and summarise the latencies."""
    if repeat < 1:
        raise ValueError("a probe needs repeat >= 1")
    if warmup:
        for query in queries:
            _call(timer, query)
    samples: dict[str, list[Sample]] = {q.name: [] for q in queries}
    for _ in range(repeat):
        for query in queries:
            samples[query.name].append(_call(timer, query))
    stats = tuple(_query_stats(q, samples[q.name]) for q in queries)
    every = [s for q in queries for s in samples[q.name]]
    return ProbeResult(repeat, stats, Stats.of([s.round_trip_ms for s in every]), _d1_stats(every))


def _query_stats(query: ProbeQuery, samples: list[Sample]) -> QueryStats:
    return QueryStats(query, Stats.of([s.round_trip_ms for s in samples]), _d1_stats(samples))


def _d1_stats(samples: list[Sample]) -> Stats | None:
    values = [s.d1_ms for s in samples]
    if not values or any(v is None for v in values):
        return None
    return Stats.of([v for v in values if v is not None])


def probe(
    d1: D1Source, *, repeat: int = DEFAULT_REPEAT, timer: QueryTimer | None = None
) -> ProbeResult:
    """Discover the plan's queries in `d1` and time them (the library call behind `kv2d1 probe`)."""
    return run_probe(timer or timer_for(d1), discover_queries(d1), repeat=repeat)
