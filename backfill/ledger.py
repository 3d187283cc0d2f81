"""The run ledger of a backfill: what a run announced and did.

The ledger is one JSON-lines file per run (`<ledger dir>/<run id>.jsonl`):

| event | written | holds |
|---|---|---|
| `started` | before the first job (fsync) | run id, mode (`apply`/`sql-out`), target, window, `stamped` |
| `batch` | before its request, with its `job` lines (fsync) | first seq, jobs, rows, statements |
| `job` | before its batch's request (fsync) | rows it will insert (natural keys), max ids, batch |
| `done` | after the commit | the rows it did insert, with their row ids |
| `resumed` | when a killed run starts again | time |
| `finished` / `reverted` | at the end (fsync) | counts |

A batch (one request, one transaction) holds several jobs; each `job` line names its batch by
the seq of the batch's first job. A run killed between the `job` lines of a batch and their
`done` lines is reconciled when it resumes (or is reverted) by `backfill.lookup`: an execution
is the run's when its `metadata` names the run id; a child row added to an execution D1 already
had is the run's when it has an intended natural key, an id above the max id recorded before the
batch and a `created_at` that ends in the run's stamp (`backfill.plan.Provenance.stamp`; for a
run whose `started` line lacks `stamped`, begun before the stamp, a `created_at` close to the
`job` line's time).

`backfill.apply` writes the ledger; `backfill.revert` reads it to undo a run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.clock import wall_clock
from verifier.errors import BackfillError
from verifier.files import PRIVATE_MODE

LEDGER_SUFFIX = ".jsonl"
SQL_TIME = "%Y-%m-%d %H:%M:%S"  # the form of SQLite's datetime('now'), as in `created_at`


def new_run_id(started: dt.datetime) -> str:
    """A sortable, unique run id: the run's start in UTC and random hex (no `_` or `%`, safe in
    patterns). Its time is the `created_at` of the run's child rows (`Provenance.created_at`)."""
    return f"{started.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_now() -> str:
    """When a ledger line is written, in the form of SQLite's `datetime('now')` (`SQL_TIME`).

    A log's time, read from `verifier.clock`: it records when each step happened and judges
    nothing (liveness and urgency follow the run's `as_of`)."""
    return wall_clock().strftime(SQL_TIME)


# --- the ledger ----------------------------------------------------------------------------


class Ledger:
    """The JSON-lines record of one run; lines are appended, never rewritten."""

    def __init__(self, path: Path, run_id: str, *, last_seq: int = 0) -> None:
        self.path = path
        self.run_id = run_id
        self._seq = last_seq

    def next_seq(self) -> int:
        """Job numbers run on across a resumed run's segments, so `done` lines pair up."""
        self._seq += 1
        return self._seq

    @classmethod
    def resume(cls, run: LedgerRun) -> Ledger:
        last = max((int(e["seq"]) for e in run.events if e.get("event") == "job"), default=0)
        _drop_cut_line(run.path)  # a kill mid-write: the next line must start on its own
        ledger = cls(run.path, run.run_id, last_seq=last)
        ledger.append({"event": "resumed", "at": utc_now()}, sync=True)
        return ledger

    @classmethod
    def create(cls, directory: Path, run_id: str, started: dict[str, Any]) -> Ledger:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackfillError(
                f"cannot create the ledger directory {directory}: {exc.strerror}; "
                "choose another with --ledger-dir"
            ) from exc
        ledger = cls(directory / f"{run_id}{LEDGER_SUFFIX}", run_id)
        try:  # owner-only: its lines name KV keys and rows (as snapshots and reports are)
            os.close(os.open(ledger.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE))
        except OSError as exc:
            raise BackfillError(f"cannot write the run ledger {ledger.path}: {exc.strerror}") from exc
        first = {"event": "started", "run_id": run_id, "at": utc_now(), "stamped": True, **started}
        ledger.append(first, sync=True)
        return ledger

    def append(self, event: dict[str, Any], *, sync: bool = False) -> None:
        """One line; `sync` makes it durable before what it announces happens."""
        self.append_many([event], sync=sync)

    def append_many(self, events: list[dict[str, Any]], *, sync: bool = False) -> None:
        """Lines in one write (and with `sync`, one fsync)."""
        lines = [json.dumps(e, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                 for e in events]
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write("".join(line + "\n" for line in lines))
                out.flush()
                if sync:
                    os.fsync(out.fileno())
        except OSError as exc:
            raise BackfillError(f"cannot write the run ledger {self.path}: {exc.strerror}") from exc

    def finish(self, event: str = "finished", **info: Any) -> None:
        """The run's last line: `finished` (or `reverted`), durable."""
        self.append({"event": event, "at": utc_now(), **info}, sync=True)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.path)


