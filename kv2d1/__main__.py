"""`python -m kv2d1` and the `kv2d1` console script: the command line, interruptible at any moment.

Ctrl-C (SIGINT) ends a run with one line, `Error: interrupted`, and exit 130 (128 + SIGINT, as a
shell reports it) — also while the command line is still being imported. What a run leaves is
already safe to stop at any point: a backfill's ledger and a snapshot's pages are committed as
they go (a rerun resumes), and reports are written only when complete.
"""

from __future__ import annotations

import sys
from typing import Any

EXIT_INTERRUPTED = 130


def _quiet_interrupts(seen: list[BaseException]) -> None:
    """A Ctrl-C that lands inside the import machinery cannot propagate: Python prints it as an
    "Exception ignored" traceback and goes on. Keep it instead, to end the run with one line."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            seen.append(unraisable.exc_value)
        else:
            default(unraisable)

    sys.unraisablehook = hook


def run() -> None:
    ignored: list[BaseException] = []
    _quiet_interrupts(ignored)
    try:
        import click

        from kv2d1.cli import main

        if ignored:
            raise KeyboardInterrupt

        try:
            main.main(prog_name="kv2d1", standalone_mode=False)
        except click.exceptions.Abort as exc:  # click's own word for Ctrl-C: "Aborted!"
            raise KeyboardInterrupt from exc
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("\nError: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    run()
