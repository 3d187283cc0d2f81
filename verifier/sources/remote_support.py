"""What a remote write needs around it: D1 Time Travel's bookmark as the rollback point.

Before a remote backfill writes, it records the database's current Time Travel bookmark and
prints the command that restores it (`wrangler d1 time-travel restore`), so the write can be
undone as a whole within the plan's retention (30 days Paid, 7 days Free).
"""

from __future__ import annotations

import shlex

from verifier.sources.remote import RemoteD1


def restore_command(database: str, bookmark: str) -> str:
    """The wrangler command that restores `database` to `bookmark` (shell-quoted)."""
    return (
        f"wrangler d1 time-travel restore {shlex.quote(database)} "
        f"--bookmark {shlex.quote(bookmark)}"
    )


def record_time_travel_bookmark(d1: RemoteD1, database_name: str | None = None) -> tuple[str, str]:
    """The current bookmark of `d1` and the command that restores it: `(bookmark, command)`.

    `database_name` is the name wrangler knows the database by (`database_name` in the
    config); without it the client's name, else the database id, is used. One API request; an
    `ApiError` if the bookmark cannot be read — a backfill must not write without it.
    """
    bookmark = d1.time_travel_bookmark()
    database = database_name or d1.name or d1.database_id
    return bookmark, restore_command(database, bookmark)
