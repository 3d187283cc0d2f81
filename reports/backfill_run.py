"""`kv2d1 backfill` as one library call: verify, plan, apply (or dry-run, or write SQL), re-verify.

`backfill_document` returns the run's JSON report document with a `backfill` block: run id,
mode, jobs and rows planned and inserted per table and job type, and the findings before and
after per category and table. The re-verification covers the run's whole window, so the two
counts compare like with like. `revert_document` does the same for `--revert RUN_ID`.
`render_backfill_text` is the terminal rendering of either.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from backfill.apply import (
    Ledger,
    LedgerRun,
    apply_plans,
    apply_revert,
    blocked_message,
    check_writable,
    find_unfinished,
    job_event,
    load_run,
    new_run_id,
    plan_revert,
    reconcile,
)
from backfill.plan import BACKFILLED, PlanSpool, Provenance, RowCounts, build_plans
from backfill.sqlfile import SqlFileHeader, write_sql_file
from reports.document import Summary, build_document
from verifier import __version__
from verifier.clock import RunClock
from verifier.errors import BackfillError
from verifier.model import Category, Coverage, Finding, Window
from verifier.sources import D1Source
from verifier.verify import Verification

FIRST_ROWS = 10
PREVIEW_CHARS = 200
Progress = Callable[[str, int], None]


class BackfillMode(enum.StrEnum):
    APPLY = "apply"
    DRY_RUN = "dry-run"
    SQL_OUT = "sql-out"


@dataclass(frozen=True)
class BackfillOptions:
    """How to backfill: the mode, where the ledger lives, the SQL file for `--sql-out`."""

    mode: BackfillMode
    ledger_dir: Path
    sql_out: Path | None = None
    database: str = "<database>"
    first_rows: int = FIRST_ROWS


@dataclass
class FindingTally:
    """A verification's findings, kept for the document without their KV records, and counted
    per category and table."""

    summary: Summary = field(default_factory=Summary)
    findings: list[Finding] = field(default_factory=list)
    by_table: Counter[tuple[str, str]] = field(default_factory=Counter)
    coverage: Coverage = field(default_factory=Coverage)

    def watch(self, stream: Iterable[Finding]) -> Iterator[Finding]:
        for f in stream:
            self.summary.add(f)
            self.by_table[(f.category.value, f.table or "-")] += 1
            self.findings.append(dataclasses.replace(f, record=None) if f.record else f)
            yield f

    def ordered(self) -> list[Finding]:
        order = {c: i for i, c in enumerate(Category)}
        return sorted(self.findings, key=lambda f: (order[f.category], f.natural_key, f.id))

    def nested(self) -> dict[str, dict[str, int]]:
        """`{category: {table: count}}`; findings without a table count under `-`."""
        out: dict[str, dict[str, int]] = {}
        for (category, table), n in sorted(self.by_table.items()):
            out.setdefault(category, {})[table] = n
        return out

    def not_fixed(self) -> dict[str, int]:
        return {c: n for c, n in self.summary.by_category.items() if n and c not in BACKFILLED}

    def missing(self) -> int:
        return sum(self.summary.by_category[c.value] for c in BACKFILLED)


def backfill_document(
    verification: Verification,
    *,
    options: BackfillOptions,
    source: dict[str, Any],
    apply_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run a backfill to the end; its report document (the findings left after it)."""
    run = _Run(verification, options, source, apply_progress)
    with PlanSpool() as spool:
        run.plan(spool)
        after = run.carry_out(spool)
    final = after or run.before
    return build_document(
        command="backfill",
        source=source,
        window=verification.window,
        coverage=final.coverage,
        findings=final.ordered(),
        summary=final.summary,
        clock=verification.clock,
        extra={"backfill": run.block},
    )


