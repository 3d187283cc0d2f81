"""`--sql-out`: the backfill as a SQL file to review and run with `wrangler d1 execute --file`.

The file holds the same guarded multi-row inserts a direct backfill runs (`backfill.packing`),
one per table and job as far as D1's 100,000 bytes per statement allow, with every value
written as a literal (D1 takes a file without bound parameters):

- text: single-quoted, `'` doubled; text holding NUL as `CAST(X'…' AS TEXT)` (exact bytes);
  text holding "BEGIN TRANSACTION" as two literals joined with `||` (wrangler's trap, below);
- integers as digits; floats by `repr` (shortest round trip), or 17 significant digits when
  SQLite would read the `repr` back as a neighbouring double; negatives in brackets;
- None as `NULL`.

No `BEGIN`/`COMMIT`: D1 rejects them, and `wrangler d1 execute` runs a file as one batch anyway.
Jobs keep the plan's order (urgent first), each under a comment naming its KV key.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from backfill.packing import MAX_SQL_BYTES, StatementLimits, pack_jobs
from backfill.plan import JobPlan, RowCounts, Statement
from verifier.errors import BackfillError
from verifier.files import OutputError, output_file

D1_MAX_STATEMENT_BYTES = MAX_SQL_BYTES
# `wrangler d1 execute --file` looks for the text "BEGIN TRANSACTION" anywhere in a file, string
# literals included: it strips the first one (and the first "COMMIT;") from the data, and refuses
# a file with two. A literal is cut between the two words and rejoined with `||`.
WRANGLER_TRAP = re.compile(r"(?<=BEGIN)(?= TRANSACTION)")


@lru_cache(maxsize=1)
def _reader() -> sqlite3.Connection:
    """An in-memory SQLite that tells how SQLite reads a numeric literal back."""
    return sqlite3.connect(":memory:", check_same_thread=False)


def float_literal(value: float) -> str:
    """A REAL literal (or exact expression) SQLite reads back as exactly `value`."""
    if not math.isfinite(value):
        raise BackfillError(f"cannot write the non-finite number {value!r} as SQL")
    # SQLite's decimal → double conversion is not always correctly rounded (3.40 misreads about
    # one shortest repr in 10⁵, and some doubles below 1e-290 from any decimal), so fall back to
    # 17 significant digits, then to an exact power-of-two expression.
    for text in (repr(value), _with_point(f"{value:.17g}"), _power_of_two_form(value)):
        if _reader().execute(f"SELECT {text}").fetchone()[0] == value:
            return text
    raise BackfillError(f"cannot write the number {value!r} exactly as SQL; backfill directly")


def _with_point(text: str) -> str:
    return text if any(c in text for c in ".en") else text + ".0"


def _power_of_two_form(value: float) -> str:
    """`(m / 2⁵² / … )`: an integer mantissa scaled by exact powers of two (IEEE-exact steps)."""
    fraction, exponent = math.frexp(value)
    mantissa, exponent = int(fraction * 2**53), exponent - 53  # value == mantissa * 2**exponent
    step, factors = 2**52, []
    while exponent <= -52:
        factors.append(f" / {step}.0")
        exponent += 52
    while exponent >= 52:
        factors.append(f" * {step}.0")
        exponent -= 52
    if exponent:
        factors.append(f" / {2**-exponent}.0" if exponent < 0 else f" * {2**exponent}.0")
    return f"({mantissa}{''.join(factors)})"


def text_literal(value: str) -> str:
    """A TEXT literal; split where wrangler would mistake the text for SQL (see WRANGLER_TRAP)."""
    if "\x00" in value:  # a NUL would end the statement early in C-string based parsers
        return f"CAST(X'{value.encode('utf-8').hex()}' AS TEXT)"
    parts = WRANGLER_TRAP.split(value)
    quoted = ["'" + part.replace("'", "''") + "'" for part in parts]
    return quoted[0] if len(quoted) == 1 else "(" + " || ".join(quoted) + ")"


def literal(value: Any) -> str:
    """One value as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = float_literal(value)
    elif isinstance(value, str):
        return text_literal(value)
    elif isinstance(value, bytes):
        return f"X'{value.hex()}'"
    else:
        raise BackfillError(f"cannot write a {type(value).__name__} value as SQL")
    return f"({text})" if text.startswith("-") else text  # `x-?` must not become `x--5`


