"""D1 rows ↔ the shared model: streaming reads in natural-key order, row checks, row building.

Reads are three ordered queries (executions, their symbol results, their report snapshots)
walked in lockstep, so one execution and its children are in memory at a time. A window of
dates can be read in chunks of about a given number of executions, so that no single answer grows
with the database (remote D1 caps a result at tens of MB) while the number of requests stays small.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

from verifier.calendar import et_run_time, instant_of_run, is_date, iso_utc, parse_instant
from verifier.canonical import is_json_text
from verifier.model import (
    LATEST,
    D1Job,
    D1Report,
    D1Symbol,
    JobKey,
    JobRecord,
    JobType,
    JsonText,
    ReportRecord,
    RowProblem,
    Status,
    SymbolResult,
    Table,
    Window,
)
from verifier.sources import D1Source

JOB_COLUMNS = (
    "id",
    "job_type",
    "execution_date",
    "execution_time",
    "status",
    "duration_ms",
    "symbols_processed",
    "symbols_successful",
    "symbols_failed",
    "error_message",
    "metadata",
)
SYMBOL_COLUMNS = (
    "execution_id",
    "id",
    "symbol",
    "sentiment",
    "confidence",
    "direction",
    "reasoning",
    "signals",
    "technical_data",
    "news_count",
)
REPORT_COLUMNS = (
    "execution_id",
    "id",
    "report_type",
    "report_date",
    "content",
    "summary",
    "high_confidence_count",
)
PLAN_TABLES = {
    Table.JOB_EXECUTIONS: JOB_COLUMNS,
    Table.ANALYSIS_RESULTS: (*SYMBOL_COLUMNS[1:], "execution_id"),
    Table.REPORT_SNAPSHOTS: (*REPORT_COLUMNS[1:], "execution_id"),
}
# Executions per remote D1 read: about 2,000 executions (~14,000 rows, a few MB) per answer, far
# below D1's result cap, in a handful of requests even at a million KV keys.
REMOTE_D1_CHUNK = 2000
_ORDER = "je.execution_date, je.job_type, je.execution_time, je.id"
JOB_TYPES = frozenset(t.value for t in JobType)
STATUSES = frozenset(s.value for s in Status)


def _where(window: Window) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if window.since:
        clauses.append("je.execution_date >= ?")
        params.append(window.since)
    if window.until:
        clauses.append("je.execution_date <= ?")
        params.append(window.until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _select(
    columns: tuple[str, ...], table: str, alias: str, window: Window
) -> tuple[str, list[Any]]:
    where, params = _where(window)
    cols = ", ".join(f"{alias}.{c}" for c in columns)
    if table == Table.JOB_EXECUTIONS:
        return f"SELECT {cols} FROM job_executions je{where} ORDER BY {_ORDER}", params
    order = f"{_ORDER}, {alias}.id"
    join = f"FROM {table} {alias} JOIN job_executions je ON je.id = {alias}.execution_id"
    return f"SELECT {cols} {join}{where} ORDER BY {order}", params


def date_chunks(source: D1Source, window: Window, per_chunk: int | None) -> list[Window]:
    """The window cut into runs of whole dates of at most `per_chunk` executions each.

    One query counts the executions per date; a date holding more than `per_chunk` stays whole
    (a chunk never splits a date). One chunk when `per_chunk` is None, the table is empty, or
    a date is not `YYYY-MM-DD` (a single read then keeps every row in view).
    """
    if per_chunk is None:
        return [window]
    where, params = _where(window)
    counts = list(
        source.query(
            f"SELECT je.execution_date, count(*) FROM job_executions je{where} "
            "GROUP BY je.execution_date ORDER BY je.execution_date",
            params,
        )
    )
    if not counts or not all(is_date(date) for date, _ in counts):
        return [window]
    chunks: list[Window] = []
    first, last, held = counts[0][0], counts[0][0], 0
    for date, count in counts:
        if held and held + int(count) > per_chunk:
            chunks.append(Window(first, last))
            first, held = date, 0
        last, held = date, held + int(count)
    chunks.append(Window(first, last))
    return chunks


def iter_d1_jobs(
    source: D1Source, window: Window, *, per_chunk: int | None = None
) -> Iterator[D1Job]:
    """Every execution in the window with its children, in natural-key order of (date, type).

    With `per_chunk`, the three ordered reads run once per run of dates holding about that
    many executions, so no answer grows with the database (remote D1 caps a result's size).
    """
    for chunk in date_chunks(source, window, per_chunk):
        yield from _iter_chunk(source, chunk)


def _iter_chunk(source: D1Source, window: Window) -> Iterator[D1Job]:
    jobs = source.query(*_select(JOB_COLUMNS, Table.JOB_EXECUTIONS, "je", window))
    symbols = _Lookahead(
        source.query(*_select(SYMBOL_COLUMNS, Table.ANALYSIS_RESULTS, "ar", window))
    )
    reports = _Lookahead(
        source.query(*_select(REPORT_COLUMNS, Table.REPORT_SNAPSHOTS, "rs", window))
    )
    for row in jobs:
        row_id = row[0]
        yield build_d1_job(row, symbols.take(row_id), reports.take(row_id))


class _Lookahead:
    """Takes the leading rows whose first column equals an execution id, from an ordered stream."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]):
        self._rows = rows
        self._next: tuple[Any, ...] | None = next(rows, None)

    def take(self, execution_id: int) -> list[tuple[Any, ...]]:
        taken = []
        while self._next is not None and self._next[0] == execution_id:
            taken.append(self._next)
            self._next = next(self._rows, None)
        return taken


@dataclass
class _Checker:
    table: str
    row_id: int
    problems: list[RowProblem]
    json_texts: list[JsonText]

    def flag(self, field: str, value: Any, reason: str) -> None:
        self.problems.append(RowProblem(self.table, self.row_id, field, value, reason))

    def integer(self, field: str, value: Any, *, minimum: int = 0) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.flag(field, value, f"{field} should be an INTEGER, found {type(value).__name__}")
            return None
        if value < minimum:
            self.flag(field, value, f"{field} should be >= {minimum}")
        return value

    def json_text(self, field: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.flag(field, value, f"{field} should be JSON text")
            return None
        # Checked by the diff (`row_problems`), unless KV holds the same text; valid JSON is
        # kept as written: the diff names the rule that makes it equal.
        self.json_texts.append((len(self.problems), self.table, self.row_id, field, value))
        return value

    def enum(self, field: str, value: Any, allowed: frozenset[str]) -> str | None:
        if value is None or value not in allowed:
            self.flag(field, value, f"{field} must be one of {', '.join(sorted(allowed))}")
        return value if isinstance(value, str) else None

    def text(self, field: str, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        self.flag(field, value, f"{field} should be TEXT, found {type(value).__name__}")
        return str(value)


def run_of(execution_time: Any) -> str | None:
    """The ET `HHMMSS` of a D1 `execution_time`, or None when it cannot be parsed."""
    instant = parse_instant(execution_time) if isinstance(execution_time, str) else None
    return et_run_time(instant) if instant else None


# Each row is built on a fast path when every value already has the type and range its checks
# want (then the checks would flag nothing and change nothing), else through `_Checker`, which
# flags what is wrong; tests/verifier/test_d1_rows.py holds the two paths to the same result.


def _is_count(value: Any) -> bool:
    return value is None or (type(value) is int and value >= 0)


def _is_text(value: Any) -> bool:
    return value is None or type(value) is str


def build_d1_job(
    row: tuple[Any, ...], symbol_rows: list[tuple[Any, ...]], report_rows: list[tuple[Any, ...]]
) -> D1Job:
    problems: list[RowProblem] = []
    json_texts: list[JsonText] = []
    job = _clean_job(row, json_texts) or _checked_job(row, problems, json_texts)
    symbols = tuple(
        _clean_symbol(r, problems, json_texts) or _checked_symbol(r, problems, json_texts)
        for r in symbol_rows
    )
    reports = tuple(
        _clean_report(r, problems, json_texts) or _checked_report(r, problems, json_texts)
        for r in report_rows
    )
    return D1Job(row[0], job, symbols, reports, tuple(problems), tuple(json_texts))


def _clean_job(row: tuple[Any, ...], json_texts: list[JsonText]) -> JobRecord | None:
    """The row's record if no check would flag it (the fast path), else None."""
    row_id, job_type, date, exec_time, status, duration, processed, ok, failed, error, meta = row
    if not (
        type(job_type) is str
        and job_type in JOB_TYPES
        and type(status) is str
        and status in STATUSES
        and _is_count(duration)
        and _is_count(processed)
        and _is_count(ok)
        and _is_count(failed)
        and _is_text(error)
        and _is_text(meta)
        and is_date(date)
    ):
        return None
    run = run_of(exec_time)
    if run is None:
        return None
    if meta is not None:
        json_texts.append((0, Table.JOB_EXECUTIONS, row_id, "metadata", meta))
    key = JobKey(date, job_type, run)
    return JobRecord(key, exec_time, status, duration, processed, ok, failed, error, meta)


def _checked_job(
    row: tuple[Any, ...], problems: list[RowProblem], json_texts: list[JsonText]
) -> JobRecord:
    c = _Checker(Table.JOB_EXECUTIONS, row[0], problems, json_texts)
    (
        _,
        job_type,
        date,
        exec_time,
        status,
        duration,
        processed,
        successful,
        failed,
        error,
        metadata,
    ) = row
    job_type = c.enum("job_type", job_type, JOB_TYPES)
    if not is_date(date):
        c.flag("execution_date", date, "execution_date should be YYYY-MM-DD")
    run = run_of(exec_time)
    if run is None:
        c.flag("execution_time", exec_time, "execution_time is not an ISO 8601 timestamp")
    return JobRecord(
        key=JobKey(str(date), str(job_type), run or f"?{exec_time}"),
        execution_time=c.text("execution_time", exec_time),
        status=c.enum("status", status, STATUSES),
        duration_ms=c.integer("duration_ms", duration),
        symbols_processed=c.integer("symbols_processed", processed),
        symbols_successful=c.integer("symbols_successful", successful),
        symbols_failed=c.integer("symbols_failed", failed),
        error_message=c.text("error_message", error),
        metadata=c.json_text("metadata", metadata),
    )


def row_problems(job: D1Job, known: Container[str]) -> tuple[RowProblem, ...]:
    """The job's row problems with its JSON texts settled, each in its place: a text in
    `known` (KV's texts, canonical JSON) is JSON; any other is parsed."""
    if not job.json_texts:
        return job.problems
    problems, added = list(job.problems), 0
    for at, table, row_id, field, text in job.json_texts:
        if text in known or is_json_text(text):
            continue
        problems.insert(at + added, RowProblem(table, row_id, field, text[:200], f"{field} is not valid JSON"))
        added += 1
    return tuple(problems)


def _clean_symbol(
    r: tuple[Any, ...], problems: list[RowProblem], json_texts: list[JsonText]
) -> D1Symbol | None:
    """The row's symbol result if no check would flag it (the fast path), else None."""
    _, row_id, symbol, sentiment, confidence, direction, reasoning, signals, technical, news = r
    if not (
        type(symbol) is str
        and (confidence is None or (type(confidence) is float and 0.0 <= confidence <= 1.0))
        and _is_text(sentiment)
        and _is_text(direction)
        and _is_text(reasoning)
        and _is_text(signals)
        and _is_text(technical)
        and _is_count(news)
    ):
        return None
    at = len(problems)
    if signals is not None:
        json_texts.append((at, Table.ANALYSIS_RESULTS, row_id, "signals", signals))
    if technical is not None:
        json_texts.append((at, Table.ANALYSIS_RESULTS, row_id, "technical_data", technical))
    result = SymbolResult(
        symbol, sentiment, confidence, direction, reasoning, signals, technical, news
    )
    return D1Symbol(row_id, result)


def _checked_symbol(
    r: tuple[Any, ...], problems: list[RowProblem], json_texts: list[JsonText]
) -> D1Symbol:
    _, row_id, symbol, sentiment, confidence, direction, reasoning, signals, technical, news = r
    c = _Checker(Table.ANALYSIS_RESULTS, row_id, problems, json_texts)
    conf: float | None = None
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            c.flag("confidence", confidence, "confidence should be a REAL between 0 and 1")
        else:
            conf = float(confidence)
            if not 0.0 <= conf <= 1.0:
                c.flag("confidence", confidence, "confidence should be between 0 and 1")
    result = SymbolResult(
        symbol=str(symbol),
        sentiment=c.text("sentiment", sentiment),
        confidence=conf,
        direction=c.text("direction", direction),
        reasoning=c.text("reasoning", reasoning),
        signals=c.json_text("signals", signals),
        technical_data=c.json_text("technical_data", technical),
        news_count=c.integer("news_count", news),
    )
    return D1Symbol(row_id, result)


def _clean_report(
    r: tuple[Any, ...], problems: list[RowProblem], json_texts: list[JsonText]
) -> D1Report | None:
    """The row's report if no check would flag it (the fast path), else None."""
    _, row_id, report_type, report_date, content, summary, high = r
    if not (
        type(report_type) is str
        and report_type in JOB_TYPES
        and _is_text(content)
        and _is_text(summary)
        and _is_count(high)
        and is_date(report_date)
    ):
        return None
    if content is not None:
        json_texts.append((len(problems), Table.REPORT_SNAPSHOTS, row_id, "content", content))
    return D1Report(row_id, ReportRecord(report_type, report_date, content, summary, high))


def _checked_report(
    r: tuple[Any, ...], problems: list[RowProblem], json_texts: list[JsonText]
) -> D1Report:
    _, row_id, report_type, report_date, content, summary, high = r
    c = _Checker(Table.REPORT_SNAPSHOTS, row_id, problems, json_texts)
    if not is_date(report_date):
        c.flag("report_date", report_date, "report_date should be YYYY-MM-DD")
    report = ReportRecord(
        report_type=str(c.enum("report_type", report_type, JOB_TYPES)),
        report_date=str(report_date),
        content=c.json_text("content", content),
        summary=c.text("summary", summary),
        high_confidence_count=c.integer("high_confidence_count", high),
    )
    return D1Report(row_id, report)


# --- records → rows (backfill, the demo's dual-writer) --------------------------------------


def execution_time_for(job: JobRecord) -> str:
    """The `execution_time` a backfilled row gets: the record's, else midnight ET of its date."""
    if job.execution_time:
        return job.execution_time
    run = job.key.run if job.key.run != LATEST else "000000"
    return iso_utc(instant_of_run(job.key.execution_date, run))


def job_row(job: JobRecord, *, metadata: str | None) -> dict[str, Any]:
    return {
        "job_type": job.key.job_type,
        "execution_date": job.key.execution_date,
        "execution_time": execution_time_for(job),
        "status": job.status or "success",
        "duration_ms": job.duration_ms,
        "symbols_processed": job.symbols_processed,
        "symbols_successful": job.symbols_successful,
        "symbols_failed": job.symbols_failed,
        "error_message": job.error_message,
        "metadata": metadata,
    }


def symbol_row(result: SymbolResult) -> dict[str, Any]:
    return {
        "symbol": result.symbol,
        "sentiment": result.sentiment,
        "confidence": result.confidence,
        "direction": result.direction,
        "reasoning": result.reasoning,
        "signals": result.signals,
        "technical_data": result.technical_data,
        "news_count": result.news_count,
    }


def report_row(report: ReportRecord) -> dict[str, Any]:
    return {
        "report_type": report.report_type,
        "report_date": report.report_date,
        "content": report.content,
        "html_snapshot": None,
        "summary": report.summary,
        "high_confidence_count": report.high_confidence_count,
    }


def missing_plan_tables(source: D1Source) -> list[str]:
    """Plan tables or columns the database lacks, as `table` or `table.column`."""
    names = {r[0] for r in source.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing: list[str] = []
    for table, columns in PLAN_TABLES.items():
        if table not in names:
            missing.append(table)
            continue
        have = {r[1] for r in source.query(f"PRAGMA table_info({table})")}
        missing.extend(f"{table}.{c}" for c in columns if c not in have)
    return missing