class _Run:
    """One backfill run: its id (a killed run's, when resuming), plan and report block."""

    def __init__(
        self,
        verification: Verification,
        options: BackfillOptions,
        source: dict[str, Any],
        apply_progress: Progress | None,
    ) -> None:
        self.verification = verification
        self.d1: D1Source = verification.d1
        self.options = options
        self.source = source
        self.apply_progress = apply_progress
        # A dry run names the run a real one would resume, but only a real one resumes it.
        looks = options.mode in (BackfillMode.APPLY, BackfillMode.DRY_RUN)
        unfinished = find_unfinished(options.ledger_dir, self.d1.describe()) if looks else None
        self.resumed = unfinished if options.mode == BackfillMode.APPLY else None
        self.run_id = unfinished.run_id if unfinished else new_run_id(verification.clock.started)
        self.would_resume = unfinished is not None
        self.before = FindingTally(coverage=verification.coverage)
        self.block: dict[str, Any] = {"run_id": self.run_id, "mode": options.mode.value}

    def plan(self, spool: PlanSpool) -> None:
        stream = self.before.watch(self.verification.findings())
        for job in build_plans(stream, provenance=Provenance(self.run_id)):
            spool.add(job)
        self.block.update(
            resumed=self.would_resume,
            jobs={"planned": spool.jobs, "urgent": spool.urgent_jobs, "applied": 0},
            rows={"planned": spool.counts.to_json(), "inserted": RowCounts().to_json()},
            not_fixed=self.before.not_fixed(),
            before=self.before.nested(),
            after=None,
            first_rows=_first_rows(spool, self.options.first_rows),
            ledger=None,
            sql_out=None,
            warnings=[],
            message="",
        )

    def carry_out(self, spool: PlanSpool) -> FindingTally | None:
        """Do what the mode says; the findings after the run when it wrote to D1."""
        if spool.jobs == 0:
            self.block["message"] = self._nothing_to_do()
            if self.resumed is not None:
                self._close_resumed(self.resumed)
            return None
        if self.options.mode == BackfillMode.DRY_RUN:
            self.block["message"] = f"Dry run: nothing written. {self._planned()}"
            return None
        if self.options.mode == BackfillMode.SQL_OUT:
            self._write_sql(spool)
            return None
        self._apply(spool)
        return self._reverify()

    def _nothing_to_do(self) -> str:
        others = sum(self.block["not_fixed"].values())
        tail = f" ({others} findings of other kinds are reported, not fixed)" if others else ""
        if self.options.mode == BackfillMode.SQL_OUT:
            tail += "; no SQL file written"
        return f"Nothing to backfill in this window: D1 holds every KV record{tail}."

    def _planned(self) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in self.block["rows"]["planned"]["by_table"].items())
        jobs = self.block["jobs"]
        return f"Planned {rows} in {jobs['planned']} jobs ({jobs['urgent']} urgent)."

    def _close_resumed(self, resumed: LedgerRun) -> None:
        """A killed run whose work turned out complete: record its last rows and close it."""
        ledger = Ledger.resume(resumed)
        reconcile(self.d1, ledger)
        ledger.finish(inserted={})
        self.block["ledger"] = str(ledger.path)

    def _started(self, mode: BackfillMode) -> dict[str, Any]:
        return {
            "mode": mode.value,
            "target": self.d1.describe(),
            "version": __version__,
            "window": self.verification.window.to_json(),
            "source": _source_line(self.source),
        }

    def _write_sql(self, spool: PlanSpool) -> None:
        path = self.options.sql_out
        assert path is not None
        window = self.verification.window
        header = SqlFileHeader(
            run_id=self.run_id,
            source=_source_line(self.source),
            database=self.options.database,
            window=f"{window.since or 'first'} → {window.until or 'last'}",
            counts=spool.counts,
            jobs=spool.jobs,
            urgent_jobs=spool.urgent_jobs,
            version=__version__,
            written=self.verification.clock.started,
        )
        self.block["warnings"] = write_sql_file(path, header, spool)
        started = self._started(BackfillMode.SQL_OUT)
        ledger = Ledger.create(self.options.ledger_dir, self.run_id, started)
        for job in spool:
            ledger.append(job_event(ledger.next_seq(), job, {}))
        ledger.finish(sql_out=str(path))
        self.block.update(ledger=str(ledger.path), sql_out=str(path))
        self.block["message"] = (
            f"Wrote {path}: review it, then apply it with `wrangler d1 execute "
            f"{self.options.database} --local --file {path}` (or --remote). {self._planned()}"
        )

    def _apply(self, spool: PlanSpool) -> None:
        check_writable(self.d1)  # read-only or locked: one clear error before anything is written
        if self.resumed is not None:
            ledger = Ledger.resume(self.resumed)
            reconcile(self.d1, ledger)
        else:
            started = self._started(BackfillMode.APPLY)
            ledger = Ledger.create(self.options.ledger_dir, self.run_id, started)
        result = apply_plans(self.d1, spool, ledger=ledger, progress=self.apply_progress)
        ledger.finish(inserted=result.inserted.by_table())
        rate = round(result.inserted.total / result.seconds) if result.seconds > 0 else None
        self.block["jobs"]["applied"] = result.jobs
        self.block["rows"]["inserted"] = result.inserted.to_json()
        self.block.update(
            ledger=str(ledger.path), seconds=round(result.seconds, 3), rows_per_second=rate
        )

    def _reverify(self) -> FindingTally:
        """Verify the window again: the findings the run leaves behind."""
        again = dataclasses.replace(self.verification, coverage=Coverage(), progress=None)
        after = FindingTally(coverage=again.coverage)
        for _ in after.watch(again.findings()):
            pass
        self.block["after"] = after.nested()
        inserted = self.block["rows"]["inserted"]["total"]
        self.block["message"] = (
            f"Backfilled {inserted} rows in {self.block['jobs']['applied']} jobs "
            f"(run {self.run_id}); re-verified: {after.missing()} records still missing in D1."
        )
        return after


