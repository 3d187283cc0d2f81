"""Screenshot of the HTML report for the docs: `docs/report.png`.

    python bench/screenshot_report.py                 # the demo's report (runs `kv2d1 demo`)
    python bench/screenshot_report.py --html FILE     # any report page
    python bench/screenshot_report.py --sample        # a built-in sample report (no demo needed)

The page is loaded in headless Chromium (Debian's `chromium`) through its DevTools pipe and
captured whole at 1280 CSS pixels wide. The demo's report is made by `kv2d1 demo DIR` followed
by `kv2d1 report --format html` in DIR; its exit code (ready 0, not ready 3, rollback 4) is
the demo's business, not an error here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reports.chromium import find_chromium, screenshot  # noqa: E402

REPORT_EXIT_CODES = (0, 3, 4)


def kv2d1() -> list[str]:
    """The CLI of this checkout's venv (else the one on PATH)."""
    local = ROOT / ".venv" / "bin" / "kv2d1"
    return [str(local)] if local.exists() else [shutil.which("kv2d1") or "kv2d1"]


def demo_report(directory: Path) -> Path:
    """Build the demo worker in `directory` and render its report as HTML."""
    subprocess.run([*kv2d1(), "demo", str(directory)], check=True, stdout=subprocess.DEVNULL)
    page = directory / "report.html"
    done = subprocess.run(
        [*kv2d1(), "report", "--format", "html", "-o", str(page), "--quiet"], cwd=directory
    )
    if done.returncode not in REPORT_EXIT_CODES or not page.exists():
        raise SystemExit(f"kv2d1 report failed in {directory} (exit {done.returncode})")
    return page


def sample_report(directory: Path) -> Path:
    """A report of the tests' two-week world with a few seeded defects and one earlier run."""
    import dataclasses

    from reports.formats import render_html
    from reports.probe import LocalTimer
    from reports.report_run import ReportOptions, ReportTools, run_report
    from tests.reports.datasets import World

    world = World.create(directory)
    world.drop("intraday_report_2026-11-18")
    world.drop("analysis_2026-11-12")
    options = ReportOptions(probe_repeat=5, history_dir=directory / "history")
    tools = ReportTools(timer=LocalTimer(world.d1))
    run_report(world.verification(), source=world.source, options=options, tools=tools)
    world.dual_write(world.record("analysis_2026-11-12"))
    world.null_symbol_fields("analysis_2026-11-19")
    world.backfilled("analysis_2026-11-10")
    later = dataclasses.replace(world, now=world.now.replace(hour=16))
    doc = run_report(
        later.verification(), source=later.source, options=options, tools=tools
    ).document
    page = directory / "report.html"
    page.write_text(render_html(doc), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--html", type=Path, help="the report page to capture")
    source.add_argument("--sample", action="store_true", help="capture a built-in sample report")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--max-height", type=int, default=2600, help="0: the whole page")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("error: headless Chromium is needed: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="kv2d1-shot-") as tmp:
        if args.html:
            page = args.html.resolve()
        elif args.sample:
            page = sample_report(Path(tmp))
        else:
            page = demo_report(Path(tmp) / "demo-worker")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        height = screenshot(
            chromium,
            page.as_uri(),
            args.output,
            width=args.width,
            max_height=args.max_height or None,
        )
    print(f"wrote {args.output} ({args.width}×{height} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
