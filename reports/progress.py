"""A one-line progress display on stderr: count done, rate, ETA; redrawn at most 5 times a second.

`Progress` is the `progress(stage, done)` callback that `Verification` and `capture_snapshot`
take. It draws only when enabled — the CLI enables it when stderr is a terminal and `--quiet`
is not given — so logs, pipes and stdout never see a carriage return.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

MIN_INTERVAL_S = 0.2


class Progress:
    """`\\r{stage}: {done}/{total} {unit}, {rate}/s, ETA {eta}` on stderr, throttled.

    Without a total the line is `{stage}: {done} {unit}, {rate}/s`; `units` names the unit of
    particular stages (`{"job_executions": "rows"}`), `unit` the rest. The rate counts from the
    first report of a stage, so a resumed run is not credited with work done before it. A new
    stage ends the line of the previous one; `close()` ends the last.
    """

    def __init__(
        self,
        stage: str,
        total: int | None = None,
        *,
        enabled: bool,
        unit: str = "keys",
        units: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self.stage = stage
        self.total = total
        self.enabled = enabled
        self.unit = unit
        self._units = dict(units or {})
        self._stream = stream
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._first: tuple[float, int] | None = None
        self._done = 0
        self._drawn_at: float | None = None
        self._drawn_done: int | None = None
        self._width = 0

    @classmethod
    def for_terminal(
        cls,
        stage: str,
        total: int | None = None,
        *,
        quiet: bool,
        unit: str = "keys",
        units: Mapping[str, str] | None = None,
    ) -> Progress:
        """Enabled when stderr is a terminal and not `quiet`."""
        enabled = not quiet and sys.stderr.isatty()
        return cls(stage, total, enabled=enabled, unit=unit, units=units)

    def __call__(self, stage: str, done: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if stage != self.stage:
            self._end_line()
            self.stage, self.total, self._first, self._drawn_at = stage, None, None, None
        if self._first is None:
            self._first = (now, done)
        self._done = done
        if self._drawn_at is None or now - self._drawn_at >= self._min_interval_s:
            self._draw(now)

    def close(self) -> None:
        """Draw the final count (if a report was held back) and end the line."""
        if self.enabled and self._first is not None and self._drawn_done != self._done:
            self._draw(self._clock())
        self._end_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def line(self, now: float) -> str:
        """The text of the line at `now` (without the carriage return)."""
        start, base = self._first or (now, self._done)
        elapsed = now - start
        rate = (self._done - base) / elapsed if elapsed > 0 else None
        count = f"{self._done:,}" if self.total is None else f"{self._done:,}/{self.total:,}"
        unit = self._units.get(self.stage, self.unit)
        text = f"{self.stage}: {count} {unit}, {_rate(rate)}/s"
        if self.total is not None:
            left = max(self.total - self._done, 0)
            eta = left / rate if rate else None
            text += f", ETA {_duration(eta)}"
        return text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        padding = " " * max(self._width - len(text), 0)  # wipe the rest of a longer line
        self._write(f"\r{text}{padding}")
        self._width, self._drawn_at, self._drawn_done = len(text), now, self._done

    def _end_line(self) -> None:
        if self.enabled and self._width:
            self._write("\n")
        self._width, self._drawn_done = 0, None

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


def _rate(rate: float | None) -> str:
    if rate is None:
        return "?"
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def _duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` when unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
