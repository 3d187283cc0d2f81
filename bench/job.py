"""One measured benchmark job, run by `bench/run.py` in a fresh process; prints one JSON line.

    python bench/job.py verify-local   --size 100k
    python bench/job.py verify-remote  --size 100k --base-url URL [--rate 1200/3]
    python bench/job.py snapshot-local --size 100k
    python bench/job.py backfill-local --size 100k
    python bench/job.py naive-local    --size 100k
    python bench/job.py naive-remote   --size 10k --base-url URL

Each job does what the CLI command does (the same library calls, `--as-of` pinned to the
worker's), times the work itself (`seconds`, after imports and opening the sources) and the
process (`process_seconds`), and reports its peak RSS (`ru_maxrss` of this process = VmHWM).
The verify jobs check the findings against the worker's expected (category, natural key)
pairs and fail loudly on any difference. Remote jobs need `bench/serve.py` serving the worker.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import datetime as dt  # noqa: E402

from workers import BenchWorker, load, parse_size  # noqa: E402

from verifier.d1 import REMOTE_D1_CHUNK  # noqa: E402
from verifier.model import Window  # noqa: E402
from verifier.profile import load_profile  # noqa: E402
from verifier.sources.local import LocalD1, LocalKv  # noqa: E402
from verifier.verify import Verification  # noqa: E402

TOKEN = "cf-test-token-7Hq2ZrX9pLk4Vw1s"  # tests/cfserver.py's
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"


def _now(w: BenchWorker) -> dt.datetime:
    return dt.datetime.fromisoformat(w.meta["now"])


def _window(w: BenchWorker) -> Window:
    return Window(w.meta["window"]["since"], w.meta["window"]["until"])


def _local(w: BenchWorker, *, writable: bool = False, d1_path: Path | None = None):
    now_ms = int(_now(w).timestamp() * 1000)
    kv = LocalKv(w.v3_dir, w.meta["kv_namespace_id"], now_ms=now_ms)
    d1 = LocalD1(d1_path or w.d1_path, readonly=not writable, name="bench")
    return kv, d1


def _remote(w: BenchWorker, base_url: str, rate: str | None):
    from verifier.sources.remote import (
        CloudflareClient,
        RateLimiter,
        RemoteCredentials,
        RemoteD1,
        RemoteKv,
    )

    # Without --rate, no client-side limit: the loopback API enforces none unless told to, and
    # the client's default (the account's 1,200 per 300 s) would time its own sleeps.
    n, window = (rate or f"{10**9}/1").split("/")
    limiter = RateLimiter(max_requests=int(n), window_s=float(window))
    client = CloudflareClient(RemoteCredentials(TOKEN, ACCOUNT, base_url), limiter=limiter)
    return client, RemoteKv(client, w.meta["kv_namespace_id"]), RemoteD1(
        client, w.meta["remote_database_id"], name="bench"
    )


def _check(w: BenchWorker, findings: Sequence[Any]) -> dict[str, Any]:
    found = {(f.category.value, f.natural_key) for f in findings}
    expected = w.expected
    missed, extra = expected - found, found - expected
    if missed or extra:
        raise SystemExit(
            f"verify did not find exactly the seeded defects: missed {sorted(missed)[:5]}, "
            f"extra {sorted(extra)[:5]}"
        )
    return {"findings": len(findings), "seeded_found": len(expected), "seeded_ok": True}


def verify(w: BenchWorker, kv: Any, d1: Any, *, d1_chunk: int | None) -> dict[str, Any]:
    run = Verification(
        kv=kv,
        d1=d1,
        profile=load_profile(),
        window=_window(w),
        now=_now(w),
        d1_chunk=d1_chunk,
    )
    started = time.perf_counter()
    findings = list(run.findings())
    seconds = time.perf_counter() - started
    cov = run.coverage
    return {
        "seconds": seconds,
        "listed": cov.keys_listed,
        "matched": cov.keys_matched,
        "d1_rows": cov.d1_executions + cov.d1_symbol_results + cov.d1_reports,
        **_check(w, findings),
    }


def job_verify_local(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    kv, d1 = _local(w)
    return verify(w, kv, d1, d1_chunk=None)


def job_verify_remote(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    client, kv, d1 = _remote(w, args.base_url, args.rate)
    out = verify(w, kv, d1, d1_chunk=args.d1_chunk)  # as the CLI's --remote
    out["requests"] = client.stats.to_json()
    return out


def job_snapshot_local(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    from verifier.sources.snapshot import capture_snapshot

    kv, d1 = _local(w)
    with tempfile.TemporaryDirectory(prefix="kv2d1-bench-") as tmp:
        path = Path(tmp) / "snapshot.sqlite"
        started = time.perf_counter()
        manifest = capture_snapshot(kv, d1, {"kind": "local"}, path)
        seconds = time.perf_counter() - started
        size = path.stat().st_size
    counts = manifest.counts
    return {
        "seconds": seconds,
        "listed": counts["kv_entries"],
        "matched": counts["kv_entries"],
        "snapshot_bytes": size,
        "counts": counts,
    }


class CountingD1:
    """A D1Source that measures what backfill sends per `execute_batch` (one request remotely):
    statements, parameters (every element handed over), SQL bytes and rows (VALUES tuples)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches = 0
        self.statements = 0
        self.rows_inserted = 0
        self.params: list[int] = []
        self.sql_bytes: list[int] = []
        self.rows_per_statement: list[int] = []
        self.tables: list[str] = []

    def query(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.inner.query(sql, params)

    def describe(self) -> str:
        return self.inner.describe()

    def reopened(self) -> Any:
        """The inner source over a new connection, for the verify's forked process (it only
        reads: writes are counted here, in the process that applies), as the CLI's verify gets."""
        return self.inner.reopened()

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        items = list(statements)
        changes = self.inner.execute_batch(statements)
        self._count(items, changes)
        return changes

    def execute_batch_rows(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[tuple[Any, ...]]]]:
        """Passed through; counted as `execute_batch`, the batch's reads (SELECTs) left out, so
        the packing figures stay those of the inserts."""
        items = list(statements)
        results = self.inner.execute_batch_rows(statements)
        writes = [(item, n) for item, (n, _) in zip(items, results, strict=False)
                  if not _is_read(item[0])]
        self._count([item for item, _ in writes], [n for _, n in writes])
        return results

    def _count(self, items: list[tuple[str, Sequence[Any]]], changes: list[int]) -> None:
        if not any(sql.rstrip().endswith("WHERE 0") for sql, _ in items):
            self.batches += 1
            self.statements += len(items)
            for (sql, params), n in zip(items, changes, strict=False):
                self.params.append(len(params))
                self.sql_bytes.append(len(sql.encode()))
                self.rows_per_statement.append(_values_tuples(sql))
                self.tables.append(sql.split()[2] if sql.upper().startswith("INSERT") else "?")
                self.rows_inserted += n


