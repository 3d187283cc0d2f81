"""Small worlds for report tests: KV entries of the real shapes, and the D1 a dual-writer made.

`World.create` builds two weeks of the default profile's schedule (analysis, pre-market,
intraday and end-of-day on NYSE trading days, weekly on Sundays) as KV entries, normalises each
with the real normaliser and writes the rows a correct dual-writer would have written into a
SQLite file with the plan's DDL. Methods then seed defects by KV key, so a test names the
records its metrics' evidence must name.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import payload_examples as px
from verifier.calendar import is_trading_day, iter_days
from verifier.d1 import job_row, report_row, symbol_row
from verifier.model import KeyInfo, KvEntry, KvRecord, Window
from verifier.normalise import InvalidPayload, normalise_entry
from verifier.profile import Profile, load_profile, schema_dir
from verifier.verify import Verification

SINCE, UNTIL = "2026-11-10", "2026-11-23"  # Tue … Mon; Sundays 11-15 and 11-22
NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # Tuesday: yesterday (ET) is 11-23


class DictKv:
    """A KV namespace in memory (a `KvSource`)."""

    def __init__(self, entries: dict[str, bytes]) -> None:
        self.entries = entries

    def iter_keys(self, prefix: str = "") -> Iterator[KeyInfo]:
        for key in sorted(self.entries, key=lambda k: k.encode()):
            if key.startswith(prefix):
                yield KeyInfo(key)

    def get_many(self, keys: Sequence[str]) -> Iterator[KvEntry]:
        for key in keys:
            if key in self.entries:
                yield KvEntry(key, self.entries[key])

    def describe(self) -> str:
        return "KV in memory"


class SqliteD1:
    """A D1 database in a SQLite file (a `D1Source`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        return iter(self.conn.execute(sql, tuple(params)).fetchall())

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        changed = []
        with self.conn:
            for sql, params in statements:
                changed.append(self.conn.execute(sql, tuple(params)).rowcount)
        return changed

    def describe(self) -> str:
        return f"D1 file {self.path}"


def kv_entries(since: str = SINCE, until: str = UNTIL) -> dict[str, bytes]:
    """The schedule's KV keys for every day of the window, with realistic payloads."""
    entries: dict[str, bytes] = {}
    for day in iter_days(since, until):
        date = day.isoformat()
        if is_trading_day(day):
            entries[f"analysis_{date}"] = px.kv_value(px.shape_b(date))
            entries[f"pre_market_report_{date}"] = px.kv_value(px.shape_g(date))
            entries[f"intraday_report_{date}"] = px.kv_value(px.shape_i(date))
            entries[f"end_of_day_summary_{date}"] = px.kv_value(px.shape_eod(date))
        elif day.weekday() == 6:
            entries[f"weekly_{date}"] = px.kv_value(px.shape_w(date))
    return entries


@dataclass
class World:
    """KV entries, the D1 file a dual-writer made of them, and the execution id of each key."""

    kv: DictKv
    d1: SqliteD1
    profile: Profile
    execution_of: dict[str, int] = field(default_factory=dict)
    window: Window = field(default_factory=lambda: Window(SINCE, UNTIL))
    now: dt.datetime = NOW

    @classmethod
    def create(cls, directory: Path, *, since: str = SINCE, until: str = UNTIL) -> World:
        d1 = SqliteD1(directory / "d1.sqlite")
        d1.conn.executescript((schema_dir() / "scheduled-jobs.sql").read_text(encoding="utf-8"))
        world = cls(
            DictKv(kv_entries(since, until)),
            d1,
            load_profile("default"),
            window=Window(since, until),
        )
        for key in sorted(world.kv.entries):
            world.execution_of[key] = world.dual_write(world.record(key))
        return world

    def record(self, key: str) -> KvRecord:
        match = self.profile.match(key)
        assert match is not None, key
        record = normalise_entry(KvEntry(key, self.kv.entries[key]), match, self.profile)
        assert not isinstance(record, InvalidPayload), record
        return record

    def dual_write(self, record: KvRecord, *, metadata: str | None = None) -> int:
        """Insert the rows of a record as the plan's adapter would have (its execution id)."""
        row = job_row(record.job, metadata=metadata)
        cur = self.d1.conn.execute(
            f"INSERT INTO job_executions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        execution_id = int(cur.lastrowid or 0)
        for result in record.symbols:
            self._insert("analysis_results", execution_id, symbol_row(result))
        if record.report is not None:
            self._insert("report_snapshots", execution_id, report_row(record.report))
        return execution_id

    def _insert(self, table: str, execution_id: int, row: dict[str, Any]) -> None:
        cols = ["execution_id", *row]
        self.d1.conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (execution_id, *row.values()),
        )

    # --- defects, by KV key ------------------------------------------------------------------

    def drop(self, key: str) -> None:
        """D1 never got this job (the dual-write failed)."""
        execution_id = self.execution_of.pop(key)
        for table in ("analysis_results", "report_snapshots"):
            self.d1.conn.execute(f"DELETE FROM {table} WHERE execution_id = ?", (execution_id,))
        self.d1.conn.execute("DELETE FROM job_executions WHERE id = ?", (execution_id,))

    def backfilled(self, key: str) -> None:
        """The job reached D1 only through kv2d1 backfill (its provenance in `metadata`)."""
        mark = {
            "kv2d1": {
                "tool": "kv2d1",
                "version": "0.1.0",
                "run_id": "r1",
                "kv_key": key,
                "kv_sha256": "0" * 64,
            }
        }
        self.d1.conn.execute(
            "UPDATE job_executions SET metadata = ? WHERE id = ?",
            (json.dumps(mark, sort_keys=True, separators=(",", ":")), self.execution_of[key]),
        )

    def null_symbol_fields(self, key: str) -> None:
        """The plan adapter's `analysis[symbol]` bug: the four per-symbol fields NULL."""
        self.d1.conn.execute(
            "UPDATE analysis_results SET sentiment = NULL, confidence = NULL, direction = NULL, "
            "reasoning = NULL WHERE execution_id = ?",
            (self.execution_of[key],),
        )

    def duplicate(self, key: str) -> None:
        """The job written twice."""
        self.dual_write(self.record(key))

    def set_symbol(self, key: str, symbol: str, **values: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in values)
        self.d1.conn.execute(
            f"UPDATE analysis_results SET {sets} WHERE execution_id = ? AND symbol = ?",
            (*values.values(), self.execution_of[key], symbol),
        )

    def verification(self, **kw: Any) -> Verification:
        return Verification(
            kv=self.kv,
            d1=self.d1,
            profile=self.profile,
            window=kw.pop("window", self.window),
            now=self.now,
            **kw,
        )

    @property
    def source(self) -> dict[str, Any]:
        return {
            "kind": "local",
            "kv_binding": "MARKET_ANALYSIS_CACHE",
            "d1_binding": "PREDICT_JOBS_DB",
            "persist_to": str(self.d1.path.parent),
        }
