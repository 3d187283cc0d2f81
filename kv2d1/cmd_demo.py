"""`kv2d1 demo [DIR]`: a realistic local worker with seeded defects, then verify → backfill → report."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import click

from kv2d1.cli import CommonOptions, main, open_sources, translate_errors
from reports.backfill_run import BackfillMode, BackfillOptions, backfill_document
from reports.document import collect
from reports.formats import EXTRA_RENDERERS
from reports.probe import timer_for
from reports.render import OutputFormat
from reports.report_run import ReportOptions, ReportTools, run_report
from reports.runs import verify_document
from verifier.calendar import is_trading_day, today_et
from verifier.clock import RunClock
from verifier.errors import Kv2d1Error
from verifier.model import Window
from verifier.profile import Profile, load_profile
from verifier.synth import generate, write_worker
from verifier.verify import Verification

MARKER = ".kv2d1-demo"


def _last_trading_day_before(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while not is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day


def _prepare(directory: Path) -> None:
    """An empty directory for the worker; a previous demo there is replaced, nothing else is."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise Kv2d1Error(
                f"{directory} exists and is not a kv2d1 demo; give another directory: kv2d1 demo DIR"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `kv2d1 demo`; the next demo here replaces it\n")


def _options(config: Path, window: Window, now: dt.datetime) -> CommonOptions:
    """Every step judges the worker as of the instant it was made (one clock for the demo)."""
    return CommonOptions(
        config=config, env=None, kv_binding=None, d1_binding=None, remote=False, persist_to=None,
        snapshot=None, preview=None, window=window, fmt=None, output=None, profile="default",
        quiet=True, as_of=now,
    )  # fmt: skip


def _verification(
    opts: CommonOptions, profile: Profile, *, writable: bool = False
) -> Verification:
    return open_sources(opts, profile, writable=writable).verification(opts, profile)


def _counts(summary_by_category: dict[str, int]) -> str:
    shown = [f"{n} {c}" for c, n in summary_by_category.items() if n]
    return ", ".join(shown) if shown else "no findings"


@main.command()
@click.argument(
    "directory", type=click.Path(file_okay=False, path_type=Path), default="demo-worker"
)
@click.option(
    "--business-days",
    type=click.IntRange(10, 2000),
    default=60,
    show_default=True,
    help="How many trading days of jobs the worker holds.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated data.")
@translate_errors
def demo(directory: Path, business_days: int, seed: int) -> None:
    """Build a realistic local worker with seeded defects, then run verify → backfill → report.

    The worker (wrangler.toml and wrangler's local KV and D1 state) holds about 60 trading days
    of the five job types across the payload shapes, dual-written to D1 with one or more defects
    of every finding category (listed in DIR/SEEDED_DEFECTS.json). The HTML report is written
    to DIR/report.html.

    Example: kv2d1 demo demo-worker
    """
    now = RunClock.start().as_of
    until = _last_trading_day_before(dt.date.fromisoformat(today_et(now)))
    _prepare(directory)
    click.echo(
        f"1. Building a local worker in {directory}/ ({business_days} trading days up to {until})"
    )
    worker = generate(until=until, business_days=business_days, seed=seed, now=now)
    files = write_worker(directory, worker)
    window = files.window
    click.echo(
        f"   {files.kv_keys} KV keys in {files.kv_binding}, "
        f"{sum(files.d1_rows.values())} D1 rows in {files.d1_database_name}, "
        f"{len(files.seeded)} seeded defects ({files.seeded_file.name})"
    )
    opts = _options(files.config, window, now)
    profile = load_profile()
    span = f"--since {window.since} --until {window.until}"

    click.echo(f"2. kv2d1 verify {span}")
    doc, _, summary = verify_document(_verification(opts, profile), source={})
    click.echo(f"   {summary.total} findings: {_counts(doc['summary']['by_category'])}")

    click.echo(f"3. kv2d1 backfill {span}")
    ledger = directory / ".kv2d1" / "runs"
    options = BackfillOptions(
        mode=BackfillMode.APPLY, ledger_dir=ledger, database=files.d1_database_name
    )
    bdoc = backfill_document(
        _verification(opts, profile, writable=True), options=options, source={}
    )
    click.echo(f"   {bdoc['backfill']['message']}")

    click.echo(f"4. kv2d1 verify {span}  (after the backfill)")
    after, _ = collect(_verification(opts, profile).findings())
    by_category: dict[str, int] = {}
    for f in after:
        by_category[f.category.value] = by_category.get(f.category.value, 0) + 1
    click.echo(
        f"   {len(after)} findings: {_counts(by_category)} (backfill never overwrites: mismatches stay for a human)"
    )

    click.echo(f"5. kv2d1 report {span} --format html -o {directory}/report.html")
    opened = open_sources(opts, profile)
    verification = opened.verification(opts, profile)
    outcome = run_report(
        verification, source=opened.source, options=ReportOptions(probe_repeat=10),
        tools=ReportTools(timer=timer_for(opened.d1), graphql=None),
    )  # fmt: skip
    html = directory / "report.html"
    html.write_text(EXTRA_RENDERERS[OutputFormat.HTML](outcome.document), encoding="utf-8")
    click.echo(f"   verdict: {outcome.document['verdict']} — open {html.resolve()}")
    click.echo("")
    click.echo("Rerun any step yourself:")
    click.echo(f"  cd {directory}")
    click.echo(f"  kv2d1 verify {span} --format text")
    click.echo(f"  kv2d1 backfill {span} --dry-run")
    click.echo(f"  kv2d1 report {span} --format html -o report.html")
