"""`kv2d1 probe`: P50 / P95 / max latency of the plan's read queries against D1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from kv2d1.cli import _common, common_options, emit, main, open_sources, translate_errors
from reports.document import Summary, build_document
from reports.probe import DEFAULT_REPEAT, probe
from reports.render import OutputFormat, render
from verifier.model import Coverage
from verifier.profile import load_profile

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def append_step_summary(doc: dict[str, Any]) -> None:
    """Append the markdown rendering to `$GITHUB_STEP_SUMMARY` when GitHub Actions sets it."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return
    try:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(render(doc, OutputFormat.MARKDOWN) + "\n")
    except OSError as exc:
        raise click.ClickException(
            f"cannot append to {STEP_SUMMARY_ENV} ({target}): {exc.strerror}"
        ) from exc


@main.command(name="probe")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=DEFAULT_REPEAT,
    show_default=True,
    help="Timed rounds of every query (after one untimed warm-up round).",
)
@common_options
@translate_errors
def probe_command(*, repeat: int, **kw: Any) -> None:
    """Measure the plan's read queries against D1: P50, P95 and max per query and overall.

    The queries are D1JobStorage's: job history with each filter (none, type, status, date
    range, limit), the latest job of each type, and job detail (job, results, snapshot) for
    the newest executions. Locally the time is the query's; with --remote both the REST round
    trip and D1's own duration (meta.duration) are reported. The plan's target is P95 < 50 ms,
    its rollback trigger P95 > 200 ms; `kv2d1 report` gates on them. Exit 0 when measured, 1 on
    error, 2 on bad usage.

    \b
    Example: kv2d1 probe --remote --repeat 50 --format markdown
    """
    opts = _common(kw)
    if opts.snapshot is not None:
        raise click.UsageError(
            "a snapshot is a copy, not D1: probe the live database (--local or --remote)"
        )
    profile = load_profile(opts.profile)
    opened = open_sources(opts, profile)
    result = probe(opened.d1, repeat=repeat)
    doc = build_document(
        command="probe",
        source=opened.source,
        window=opts.window,
        coverage=Coverage(),
        findings=[],
        summary=Summary(),
        clock=opened.clock,
        extra={"probe": result.to_json()},
    )
    emit(doc, opts)
    append_step_summary(doc)
