"""`kv2d1 report`: verify, measure the plan's metrics, judge, and build the report document.

Measuring is the I/O half of the metrics (`reports.metrics` judges): D1 reads for the coverage
heatmap and the write tally, the probe, Cloudflare's GraphQL analytics for KV reads, and timed
GETs of the dashboard's history endpoint. The I/O objects are passed in (`ReportTools`), so
tests hand in loopback servers and fake timers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from reports.document import Consistency, build_document, collect
from reports.history import track
from reports.metrics import (
    ALWAYS_REQUIRED,
    EVIDENCE_LIMIT,
    DashboardTiming,
    DateRange,
    KvReads,
    Metric,
    MetricName,
    build_grid,
    dashboard_load,
    data_completeness,
    grid_span,
    kv_read_reduction,
    query_performance,
    seven_day_coverage,
    tally_writes,
    write_reliability,
)
from reports.patterns import find_patterns
from reports.probe import DEFAULT_REPEAT, ProbeResult, QueryTimer, discover_queries, run_probe
from reports.verdict import Decision, decide
from verifier.errors import ApiError
from verifier.model import Finding, Window
from verifier.sources import D1Source
from verifier.sources.remote import RemoteCredentials
from verifier.verify import Verification

SECRET_PARAM_WORDS = ("token", "key", "secret", "auth", "sig", "password")


# --- D1 reads --------------------------------------------------------------------------------


def read_cells(d1: D1Source, first_day: str, last_day: str) -> set[tuple[str, str]]:
    """The (day, job type) pairs with at least one execution in D1."""
    rows = d1.query(
        "SELECT DISTINCT execution_date, job_type FROM job_executions "
        "WHERE execution_date >= ? AND execution_date <= ?",
        (first_day, last_day),
    )
    return {(str(r[0]), str(r[1])) for r in rows}


_EXECUTION = "je.id, je.execution_date, je.job_type, je.execution_time, je.metadata"
WRITES_SQL = (
    f"SELECT 'job_executions', {_EXECUTION}, NULL, NULL FROM job_executions AS je{{where}}\n"
    f"UNION ALL SELECT 'analysis_results', {_EXECUTION}, c.symbol, c.created_at\n"
    f"  FROM analysis_results AS c JOIN job_executions AS je ON je.id = c.execution_id{{where}}\n"
    f"UNION ALL SELECT 'report_snapshots', {_EXECUTION}, c.report_type, c.created_at\n"
    f"  FROM report_snapshots AS c JOIN job_executions AS je ON je.id = c.execution_id{{where}}"
)


def read_writes(d1: D1Source, window: Window) -> Iterable[tuple[Any, ...]]:
    """Every D1 row of the window's executions, with what tells how it got there: table, the
    execution's id, date, job type, time and metadata, the child's key and `created_at`."""
    clauses, params = [], []
    for clause, value in (
        ("je.execution_date >= ?", window.since),
        ("je.execution_date <= ?", window.until),
    ):
        if value:
            clauses.append(clause)
            params.append(value)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return d1.query(WRITES_SQL.format(where=where), params * 3)


# --- Cloudflare GraphQL analytics ------------------------------------------------------------
class GraphQL(Protocol):
    """Cloudflare's GraphQL Analytics API: the `data` of one query, or an `ApiError`."""

    def query(self, query: str, variables: Mapping[str, Any], *, what: str) -> Any: ...


KV_READS_QUERY = """query KvReads($accountTag: string!, $namespaceId: string!, $since: Date!, $until: Date!) {
  viewer { accounts(filter: {accountTag: $accountTag}) {
    kvOperationsAdaptiveGroups(limit: 10000, filter: {namespaceId: $namespaceId, date_geq: $since, date_leq: $until}) {
      sum { requests }
      dimensions { date actionType }
    }
  } }
}"""


