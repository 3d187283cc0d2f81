"""A run's clock: the one place kv2d1 reads the wall clock.

A run decides its instants once, when it starts, and hands them to every part that asks:

- `as_of` judges the data: which KV keys are alive, what expires within 48 h, which D1 rows are
  orphans, the coverage window, the schedule's "yesterday". It is the wall clock at the start,
  the capture time of a snapshot (a key alive when captured stays alive in the file), or the
  instant `--as-of` names (a reproducible rerun).
- `started` is when the run really began (the wall clock, once): `generated_at`, run ids and the
  `created_at` stamp of the rows a backfill writes.

No other module calls `datetime.now`, `time.time` or SQL's `datetime('now')`: they take a
`RunClock` (or one of its instants) as an argument. Durations (progress rates, the REST rate
limiter, retry back-off) use `time.monotonic`, which says nothing about the date; the HTTP-date
form of `Retry-After` is compared with `wall_seconds`.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from dataclasses import dataclass

from verifier.calendar import parse_instant

__all__ = ["AsOf", "RunClock", "parse_instant_option", "wall_clock", "wall_seconds"]


class AsOf(enum.Enum):
    """Where a run's `as_of` came from (recorded in the JSON report)."""

    CLOCK = "clock"
    OPTION = "option"
    SNAPSHOT = "snapshot"


def wall_clock() -> dt.datetime:
    """The wall clock now, in UTC: called once per run (and by a capture for its end time)."""
    return dt.datetime.now(dt.UTC)


def wall_seconds() -> float:
    """The wall clock now as epoch seconds (an HTTP date in `Retry-After` is compared with it)."""
    return time.time()


@dataclass(frozen=True, slots=True)
class RunClock:
    """The instants of one run: `as_of` judges the data, `started` stamps what the run writes."""

    as_of: dt.datetime
    started: dt.datetime
    basis: AsOf = AsOf.CLOCK

    @classmethod
    def start(
        cls, as_of: dt.datetime | None = None, *, captured_at: dt.datetime | None = None
    ) -> RunClock:
        """Read the wall clock once: `as_of` is the option's instant, else a snapshot's capture
        time, else the wall clock itself."""
        started = wall_clock()
        if as_of is not None:
            return cls(_utc(as_of), started, AsOf.OPTION)
        if captured_at is not None:
            return cls(_utc(captured_at), started, AsOf.SNAPSHOT)
        return cls(started, started, AsOf.CLOCK)

    @classmethod
    def fixed(cls, instant: dt.datetime) -> RunClock:
        """Both instants pinned (library callers and tests that build data around a date)."""
        return cls(_utc(instant), _utc(instant), AsOf.OPTION)

    @property
    def as_of_ms(self) -> int:
        """`as_of` in epoch milliseconds, as miniflare compares expirations."""
        return int(self.as_of.timestamp() * 1000)

    def to_json(self) -> dict[str, str]:
        """The report's `as_of` block: the instant that judged liveness and where it came from."""
        return {"instant": iso(self.as_of), "from": self.basis.value}


def iso(instant: dt.datetime) -> str:
    """An instant as ISO 8601 in UTC, to the second (`2026-11-28T15:00:00+00:00`)."""
    return _utc(instant).isoformat(timespec="seconds")


def parse_instant_option(value: str) -> dt.datetime:
    """An ISO 8601 date-time (`Z` allowed; no zone means UTC) or a date (its midnight UTC);
    ValueError for anything else."""
    parsed = parse_instant(value.strip())
    if parsed is None:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time")
    return parsed


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        return instant.replace(tzinfo=dt.UTC)
    return instant.astimezone(dt.UTC)
