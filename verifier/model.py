"""The shared model: both KV and D1 are normalised into these frozen records before comparing.

Natural keys
- a job execution: `(execution_date, job_type, run)`; `run` is the ET wall-clock time `HHMMSS`
  of the execution when known (per-run KV keys, D1 rows) or `LATEST` for a daily KV key, which
  stands for the latest run of its date;
- a symbol result: the job's key + `symbol`;
- a report snapshot: the job's key + `report_type`.

`JobKey` orders by date first, so both sides can be streamed in one order and merge-joined.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")

LATEST = "latest"
NOTHING_ABSENT: frozenset[str] = frozenset()


def pickled_by_position(cls: type[_T]) -> type[_T]:
    """Pickle a frozen, slotted dataclass as its constructor's arguments.

    The default path calls `dataclasses.fields()` per object on load and dump, which dominates
    spilling a million records to disk; this is about 3x faster and gives equal objects.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    values = operator.attrgetter(*names) if len(names) > 1 else None
    name = names[0]

    def __reduce__(self: _T) -> tuple[type[_T], tuple[Any, ...]]:
        return cls, values(self) if values else (getattr(self, name),)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


class JobType(enum.StrEnum):
    ANALYSIS = "analysis"
    PRE_MARKET = "pre-market"
    INTRADAY = "intraday"
    END_OF_DAY = "end-of-day"
    WEEKLY = "weekly"


