"""`kv2d1 report`: cutover readiness and rollback triggers against the plan's metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import kv2d1.cmd_probe  # registers `kv2d1 probe` (cli loads cmd_report only)
from kv2d1.cli import _common, common_options, emit, main, open_sources, translate_errors
from reports.metrics import DateRange, MetricName
from reports.probe import DEFAULT_REPEAT, timer_for
from reports.progress import Progress
from reports.report_run import HttpGraphQL, ReportOptions, ReportTools, run_report
from verifier.calendar import is_date
from verifier.profile import load_profile
from verifier.sources.remote import RemoteD1


def _date_range(ctx: click.Context, param: click.Parameter, value: str | None) -> DateRange | None:
    if value is None:
        return None
    try:
        return DateRange.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_date(value):
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD")
    return value


@main.command()
@click.option(
    "--probe-repeat",
    type=click.IntRange(min=0),
    default=DEFAULT_REPEAT,
    show_default=True,
    help="Rounds of the query probe; 0 leaves query P95 unknown.",
)
@click.option(
    "--require",
    "required",
    multiple=True,
    type=click.Choice([m.value for m in MetricName]),
    help="A metric that must be measured (unknown → not ready); repeatable. "
    "Data completeness and 7-day coverage are always required.",
)
@click.option(
    "--kv-baseline",
    callback=_date_range,
    metavar="SINCE..UNTIL",
    help="KV reads before the cutover work (remote: Cloudflare analytics, last 31 days).",
)
@click.option(
    "--kv-current",
    callback=_date_range,
    metavar="SINCE..UNTIL",
    help="KV reads now, compared per day with --kv-baseline.",
)
@click.option(
    "--dashboard-url",
    metavar="URL",
    help="The dashboard's history endpoint, e.g. https://…/api/v1/jobs/history?limit=20.",
)
@click.option(
    "--dual-write-since",
    callback=_date,
    metavar="DATE",
    help="First day of dual-write (default: the first D1 row not written by backfill).",
)
@click.option(
    "--history",
    "history_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep each report here; mark findings new / persisting / resolved, show trends.",
)
@click.option(
    "--evidence-limit",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Records named in a metric's evidence.",
)
@common_options
@translate_errors
def report(
    *,
    probe_repeat: int,
    required: tuple[str, ...],
    kv_baseline: DateRange | None,
    kv_current: DateRange | None,
    dashboard_url: str | None,
    dual_write_since: str | None,
    history_dir: Path | None,
    evidence_limit: int,
    **kw: Any,
) -> None:
    """Say whether the migration is ready for cutover, measured against the plan's metrics.

    Runs verify, then measures data completeness, 7-day coverage per job type and trading day,
    query P95 (a probe of the plan's queries; unknown unless run on D1 itself, --remote), write
    reliability (KV records reaching D1 by dual-write) and KV read reduction (Cloudflare
    analytics, --remote) and dashboard load time. The verdict is `rollback` when a rollback
    trigger fires (write reliability < 95 %, D1 P95 > 200 ms, or a field_mismatch /
    duplicate_in_d1 / invalid_d1_row finding), else `not_ready` when another finding of
    severity error exists, a target is missed, a required metric is unknown or nothing was
    compared, else `ready`. An unknown metric never counts as a pass.
    With $GITHUB_STEP_SUMMARY set, the markdown report is appended there too.
    Exit 0 ready, 3 not ready, 4 rollback, 1 error, 2 bad usage.

    \b
    Example: kv2d1 report --since 2026-11-16 --until 2026-11-27 --format html -o report.html
    """
    opts = _common(kw)
    if (kv_baseline is None) != (kv_current is None):
        raise click.UsageError("give both --kv-baseline and --kv-current, or neither")
    profile = load_profile(opts.profile)
    opened = open_sources(opts, profile)
    options = ReportOptions(
        probe_repeat=probe_repeat,
        require=frozenset(MetricName(r) for r in required),
        kv_baseline=kv_baseline,
        kv_current=kv_current,
        dashboard_url=dashboard_url,
        dual_write_since=dual_write_since,
        history_dir=history_dir,
        evidence_limit=evidence_limit,
    )
    graphql = HttpGraphQL(opened.d1.client.credentials) if isinstance(opened.d1, RemoteD1) else None
    timer = None if opts.snapshot is not None else timer_for(opened.d1)
    try:
        with Progress.for_terminal("kv", quiet=opts.quiet) as progress:
            verification = opened.verification(opts, profile, progress=progress)
            tools = ReportTools(timer=timer, graphql=graphql)
            outcome = run_report(verification, source=opened.source, options=options, tools=tools)
    finally:
        if graphql is not None:
            graphql.close()
    emit(outcome.document, opts)
    # looked up at call time: cmd_probe may still be importing when this module loads
    kv2d1.cmd_probe.append_step_summary(outcome.document)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