class HttpGraphQL:
    """POST `{base_url}/graphql` with the API token (which needs 'Account Analytics Read')."""

    def __init__(
        self,
        credentials: RemoteCredentials,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.credentials = credentials
        self._http = httpx.Client(transport=transport, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def query(self, query: str, variables: Mapping[str, Any], *, what: str) -> Any:
        headers = {"Authorization": f"Bearer {self.credentials.api_token}", "User-Agent": "kv2d1"}
        try:
            response = self._http.post(
                self.credentials.base_url + "/graphql",
                json={"query": query, "variables": dict(variables)},
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                f"the GraphQL API could not be reached while {what} ({type(exc).__name__})"
            ) from None
        return _graphql_data(response, what)


def _graphql_data(response: httpx.Response, what: str) -> Any:
    if response.status_code in (401, 403):
        raise ApiError(
            f"the GraphQL API refused the token (HTTP {response.status_code}) while {what}: "
            "give CLOUDFLARE_API_TOKEN the 'Account Analytics Read' permission",
            status=response.status_code,
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        raise ApiError(
            f"the GraphQL API answered HTTP {response.status_code} while {what}",
            status=response.status_code,
        )
    errors = body.get("errors")
    if errors:
        first_error = errors[0] if isinstance(errors, list) and errors else errors
        message = first_error.get("message") if isinstance(first_error, dict) else str(first_error)
        raise ApiError(f"the GraphQL API answered an error while {what}: {message}")
    if not isinstance(body.get("data"), dict):
        raise ApiError(f"the GraphQL API answered without data while {what}")
    return body["data"]


def fetch_kv_reads(
    graphql: GraphQL, *, account_id: str, namespace_id: str, dates: DateRange
) -> KvReads:
    """KV read operations on one namespace over a date range (analytics keep 31 days)."""
    what = f"reading KV analytics of namespace {namespace_id} for {dates}"
    data = graphql.query(
        KV_READS_QUERY,
        {
            "accountTag": account_id,
            "namespaceId": namespace_id,
            "since": dates.since,
            "until": dates.until,
        },
        what=what,
    )
    try:
        groups = data["viewer"]["accounts"][0]["kvOperationsAdaptiveGroups"] or []
        reads = sum(
            int(g["sum"]["requests"]) for g in groups if g["dimensions"]["actionType"] == "read"
        )
    except (KeyError, IndexError, TypeError, ValueError):
        raise ApiError(f"the GraphQL API answered in an unexpected form while {what}") from None
    return KvReads(dates, reads)


# --- dashboard -------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """A URL fit for a report: no user info, secret-looking query values replaced."""
    parts = urlsplit(url)
    query = [
        (k, "redacted" if any(w in k.lower() for w in SECRET_PARAM_WORDS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def time_dashboard(
    url: str,
    *,
    attempts: int = 3,
    client: httpx.Client | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> DashboardTiming:
    """GET the history endpoint `attempts` times, each timed until its whole body has arrived."""
    http = client or httpx.Client(timeout=30.0, follow_redirects=True)
    seconds: list[float] = []
    statuses: list[int] = []
    try:
        for _ in range(attempts):
            started = clock()
            response = http.get(url)
            response.read()
            seconds.append(clock() - started)
            statuses.append(response.status_code)
    except httpx.HTTPError as exc:
        return DashboardTiming(safe_url(url), tuple(seconds), tuple(statuses), type(exc).__name__)
    finally:
        if client is None:
            http.close()
    return DashboardTiming(safe_url(url), tuple(seconds), tuple(statuses))


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportOptions:
    """What `kv2d1 report` measures beyond the verify run, and how."""

    probe_repeat: int = DEFAULT_REPEAT
    require: frozenset[MetricName] = frozenset()
    kv_baseline: DateRange | None = None
    kv_current: DateRange | None = None
    dashboard_url: str | None = None
    dual_write_since: str | None = None
    history_dir: Path | None = None
    evidence_limit: int = EVIDENCE_LIMIT


@dataclass(frozen=True)
class ReportTools:
    """The I/O a report uses: a query timer (None when D1 is not live, e.g. a snapshot), the
    GraphQL API (None outside remote mode) and an HTTP client for the dashboard."""

    timer: QueryTimer | None = None
    graphql: GraphQL | None = None
    http: httpx.Client | None = None
    no_probe_reason: str = "a snapshot is a copy, not the live D1: probe with --local or --remote"


@dataclass(frozen=True)
class ReportOutcome:
    document: dict[str, Any]
    decision: Decision
    history_file: Path | None = None

    @property
    def exit_code(self) -> int:
        return self.decision.exit_code


def run_report(
    verification: Verification,
    *,
    source: Mapping[str, Any],
    options: ReportOptions = ReportOptions(),  # frozen, so safe as a default
    tools: ReportTools = ReportTools(),
) -> ReportOutcome:
    """Verify to the end, measure every metric, decide, and build (and maybe store) the report."""
    findings, summary = collect(verification.findings())
    metrics = measure(verification, findings, source=source, options=options, tools=tools)
    consistency = Consistency.of(verification.coverage, summary)
    decision = decide(
        metrics, by_category=summary.by_category, nothing_compared=consistency.nothing_compared
    )
    patterns = find_patterns(
        findings,
        shapes=verification.coverage.shapes,
        unwritten_nulls=verification.coverage.unwritten_nulls,
    )
    doc = build_document(
        command="report",
        source=dict(source),
        window=verification.window,
        coverage=verification.coverage,
        findings=findings,
        summary=summary,
        clock=verification.clock,
        extra={
            "metrics": [m.to_json() for m in metrics],
            "verdict": decision.verdict.value,
            "decision": decision.to_json(),
            "consistency": consistency.to_json(),
            "patterns": [p.to_json() for p in patterns],
        },
    )
    stored = track(doc, options.history_dir) if options.history_dir else None
    return ReportOutcome(doc, decision, stored)


def measure(
    verification: Verification,
    findings: Sequence[Finding],
    *,
    source: Mapping[str, Any],
    options: ReportOptions,
    tools: ReportTools,
) -> list[Metric]:
    """Every metric of the plan, in the plan's order, `required` set as asked."""
    limit, d1 = options.evidence_limit, verification.d1
    span = grid_span(verification.window, verification.now)
    grid = None
    if span is not None:
        profile = verification.profile
        grid = build_grid(
            read_cells(d1, *span),
            first_day=span[0],
            last_day=span[1],
            schedule=profile.schedule,
            calendar=profile.calendar,
            findings=findings,
        )
    probe, no_probe = _probe(d1, options, tools)
    tally = tally_writes(
        read_writes(d1, verification.window), findings, since=options.dual_write_since
    )
    (baseline, current), no_kv = _kv_reads(source, options, tools)
    metrics = [
        data_completeness(findings, verification.coverage.records_matched, limit=limit),
        seven_day_coverage(grid, findings, limit=limit),
        query_performance(
            probe, reason=no_probe, on_d1=source.get("kind") == "remote", limit=limit
        ),
        write_reliability(tally, limit=limit),
        kv_read_reduction(baseline, current, reason=no_kv),
        dashboard_load(_dashboard(options, tools)),
    ]
    required = ALWAYS_REQUIRED | options.require
    return [dataclasses.replace(m, required=m.name in required) for m in metrics]


def _probe(
    d1: D1Source, options: ReportOptions, tools: ReportTools
) -> tuple[ProbeResult | None, str]:
    if options.probe_repeat <= 0:
        return None, "not measured: the probe is off (--probe-repeat 0)"
    if tools.timer is None:
        return None, tools.no_probe_reason
    return run_probe(tools.timer, discover_queries(d1), repeat=options.probe_repeat), ""


def _kv_reads(
    source: Mapping[str, Any], options: ReportOptions, tools: ReportTools
) -> tuple[tuple[KvReads | None, KvReads | None], str]:
    nothing: tuple[KvReads | None, KvReads | None] = (None, None)
    if tools.graphql is None:
        return nothing, "KV analytics live in Cloudflare: run the report with --remote"
    if options.kv_baseline is None or options.kv_current is None:
        return nothing, "give --kv-baseline SINCE..UNTIL and --kv-current SINCE..UNTIL"
    account, namespace = source.get("account_id"), source.get("kv_namespace_id")
    if not account or not namespace:
        return nothing, "the source names no account id or KV namespace id"
    try:
        reads = tuple(
            fetch_kv_reads(
                tools.graphql, account_id=str(account), namespace_id=str(namespace), dates=dates
            )
            for dates in (options.kv_baseline, options.kv_current)
        )
    except ApiError as exc:
        return nothing, str(exc)
    return (reads[0], reads[1]), ""


def _dashboard(options: ReportOptions, tools: ReportTools) -> DashboardTiming | None:
    if options.dashboard_url is None:
        return None
    return time_dashboard(options.dashboard_url, client=tools.http)