def _drop_cut_line(path: Path) -> None:
    """Cut a last line a kill left unfinished (no newline) off the file.

    Its event never completed: `job` lines are written before their batch is sent, so the
    batch was not; a cut `done` line leaves its jobs to reconciling, as a missing one does.
    """
    try:
        with path.open("rb+") as ledger:
            data = ledger.read()
            if data and not data.endswith(b"\n"):
                ledger.truncate(data.rfind(b"\n") + 1)
                ledger.flush()
                os.fsync(ledger.fileno())
    except OSError as exc:
        raise BackfillError(f"cannot repair the run ledger {path}: {exc.strerror}") from exc


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a ledger file; a line cut short by a kill (the last one) is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BackfillError(f"cannot read the run ledger {path}: {exc.strerror}") from exc
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise BackfillError(f"run ledger {path} is damaged at line {number}") from exc
    return events


@dataclass(frozen=True)
class LedgerRun:
    """A run as its ledger tells it."""

    run_id: str
    path: Path
    events: tuple[dict[str, Any], ...]

    @property
    def started(self) -> dict[str, Any]:
        return self.events[0] if self.events and self.events[0].get("event") == "started" else {}

    @property
    def mode(self) -> str:
        return str(self.started.get("mode", "apply"))

    @property
    def stamped(self) -> bool:
        """Whether the run's child rows carry its stamp in `created_at` (runs started by a
        kv2d1 from before the stamp do not: `backfill.lookup` falls back to their time)."""
        return bool(self.started.get("stamped"))

    @property
    def target(self) -> str | None:
        return self.started.get("target")

    @property
    def state(self) -> str:
        kinds = {e.get("event") for e in self.events}
        return next((s for s in ("reverted", "finished") if s in kinds), "started")

    def jobs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Each `job` event with its `done` event (None when the run stopped in between)."""
        done = {e["seq"]: e for e in self.events if e.get("event") == "done"}
        for event in self.events:
            if event.get("event") == "job":
                yield event, done.get(event["seq"])


def load_run(directory: Path, run_id: str) -> LedgerRun:
    path = directory / f"{run_id}{LEDGER_SUFFIX}"
    if not path.is_file():
        raise BackfillError(
            f"no ledger for run {run_id} in {directory}: pass the --ledger-dir the run used"
        )
    return LedgerRun(run_id, path, tuple(read_events(path)))


def find_unfinished(directory: Path, target: str) -> LedgerRun | None:
    """The newest run on `target` that started applying and neither finished nor was reverted."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob(f"*{LEDGER_SUFFIX}"), reverse=True):
        first, last = _first_and_last(path)
        started = first.get("event") == "started" and first.get("mode") == "apply"
        ended = last.get("event") in ("finished", "reverted")
        if started and first.get("target") == target and not ended:
            return LedgerRun(path.stem, path, tuple(read_events(path)))
    return None


def _first_and_last(path: Path, tail: int = 65536) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ledger's first and last complete events, without reading a long ledger whole."""
    try:
        with path.open("rb") as handle:
            first_line = handle.readline()
            handle.seek(max(0, path.stat().st_size - tail))
            lines = handle.read().splitlines()
    except OSError as exc:
        raise BackfillError(f"cannot read the run ledger {path}: {exc.strerror}") from exc
    events = []
    for line in (first_line, *reversed(lines)):
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut short by a kill, or the middle of one
            continue
        if len(events) == 2:
            break
    first = events[0] if events else {}
    return first, events[-1] if len(events) > 1 else first


@dataclass(frozen=True)
class InsertedRow:
    """A row one run inserted, as the ledger records it."""

    table: str
    natural_key: str
    key: str | None
    rowid: int
    execution_id: int | None
    parent: str  # "new": under an execution the same batch inserted; "existing": D1 had it

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "natural_key": self.natural_key, "key": self.key,
            "rowid": self.rowid, "execution_id": self.execution_id, "parent": self.parent,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InsertedRow:
        return cls(d["table"], d["natural_key"], d.get("key"), int(d["rowid"]),
                   d.get("execution_id"), d.get("parent", "existing"))