def inline(statement: Statement) -> str:
    """The statement with each `?` replaced by its parameter as a literal."""
    pieces = statement.sql.split("?")
    if len(pieces) != len(statement.params) + 1:
        raise BackfillError(
            f"statement has {len(pieces) - 1} placeholders for {len(statement.params)} values"
        )
    out = [pieces[0]]
    for value, piece in zip(statement.params, pieces[1:], strict=True):
        out += [literal(value), piece]
    return "".join(out)


@dataclass(frozen=True)
class SqlFileHeader:
    """What the header comment says: run, source, counts and how to apply."""

    run_id: str
    source: str
    database: str
    window: str
    counts: RowCounts
    jobs: int
    urgent_jobs: int
    version: str
    written: dt.datetime  # the run's start (`verifier.clock.RunClock.started`)


def header_lines(header: SqlFileHeader, path: Path) -> list[str]:
    by_table = ", ".join(f"{n} {table}" for table, n in header.counts.by_table().items())
    now = header.written.astimezone(dt.UTC).isoformat(timespec="seconds")
    return [
        f"-- kv2d1 backfill, run {header.run_id} (kv2d1 {header.version}, written {now})",
        f"-- Source: {header.source}; window {header.window}",
        f"-- Rows: {by_table} in {header.jobs} jobs;",
        f"--   {header.urgent_jobs} jobs come first because their KV keys expire within 48 h.",
        "-- Every INSERT is guarded by its natural key (INSERT ... SELECT ... WHERE NOT EXISTS):",
        "-- applying this file twice, or after the worker wrote the same rows, adds nothing twice;",
        "-- nothing is replaced, updated or deleted. No BEGIN/COMMIT: D1 runs a file as one batch.",
        "-- Review, then apply with:",
        f"--   npx wrangler d1 execute {header.database} --local --file {path}",
        f"--   npx wrangler d1 execute {header.database} --remote --file {path}",
        f"-- Undo: kv2d1 backfill --revert {header.run_id} (a dry run; add --yes to delete)",
        "",
    ]


def job_comment(index: int, total: int, plan: JobPlan) -> str:
    what = "new execution" if plan.new_execution else "rows of an existing execution"
    line = f"-- job {index}/{total}: {plan.job_key} from KV {plan.kv_key!r} ({what}"
    if plan.urgent and plan.expiration is not None:
        expires = dt.datetime.fromtimestamp(plan.expiration, dt.UTC)
        line += f"; KV key expires {expires:%Y-%m-%d %H:%M} UTC"
    return comment_safe(line + ")")


def comment_safe(line: str) -> str:
    """One comment line, whatever a KV key holds: no line breaks, and not wrangler's trap."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", line).replace("BEGIN TRANSACTION", "BEGIN  TRANSACTION")


def inlined_bytes(value: Any) -> int:
    """What a `?` becomes in the file: the value's literal in place of one byte."""
    return len(literal(value).encode("utf-8", "surrogatepass")) - 1


# No bound parameters in a file: only the size of each statement is limited.
FILE_LIMITS = StatementLimits(max_params=None, value_bytes=inlined_bytes)


def write_job(out: TextIO, index: int, total: int, plan: JobPlan) -> list[str]:
    """Write one job's statements; warnings for statements over D1's size limit."""
    out.write(job_comment(index, total, plan) + "\n")
    warnings = []
    for packed in pack_jobs([plan], FILE_LIMITS):
        text = inline(packed.statement) + ";\n"
        out.write(text)
        if (size := len(text.encode("utf-8"))) > D1_MAX_STATEMENT_BYTES:
            warnings.append(
                f"the insert of {packed.rows[0].natural_key} is {size:,} bytes; remote D1 "
                f"refuses statements over {D1_MAX_STATEMENT_BYTES:,} bytes (it applies locally)"
            )
    out.write("\n")
    return warnings


def write_sql_file(path: Path, header: SqlFileHeader, plans: Iterable[JobPlan]) -> list[str]:
    """Write the whole file (`verifier.files.output_file`: a regular file is replaced whole, a
    FIFO or device written in place; owner-only, it holds KV values); warnings to show the user."""
    warnings: list[str] = []
    try:
        with output_file(path, what="the SQL file") as out:
            out.write("\n".join(comment_safe(line) for line in header_lines(header, path)) + "\n")
            for index, plan in enumerate(plans, start=1):
                warnings += write_job(out, index, header.jobs, plan)
    except OutputError as exc:
        raise BackfillError(str(exc)) from exc
    except UnicodeEncodeError as exc:
        raise BackfillError(
            f"a KV value holds text that is not valid Unicode ({exc.reason}); it cannot go into "
            f"a SQL file: backfill directly instead of with --sql-out"
        ) from exc
    return warnings