def _first_rows(spool: PlanSpool, limit: int) -> list[dict[str, Any]]:
    """The first rows in apply order, long texts (report content) cut for the report."""
    rows: list[dict[str, Any]] = []
    for job in spool:
        rows += [{k: _preview(v) for k, v in r.to_json().items()} for r in job.rows]
        if len(rows) >= limit:
            break
    return rows[:limit]


def _preview(value: Any) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[: PREVIEW_CHARS - 1] + "…"
    return value


def _source_line(source: dict[str, Any]) -> str:
    kv = source.get("kv_binding") or source.get("kv_namespace_id") or "?"
    d1 = source.get("d1_binding") or source.get("d1_database_name") or "?"
    return f"{source.get('kind', 'local')} KV {kv} → D1 {d1}"


# --- revert --------------------------------------------------------------------------------


def revert_document(
    d1: D1Source,
    *,
    run_id: str,
    ledger_dir: Path,
    confirm: bool,
    source: dict[str, Any],
    clock: RunClock,
) -> dict[str, Any]:
    """Plan (and with `confirm`, apply) the deletion of exactly the rows run `run_id` inserted."""
    run = load_run(ledger_dir, run_id)
    # A --sql-out file may have been applied anywhere (--local or --remote): only a direct run
    # is tied to the database it wrote to.
    if run.mode == "apply" and run.target is not None and run.target != d1.describe():
        raise BackfillError(
            f"run {run_id} wrote to {run.target}, not {d1.describe()}: "
            "pass the --config / --d1-binding / --persist-to the run used"
        )
    plan = plan_revert(d1, run)
    if plan.blocked:
        raise BackfillError(blocked_message(plan))
    counts = plan.counts()
    block: dict[str, Any] = {
        "run_id": run_id,
        "mode": "revert" if confirm else "revert-dry-run",
        "ledger": str(run.path),
        "rows": counts,
        "deleted": None,
        "gone_already": plan.gone,
        "unattributed": plan.unattributed,
    }
    if sum(counts.values()) == 0:
        block["message"] = f"Nothing to revert: no row of run {run_id} is left in D1."
    elif confirm:
        check_writable(d1)
        deleted = apply_revert(d1, plan, ledger=Ledger(run.path, run_id))
        block["deleted"] = deleted.by_table()
        block["message"] = f"Reverted run {run_id}: deleted {deleted.total} rows."
    else:
        block["message"] = (
            f"Dry run: would delete {_rows_line(counts)} of run {run_id}; add --yes to delete."
        )
    if plan.unattributed:
        block["message"] += (
            f" {plan.unattributed} rows the --sql-out file planned for executions D1 already had "
            "cannot be told apart from the worker's (a SQL file leaves no row ids): left in place."
        )
    return build_document(
        command="backfill",
        source=source,
        window=Window(),
        coverage=Coverage(),
        findings=[],
        summary=Summary(),
        clock=clock,
        extra={"backfill": block},
    )