class Status(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"


class Category(enum.StrEnum):
    MISSING_IN_D1 = "missing_in_d1"
    ORPHAN_IN_D1 = "orphan_in_d1"
    FIELD_MISMATCH = "field_mismatch"
    DUPLICATE_IN_D1 = "duplicate_in_d1"
    INVALID_KV_PAYLOAD = "invalid_kv_payload"
    INVALID_D1_ROW = "invalid_d1_row"
    EXPIRING_SOON = "expiring_soon"
    SCHEDULE_GAP = "schedule_gap"


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_OF: dict[Category, Severity] = {
    Category.MISSING_IN_D1: Severity.ERROR,
    Category.ORPHAN_IN_D1: Severity.WARNING,
    Category.FIELD_MISMATCH: Severity.ERROR,
    Category.DUPLICATE_IN_D1: Severity.ERROR,
    Category.INVALID_KV_PAYLOAD: Severity.ERROR,
    Category.INVALID_D1_ROW: Severity.ERROR,
    Category.EXPIRING_SOON: Severity.ERROR,
    Category.SCHEDULE_GAP: Severity.WARNING,
}


class Table(enum.StrEnum):
    JOB_EXECUTIONS = "job_executions"
    ANALYSIS_RESULTS = "analysis_results"
    REPORT_SNAPSHOTS = "report_snapshots"


# The columns the plan's adapter never writes (PRODUCT.md "What is compared"): compared only where
# D1 holds a value; a NULL there while KV has a value is counted (`Coverage.unwritten_nulls`), not
# a finding. No KV payload carries `html_snapshot` or `summary`, so those two are never compared.
UNWRITTEN_COLUMNS: dict[str, frozenset[str]] = {
    Table.ANALYSIS_RESULTS: frozenset({"signals", "technical_data", "news_count"}),
    Table.REPORT_SNAPSHOTS: frozenset({"html_snapshot", "summary"}),
}


@pickled_by_position
@dataclass(frozen=True, slots=True, order=True)
class JobKey:
    """Natural key of one job execution; orders by date, then job type, then run."""

    execution_date: str
    job_type: str
    run: str

    def __str__(self) -> str:
        return f"{self.job_type}/{self.execution_date}/{self.run}"


@pickled_by_position
@dataclass(frozen=True, slots=True)
class JobRecord:
    """One execution of a scheduled job (a `job_executions` row).

    `execution_time` is an ISO 8601 UTC instant when known. `metadata` is canonical JSON text;
    it is carried, not compared (backfill provenance lives there). `absent` names the fields the
    KV payload does not carry (absent, not `null`): they are None here and not compared, as D1
    may know more than KV. It is always empty on the D1 side.
    """

    key: JobKey
    execution_time: str | None = None
    status: str | None = None
    duration_ms: int | None = None
    symbols_processed: int | None = None
    symbols_successful: int | None = None
    symbols_failed: int | None = None
    error_message: str | None = None
    metadata: str | None = None
    absent: frozenset[str] = NOTHING_ABSENT


JOB_COMPARED_FIELDS = (
    "status",
    "duration_ms",
    "symbols_processed",
    "symbols_successful",
    "symbols_failed",
    "error_message",
)


@pickled_by_position
@dataclass(frozen=True, slots=True)
class SymbolResult:
    """One symbol's analysis inside a job (an `analysis_results` row). JSON fields are canonical
    text; `absent` as in `JobRecord`."""

    symbol: str
    sentiment: str | None = None
    confidence: float | None = None
    direction: str | None = None
    reasoning: str | None = None
    signals: str | None = None
    technical_data: str | None = None
    news_count: int | None = None
    absent: frozenset[str] = NOTHING_ABSENT


SYMBOL_COMPARED_FIELDS = (
    "sentiment",
    "confidence",
    "direction",
    "reasoning",
    "signals",
    "technical_data",
    "news_count",
)


@pickled_by_position
@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One report snapshot (a `report_snapshots` row); `content` is canonical JSON text;
    `absent` as in `JobRecord`."""

    report_type: str
    report_date: str
    content: str | None = None
    summary: str | None = None
    high_confidence_count: int | None = None
    absent: frozenset[str] = NOTHING_ABSENT


REPORT_COMPARED_FIELDS = ("report_date", "content", "high_confidence_count")


@pickled_by_position
@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A KV key as listed: name, expiration (epoch seconds) and metadata (any JSON value)."""

    name: str
    expiration: int | None = None
    metadata: Any = None


@pickled_by_position
@dataclass(frozen=True, slots=True)
class KvEntry:
    """A KV key with its value bytes."""

    key: str
    value: bytes
    expiration: int | None = None
    metadata: Any = None


@pickled_by_position
@dataclass(frozen=True, slots=True)
class KvRecord:
    """One KV key normalised: the job it describes, its symbol results and its report.

    `status_only` records come from `status:{jobType}:{date}` keys and carry only a status.
    `notes` lists normalisation flags (e.g. a percent confidence divided by 100).
    """

    kv_key: str
    shape: str
    job: JobRecord
    symbols: tuple[SymbolResult, ...] = ()
    report: ReportRecord | None = None
    expiration: int | None = None
    value_sha256: str = ""
    status_only: bool = False
    notes: tuple[str, ...] = ()


@pickled_by_position
@dataclass(frozen=True, slots=True)
class D1Symbol:
    row_id: int
    result: SymbolResult


@pickled_by_position
@dataclass(frozen=True, slots=True)
class D1Report:
    row_id: int
    report: ReportRecord


@pickled_by_position
@dataclass(frozen=True, slots=True)
class D1Job:
    """One `job_executions` row with its children, normalised.

    `json_texts` are the rows' JSON columns whose validity is still open, each with the place
    among `problems` its problem would take: the diff settles them (`verifier.d1.row_problems`)
    once it knows which texts KV holds too, so a text equal to KV's is never parsed again.
    """

    row_id: int
    job: JobRecord
    symbols: tuple[D1Symbol, ...] = ()
    reports: tuple[D1Report, ...] = ()
    problems: tuple[RowProblem, ...] = ()
    json_texts: tuple[JsonText, ...] = ()


# A D1 JSON text to check: (its problem's place among the job's problems, table, row id, field,
# text).
JsonText = tuple[int, str, int, str, str]


@pickled_by_position
@dataclass(frozen=True, slots=True)
class RowProblem:
    """A D1 row that breaks the schema's rules (CHECK, range, JSON column, type)."""

    table: str
    row_id: int
    field: str
    value: Any
    reason: str


@pickled_by_position
@dataclass(frozen=True, slots=True)
class Finding:
    """One difference or defect; `id` is stable across runs for the same defect."""

    id: str
    category: Category
    severity: Severity
    natural_key: str
    message: str
    kv_key: str | None = None
    table: str | None = None
    row_id: int | None = None
    field: str | None = None
    kv_value: Any = None
    d1_value: Any = None
    rule: str | None = None
    shape: str | None = None
    expiration: int | None = None
    record: KvRecord | None = dataclasses.field(default=None, compare=False, repr=False)
    """For `missing_in_d1` / `expiring_soon`: the KV record to backfill from (not serialised)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category.value,
            "severity": self.severity.value,
            "natural_key": self.natural_key,
            "kv_key": self.kv_key,
            "table": self.table,
            "row_id": self.row_id,
            "field": self.field,
            "kv_value": self.kv_value,
            "d1_value": self.d1_value,
            "rule": self.rule,
            "shape": self.shape,
            "expiration": self.expiration,
            "message": self.message,
        }


@dataclass
class Coverage:
    """Denominators for everything a run looked at (mutable while a run streams)."""

    keys_listed: int = 0
    keys_matched: int = 0
    keys_skipped_by_pattern: int = 0
    keys_outside_window: int = 0
    kv_records: int = 0
    kv_symbol_results: int = 0
    kv_reports: int = 0
    d1_executions: int = 0
    d1_symbol_results: int = 0
    d1_reports: int = 0
    records_matched: int = 0
    equal_by_rule: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, int] = field(default_factory=dict)
    unwritten_nulls: dict[str, int] = field(default_factory=dict)
    """`table.column` → D1 rows where a column the adapter never writes is NULL while KV had a
    value (`UNWRITTEN_COLUMNS`); in `to_json` only when something was counted."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "keys_listed": self.keys_listed,
            "keys_matched": self.keys_matched,
            "keys_skipped_by_pattern": self.keys_skipped_by_pattern,
            "keys_outside_window": self.keys_outside_window,
            "kv_records": self.kv_records,
            "kv_symbol_results": self.kv_symbol_results,
            "kv_reports": self.kv_reports,
            "d1_executions": self.d1_executions,
            "d1_symbol_results": self.d1_symbol_results,
            "d1_reports": self.d1_reports,
            "records_matched": self.records_matched,
            "equal_by_rule": dict(sorted(self.equal_by_rule.items())),
            "shapes": dict(sorted(self.shapes.items())),
        }
        if self.unwritten_nulls:
            document["unwritten_nulls"] = dict(sorted(self.unwritten_nulls.items()))
        return document


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive window of business dates (`YYYY-MM-DD`); None means open-ended."""

    since: str | None = None
    until: str | None = None

    def contains(self, date: str) -> bool:
        return (self.since is None or date >= self.since) and (
            self.until is None or date <= self.until
        )

    def to_json(self) -> dict[str, str | None]:
        return {"since": self.since, "until": self.until}