def _is_read(sql: str) -> bool:
    return sql.lstrip().upper().startswith(("SELECT", "WITH"))


def _values_tuples(sql: str) -> int:
    """The tuples of the statement's VALUES list (1 for an INSERT … SELECT ? … of one row)."""
    start = sql.upper().find("VALUES")
    if start < 0:
        return 1
    tuples = depth = 0
    quoted = False
    for char in sql[start + len("VALUES") :]:
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
            tuples += depth == 1
        elif char == ")":
            depth -= 1
            if depth < 0:  # the end of the list (it sits in brackets: `AS (VALUES …)`)
                break
        elif depth == 0 and char not in " \n\t,":
            break  # the list ended without brackets around it
    return max(tuples, 1)


def packing(d1: CountingD1) -> dict[str, Any]:
    """Statements and rows per request against what 100 parameters / 100 KB per statement allow.

    `fill_of_limits` is rows per statement over the rows a statement may hold (from the mean
    parameters and bytes per row). A statement inserts into one table, so the last one of each
    table in a request is partly empty when its rows run out: `statements_minimum` is the fewest
    statements that could carry the same parameters and bytes, table by table.
    """
    if not d1.statements:
        return {}
    params = sum(d1.params) / d1.statements
    size = sum(d1.sql_bytes) / d1.statements
    rows = sum(d1.rows_per_statement) / d1.statements
    per_row_params, per_row_bytes = params / rows, size / rows
    allowed = min(100 // max(per_row_params, 1), 100_000 // max(per_row_bytes, 1))
    minimum = 0
    for table in set(d1.tables):
        mine = [i for i, t in enumerate(d1.tables) if t == table]
        table_params = sum(d1.params[i] for i in mine)
        table_bytes = sum(d1.sql_bytes[i] for i in mine)
        minimum += max(-(-table_params // 100), -(-table_bytes // 100_000), 1)
    return {
        "requests": d1.batches,
        "statements": d1.statements,
        "rows_inserted": d1.rows_inserted,
        "statements_per_request": round(d1.statements / d1.batches, 2),
        "rows_per_statement": round(rows, 2),
        "params_per_statement": round(params, 1),
        "sql_bytes_per_statement": round(size),
        "rows_per_statement_allowed": int(allowed),
        "fill_of_limits": round(rows / allowed, 4),
        "statements_minimum": minimum,
    }


def job_backfill_local(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from reports.backfill_run import BackfillMode, BackfillOptions, backfill_document

    with tempfile.TemporaryDirectory(prefix="kv2d1-bench-") as tmp:
        copy = Path(tmp) / "d1.sqlite"
        shutil.copy(w.d1_path, copy)
        kv, d1 = _local(w, writable=True, d1_path=copy)
        counting = CountingD1(d1)
        run = Verification(
            kv=kv, d1=counting, profile=load_profile(), window=_window(w), now=_now(w)
        )
        options = BackfillOptions(mode=BackfillMode.APPLY, ledger_dir=Path(tmp) / "ledger")
        started = time.perf_counter()
        doc = backfill_document(run, options=options, source={"kind": "local"})
        seconds = time.perf_counter() - started
    block = doc["backfill"]
    after_missing = sum((block.get("after") or {}).get("missing_in_d1", {}).values())
    if after_missing:
        raise SystemExit(f"backfill left {after_missing} missing_in_d1 findings")
    return {
        "seconds": seconds,
        "apply_seconds": block.get("seconds"),
        "listed": doc["coverage"]["keys_listed"],
        "matched": doc["coverage"]["keys_matched"],
        "rows_inserted": block["rows"]["inserted"]["total"],
        "jobs_applied": block["jobs"]["applied"],
        "packing": packing(counting),
        "after_missing_in_d1": after_missing,
    }


def job_naive_local(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    from naive import naive_verify

    kv, d1 = _local(w)
    return naive_verify(kv, d1, _window(w), limit=args.limit)


def job_naive_remote(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    """The naive script over the loopback API; without `--rate`, no client-side limit.

    The naive script sends one request per key and six per (day, job type): under the
    account's real 1,200 per 300 s it would sleep 300 s after every 1,200 requests; the row's
    `account_limit_floor_s` says how long that would take.
    """
    from naive import naive_verify

    client, kv, d1 = _remote(w, args.base_url, args.rate)
    kv.with_metadata = False
    out = naive_verify(kv, d1, _window(w), limit=args.limit, one_get=kv._read_one)
    out["requests"] = client.stats.to_json()
    return out


def job_wrangler_local(w: BenchWorker, args: argparse.Namespace) -> dict[str, Any]:
    """The naive script with the plan's tooling: a `wrangler` process per key and per day.

    wrangler writes into the state it opens, so it runs on a copy of the worker. Its node
    processes' peak RSS is `wrangler_peak_rss_mb` (this process's children).
    """
    import shutil

    from naive import Wrangler, wrangler_verify

    executable = ROOT / "node_modules" / ".bin" / "wrangler"
    if not executable.exists():
        raise SystemExit(f"{executable} is missing: run `make node` first")
    with tempfile.TemporaryDirectory(prefix="kv2d1-bench-") as tmp:
        copy = Path(tmp) / w.label
        shutil.copytree(w.directory, copy)
        wrangler = Wrangler.for_worker(executable, copy / Path(w.meta["config"]).name)
        out = wrangler_verify(wrangler, _window(w), limit=args.limit)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["wrangler_peak_rss_mb"] = round(children / 1024, 1)
    return out


JOBS = {
    "verify-local": job_verify_local,
    "verify-remote": job_verify_remote,
    "snapshot-local": job_snapshot_local,
    "backfill-local": job_backfill_local,
    "naive-local": job_naive_local,
    "naive-remote": job_naive_remote,
    "wrangler-local": job_wrangler_local,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--size", required=True)
    parser.add_argument("--base-url")
    parser.add_argument("--database-id")
    parser.add_argument("--rate", help="client-side limit N/SECONDS, e.g. 1200/3")
    parser.add_argument("--d1-chunk", type=int, default=REMOTE_D1_CHUNK)
    parser.add_argument("--limit", type=int, help="naive: stop after this many matched keys")
    args = parser.parse_args()
    worker = load(parse_size(args.size), log=lambda m: print(m, file=sys.stderr))
    if args.database_id:
        worker.meta["remote_database_id"] = args.database_id
    result = JOBS[args.job](worker, args)
    result["process_seconds"] = time.perf_counter() - PROCESS_START
    # Both processes of a verify that splits its window: their peaks added (an upper bound).
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb"] = round(own + child, 1)
    result["peak_rss_parts_mb"] = [round(own, 1), round(child, 1)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