def _rows_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in counts.items())


# --- terminal rendering --------------------------------------------------------------------


def render_backfill_text(doc: dict[str, Any]) -> str:
    """The backfill (or revert) block for a terminal: plan, counts, before → after."""
    block = doc["backfill"]
    if block["mode"].startswith("revert"):
        return _revert_text(block)
    lines = [
        f"kv2d1 backfill · {block['mode']} · run {block['run_id']}"
        + (" (resumed)" if block.get("resumed") else "")
    ]
    lines += ["", _rows_table(block["rows"]["planned"], "planned")]
    if block["mode"] == BackfillMode.APPLY and block["jobs"]["applied"]:
        lines += ["", _rows_table(block["rows"]["inserted"], "inserted")]
    lines += ["", _before_after(block)]
    if block.get("not_fixed"):
        others = ", ".join(f"{c} {n}" for c, n in block["not_fixed"].items())
        lines += ["", f"Reported, not fixed by backfill: {others} (see kv2d1 verify)."]
    if block["mode"] == BackfillMode.DRY_RUN and block.get("first_rows"):
        lines += ["", "First rows:", _first_rows_table(block["first_rows"])]
    lines += [""] + [f"Warning: {w}" for w in block.get("warnings") or []]
    lines.append(block["message"])
    return "\n".join(lines) + "\n"


def _rows_table(counts: dict[str, Any], label: str) -> str:
    nested = counts["by_table_and_job_type"]
    job_types = sorted({j for per in nested.values() for j in per})
    rows = [
        [table, *(per.get(j, 0) for j in job_types), counts["by_table"][table]]
        for table, per in nested.items()
    ]
    return tabulate(rows, headers=[f"rows {label}", *job_types, "total"], tablefmt="simple")


def _before_after(block: dict[str, Any]) -> str:
    before, after = block.get("before") or {}, block.get("after")
    keys = sorted(
        {(c, t) for c, per in before.items() for t in per}
        | {(c, t) for c, per in (after or {}).items() for t in per}
    )
    rows = [
        [c, t, before.get(c, {}).get(t, 0), "-" if after is None else after.get(c, {}).get(t, 0)]
        for c, t in keys
    ]
    if not rows:
        return "No findings in this window."
    return tabulate(rows, headers=["findings", "table", "before", "after"], tablefmt="simple")


def _first_rows_table(rows: list[dict[str, Any]]) -> str:
    shown = []
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("table", "natural_key")}
        text = ", ".join(f"{k}={v!r}" for k, v in values.items() if v is not None)
        text = text if len(text) <= 70 else text[:69] + "…"
        shown.append([row["table"], row["natural_key"], text])
    return tabulate(shown, headers=["table", "natural key", "values"], tablefmt="simple")


def _revert_text(block: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {t}" for t, n in block["rows"].items())
    lines = [
        f"kv2d1 backfill --revert {block['run_id']} · {block['mode']}",
        f"rows of the run in D1: {counts}",
        block["message"],
    ]
    return "\n".join(lines) + "\n"
