"""`kv2d1 snapshot`: capture KV and the D1 tables into one SQLite snapshot file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kv2d1.cli import CommonOptions, _common, common_options, main, open_sources, translate_errors
from reports.progress import Progress
from verifier.profile import load_profile
from verifier.sources.snapshot import TABLES, Manifest, capture_snapshot


@main.command()
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the unfinished capture in FILE from its checkpoint (start one if absent).",
)
@common_options
@translate_errors
def snapshot(*, resume: bool, **kw: Any) -> None:
    """Capture every KV key (value, expiration, metadata) and the D1 tables into one file.

    FILE (-o, required) is a SQLite database, readable by any SQLite tool and by
    `kv2d1 verify --snapshot FILE`. It is created owner-only (0600) and holds a manifest with the
    source's bindings and ids (never the token), counts and a SHA-256 digest of the content.
    Each page of keys or rows is committed as it arrives: an interrupted capture continues with
    `--resume`. Progress goes to stderr when it is a terminal (not with --quiet); a one-line
    summary follows. Exit 0 when done, 1 on error, 2 on bad usage.

    Example: kv2d1 snapshot --remote -o snapshots/2026-11-27.sqlite
    """
    opts = _common(kw)
    path = _snapshot_path(opts)
    profile = load_profile(opts.profile)
    opened = open_sources(opts, profile)
    units = dict.fromkeys(TABLES, "rows")
    with Progress.for_terminal("kv", quiet=opts.quiet, units=units) as progress:
        manifest = capture_snapshot(
            opened.kv,
            opened.d1,
            opened.source,
            path,
            resume=resume,
            progress=progress,
            as_of=opened.clock.as_of,
        )
    click.echo(summary_line(manifest), err=True)


def _snapshot_path(opts: CommonOptions) -> Path:
    """The file to write (`-o`); common options that make no sense here are refused."""
    if opts.output is None:
        raise click.UsageError("Missing option '-o' / '--output': the snapshot FILE to write.")
    if opts.snapshot is not None:
        raise click.UsageError("snapshot reads live sources: --snapshot cannot be its input")
    if opts.window.since or opts.window.until:
        raise click.UsageError(
            "a snapshot captures every key: give --since/--until to verify or report instead"
        )
    if opts.fmt is not None:
        raise click.UsageError("a snapshot is a SQLite file: --format does not apply")
    return opts.output


def summary_line(manifest: Manifest) -> str:
    """`Snapshot FILE: N KV entries, … report_snapshots (from remote); sha256 …`."""
    counts = manifest.counts
    tables = ", ".join(f"{counts[name]:,} {name}" for name in list(counts)[1:])
    resumed = f", resumed {manifest.resumed}×" if manifest.resumed else ""
    return (
        f"Snapshot {manifest.path}: {counts['kv_entries']:,} KV entries, {tables} "
        f"(from {manifest.source_kind}{resumed}); sha256 {manifest.content_digest}"
    )
