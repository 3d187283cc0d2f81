"""`kv2d1 backfill`: insert what D1 lacks from KV, guarded, resumable, reviewable, revertible."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from kv2d1.cli import (
    CommonOptions,
    OpenedSources,
    _common,
    common_options,
    emit,
    main,
    open_sources,
    output_format,
    translate_errors,
    write_output,
)
from reports.backfill_run import (
    BackfillMode,
    BackfillOptions,
    backfill_document,
    render_backfill_text,
    revert_document,
)
from reports.document import redact_document
from reports.progress import Progress
from reports.render import OutputFormat
from verifier.profile import load_profile
from verifier.sources.snapshot import redaction_salt

RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")
LEDGER_DIR = Path(".kv2d1") / "runs"


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (counts by table and job type, the first rows); write nothing.",
)
@click.option(
    "--sql-out",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Write the guarded inserts to FILE for `wrangler d1 execute --file`; D1 is only read.",
)
@click.option(
    "--revert",
    "revert_run",
    metavar="RUN_ID",
    help="Delete exactly the rows run RUN_ID inserted (a dry run unless --yes).",
)
@click.option("--yes", is_flag=True, help="Confirm --revert: really delete.")
@click.option(
    "--ledger-dir",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="Where run ledgers live (default: .kv2d1/runs/ next to the wrangler config).",
)
@common_options
@translate_errors
def backfill(
    *,
    dry_run: bool,
    sql_out: Path | None,
    revert_run: str | None,
    yes: bool,
    ledger_dir: Path | None,
    **kw: Any,
) -> None:
    """Insert into D1 what it lacks from KV: guarded, resumable, reviewable, revertible.

    Verifies the window, then for every missing_in_d1 / expiring_soon finding inserts the
    execution, symbol results and report snapshot D1 lacks, built from the normalised KV
    record; keys expiring within 48 h go first. Each insert is conditional on its natural key
    being absent (never INSERT OR REPLACE), so a rerun or a concurrent dual-write cannot
    duplicate a row; inserts are packed (many rows per statement, up to 1,000 rows of many jobs
    per request), each request one transaction. field_mismatch, duplicate_in_d1 and orphans
    are reported, never fixed. Ends by verifying again and printing findings before and after.

    Every backfilled execution's metadata names the run id; a run ledger (--ledger-dir) records
    each inserted row. A killed run continues where it stopped when started again, under the
    same run id. `--revert RUN_ID --yes` deletes exactly that run's rows, and refuses when an
    execution it inserted has since gained rows it did not insert.

    Exit 0 when done (also when there is nothing to do), 1 on error, 2 on bad usage.

    Example: kv2d1 backfill --config wrangler.toml --since 2026-11-16 --sql-out backfill.sql
    """
    opts = _common(kw)
    mode = _mode(dry_run=dry_run, sql_out=sql_out, revert_run=revert_run, yes=yes)
    writable = mode == BackfillMode.APPLY or (revert_run is not None and yes)
    profile = load_profile(opts.profile)
    opened = open_sources(opts, profile, writable=writable)
    ledgers = ledger_dir or default_ledger_dir(opts)
    if revert_run is not None:
        doc = revert_document(
            opened.d1,
            run_id=revert_run,
            ledger_dir=ledgers,
            confirm=yes,
            source=opened.source,
            clock=opened.clock,
        )
        _show(doc, opts)
        return
    options = BackfillOptions(
        mode=mode, ledger_dir=ledgers, sql_out=sql_out, database=opened.d1_name
    )
    time_travel = (
        _record_bookmark(opened, opts) if opts.remote and mode == BackfillMode.APPLY else None
    )
    with (
        Progress.for_terminal("kv", quiet=opts.quiet) as kv_progress,
        Progress.for_terminal("backfill", quiet=opts.quiet, unit="jobs") as job_progress,
    ):
        verification = opened.verification(opts, profile, progress=kv_progress)
        doc = backfill_document(
            verification, options=options, source=opened.source, apply_progress=job_progress
        )
    if time_travel is not None:
        doc["backfill"]["time_travel"] = time_travel
    _show(doc, opts)


def _record_bookmark(opened: OpenedSources, opts: CommonOptions) -> dict[str, str]:
    """Before a remote backfill writes: D1's Time Travel bookmark and the command that restores it."""
    from verifier.sources.remote import RemoteD1
    from verifier.sources.remote_support import record_time_travel_bookmark

    assert isinstance(opened.d1, RemoteD1)
    bookmark, command = record_time_travel_bookmark(opened.d1, opened.d1_name)
    if not opts.quiet:
        click.echo(f"D1 Time Travel bookmark before writing: {bookmark}", err=True)
        click.echo(f"To undo this whole backfill: {command}", err=True)
    return {"bookmark": bookmark, "restore_command": command}


def _mode(
    *, dry_run: bool, sql_out: Path | None, revert_run: str | None, yes: bool
) -> BackfillMode:
    if dry_run and sql_out is not None:
        raise click.UsageError("--dry-run writes nothing; --sql-out writes a file: choose one")
    if revert_run is not None:
        if sql_out is not None:
            raise click.UsageError("--revert deletes rows; it cannot write a --sql-out file")
        if dry_run and yes:
            raise click.UsageError("--yes confirms a revert; --dry-run asks for none: choose one")
        if not RUN_ID.match(revert_run):
            raise click.BadParameter(f"{revert_run!r} is not a run id", param_hint="--revert")
    elif yes:
        raise click.UsageError("--yes confirms --revert; a backfill needs no confirmation")
    if sql_out is not None:
        return BackfillMode.SQL_OUT
    return BackfillMode.DRY_RUN if dry_run else BackfillMode.APPLY


def default_ledger_dir(opts: CommonOptions) -> Path:
    """`.kv2d1/runs/` next to the wrangler config (the current directory's by default)."""
    base = opts.config.parent if opts.config is not None else Path.cwd()
    return base / LEDGER_DIR


def _show(doc: dict[str, Any], opts: CommonOptions) -> None:
    """Text for a terminal; other formats as `emit` renders them, the outcome on stderr."""
    if output_format(opts) != OutputFormat.TEXT:
        emit(doc, opts)
        if not opts.quiet:
            click.echo(doc["backfill"]["message"], err=True)
        return
    if opts.redact:
        doc = redact_document(doc, redaction_salt())
    write_output(render_backfill_text(doc), opts)
