"""`make bench`: how fast, lean and close to the API's limits kv2d1 is as the data grows.

    .venv/bin/python bench/run.py                      # 1k, 10k, 100k, 1M listed KV keys
    .venv/bin/python bench/run.py --quick              # 1k and 10k only (about 3 minutes)
    .venv/bin/python bench/run.py --sizes 1k,100k --out bench/results/bench.json

Sizes count KV keys *listed* (job keys plus ten unrelated keys each); `matched` counts the keys
the profile maps to records in the window. Rates are given per matched record and per listed key.
Every measured job runs in a fresh process (`bench/job.py`, its command is in the table and the
JSON) and reports its peak RSS; the local verify and the naive local script run three times each
and the median run is reported (all three times are in `runs_s`): a local verify that splits its window into two processes reports
the sum of both peaks. Remote jobs talk to the loopback Cloudflare API (`bench/serve.py`, a
separate process, so its memory is not counted).

The rate-limited run enforces the account's real limit, 1,200 requests per 300 s, unscaled
(`--rate-window` scales it down), at the largest remote size, and compares the duration with the
least time that limit allows the requests made (see `limit_bound_s`).

Baselines, in the same run so the figures are ratios: the naive script (`bench/naive.py`: a GET
per key, DeepDiff per payload) locally up to 100k and remotely up to 10k keys; above 10k the
remote one lists every key, reads 1,000 of the matched ones (ten runs spread over the listing)
and extrapolates the rest per key (the row says so). At 1k, the plan's own tooling: `wrangler
kv key get` per key and `wrangler d1 execute --json` per day, each call a fresh wrangler
process (`bench/job.py wrangler-local`; needs `make node`; `--no-wrangler` skips it). Remote
rows also give the floor that the account's real limit (1,200 requests per 300 s) puts under
their request count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from workers import load, parse_size, size_label  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
# The rate-limited run: the account's 1,200 requests per 300 s, enforced by the loopback server
# and honoured by the client, unscaled by default (`--rate-window` scales time down). It runs at
# the largest remote size, where a verify needs more than 1,200 requests, so the limit binds.
RATE_WINDOW_S = 300.0
RATE_MAX = 1200
ACCOUNT_MAX, ACCOUNT_WINDOW_S = 1200, 300.0  # the real API's limit per user
NAIVE_LOCAL_MAX = 100_000
NAIVE_REMOTE_MAX = 10_000  # one GET per key: beyond this, measure a sample and extrapolate
NAIVE_REMOTE_SAMPLE = 1_000  # matched keys
REMOTE_MAX = 1_000_000
REPEAT = 3  # local verify and the naive local script: the median of three runs


def job(args: list[str]) -> tuple[dict[str, Any], str]:
    command = [PY, "bench/job.py", *args]
    shown = " ".join(shlex.quote(a) for a in [".venv/bin/python", *command[1:]])
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shown} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result, shown


def median_job(args: list[str], repeat: int = REPEAT) -> tuple[dict[str, Any], str]:
    """The run of median time out of `repeat` fresh processes (all times kept in `runs_s`):
    the local verify and its naive baseline are timed alike, so their ratio is not one
    machine hiccup."""
    runs = [job(args) for _ in range(repeat)]
    runs.sort(key=lambda run: run[0]["seconds"])
    result, shown = runs[len(runs) // 2]
    result["runs_s"] = [round(r["seconds"], 3) for r, _ in runs]
    return result, shown


class Server:
    def __init__(self, size: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "bench/serve.py", "--size", size], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("bench/serve.py stopped without answering")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def minimum_kv_requests(listed: int, matched: int) -> int:
    return math.ceil(listed / 1000) + math.ceil(matched / 100)


def row(kind: str, size: str, r: dict[str, Any], command: str, **extra: Any) -> dict[str, Any]:
    seconds = r["seconds"]
    out = {
        "job": kind, "size": size, "listed": r.get("listed"), "matched": r.get("matched"),
        "seconds": round(seconds, 3), "process_seconds": round(r["process_seconds"], 3),
        "matched_per_s": per_s(r.get("matched"), seconds),
        "listed_per_s": per_s(r.get("listed"), seconds),
        "peak_rss_mb": r["peak_rss_mb"], "command": command, **extra,
    }
    for key in ("findings", "seeded_found", "seeded_ok", "d1_rows", "requests", "packing",
                "rows_inserted", "apply_seconds", "limited_to", "snapshot_bytes", "differing",
                "days", "wrangler_calls", "wrangler_peak_rss_mb", "wrangler_commands", "runs_s"):
        if key in r:
            out[key] = r[key]
    return out


def per_s(count: int | None, seconds: float) -> float | None:
    """A rate, to two decimals below 10 per second (wrangler's), else whole."""
    if not count:
        return None
    rate = count / seconds
    return round(rate) if rate >= 10 else round(rate, 2)


def remote_figures(r: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    req = r["requests"]
    minimum = minimum_kv_requests(r["listed"], r["matched"])
    kv = req["list"] + req["bulk_get"] + req["get_value"] + req["get_metadata"]
    return {"kv_requests": kv, "kv_minimum": minimum, "kv_ratio": round(kv / minimum, 4),
            "d1_requests": req["d1_query"], "all_requests": req_total(req),
            "account_limit_floor_s": account_floor_s(req_total(req)), "server_saw": counts}


def account_floor_s(requests: int) -> float:
    """Seconds the account's limit alone forces on `requests` (the first window is free)."""
    return max(math.ceil(requests / ACCOUNT_MAX) - 1, 0) * ACCOUNT_WINDOW_S


def req_total(req: dict[str, Any]) -> int:
    return int(sum(v for k, v in req.items() if k not in ("retries", "rate_limited", "waited_s")))


def measure_size(n: int, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    label = size_label(n)
    worker = load(n)
    print(f"== {label}: {worker.meta['kv_keys']:,} keys", flush=True)
    r, cmd = median_job(["verify-local", "--size", label])
    verify = row("verify local", label, r, cmd)
    rows.append(verify)
    if n <= NAIVE_LOCAL_MAX:
        r, cmd = median_job(["naive-local", "--size", label])
        naive = row("naive local (baseline)", label, r, cmd)
        naive["speedup_of_verify"] = round(naive["seconds"] / verify["seconds"], 1)
        verify["speedup_vs_naive"] = naive["speedup_of_verify"]
        rows.append(naive)
    if n == 1000 and not args.no_wrangler:
        wrangler_baseline(rows)
    r, cmd = job(["snapshot-local", "--size", label])
    rows.append(row("snapshot local", label, r, cmd))
    r, cmd = job(["backfill-local", "--size", label])
    rows.append(row("backfill local (verify+apply+re-verify)", label, r, cmd))
    if n > args.remote_max:
        return
    server = Server(label)
    try:
        base = ["--size", label, "--base-url", server.info["base_url"],
                "--database-id", server.info["database_id"]]
        server.ask("counts")
        r, cmd = job(["verify-remote", *base])
        remote = row("verify remote", label, r, cmd, **remote_figures(r, server.ask("counts")))
        rows.append(remote)
        limit = [] if n <= NAIVE_REMOTE_MAX else ["--limit", str(NAIVE_REMOTE_SAMPLE)]
        r, cmd = job(["naive-remote", *base, *limit])
        naive = naive_remote_row(label, r, cmd, server.ask("counts"))
        naive["speedup_of_verify"] = round(naive["seconds"] / remote["seconds"], 1)
        remote["speedup_vs_naive"] = naive["speedup_of_verify"]
        rows.append(naive)
        if n == args.rate_size:
            rows.append(rate_limited_row(server, base, label, args.rate_window))
    finally:
        server.close()


def limit_bound_s(requests: int, window_s: float) -> float:
    """The least time a sliding window of RATE_MAX requests per `window_s` allows `requests`:
    the first RATE_MAX go at once, each further RATE_MAX one window later."""
    return max(math.ceil(requests / RATE_MAX) - 1, 0) * window_s


def rate_limited_row(server: Server, base: list[str], label: str, window_s: float) -> dict[str, Any]:
    """Remote verify with the server enforcing the limit (429 past it) and the client pacing."""
    server.ask(f"limit {RATE_MAX} {window_s}")
    try:
        r, cmd = job(["verify-remote", *base, "--rate", f"{RATE_MAX}/{window_s:g}"])
        figures = remote_figures(r, server.ask("counts"))
    finally:
        server.ask("limit off")
    bound = limit_bound_s(figures["all_requests"], window_s)
    extra: dict[str, Any] = {"limit_bound_s": bound}
    if bound:
        extra["ratio_to_bound"] = round(r["seconds"] / bound, 3)
    else:
        extra["limit_not_binding"] = f"{figures['all_requests']} requests ≤ {RATE_MAX}: no wait is needed"
    scale = "" if window_s == ACCOUNT_WINDOW_S else f" (time scaled {ACCOUNT_WINDOW_S / window_s:g}×)"
    return row(f"verify remote, limit {RATE_MAX} per {window_s:g} s{scale}", label, r, cmd,
               **figures, **extra)


def naive_remote_row(label: str, r: dict[str, Any], command: str,
                     counts: dict[str, Any]) -> dict[str, Any]:
    """The naive remote row; a limited run is extrapolated per matched key to all of them."""
    figures = remote_figures(r, counts)
    sampled, total = r["matched"], r["matched_total"]
    if sampled == total:
        return row("naive remote (baseline)", label, r, command, **figures)
    per_key_s = r["keyed_seconds"] / sampled
    req = r["requests"]
    per_key_requests = (req_total(req) - req["list"]) / sampled
    requests = round(req["list"] + per_key_requests * total)
    figures.update(all_requests_extrapolated=requests,
                   account_limit_floor_s=account_floor_s(requests))
    estimate = {**r, "matched": total, "seconds": r["seconds"] + per_key_s * (total - sampled)}
    return row(f"naive remote (baseline), {sampled:,} of {total:,} keys + extrapolated", label,
               estimate, command, **figures, measured_seconds=round(r["seconds"], 3),
               extrapolated=f"{sampled:,} matched keys in 10 runs spread over the listing "
                            f"(all keys listed), the other {total - sampled:,} at "
                            f"{per_key_s * 1000:.2f} ms each")


def wrangler_baseline(rows: list[dict[str, Any]]) -> None:
    """The plan's own tooling at 1k: `wrangler kv key get` per key, `d1 execute` per day."""
    if not (ROOT / "node_modules" / ".bin" / "wrangler").exists():
        print("wrangler is not installed (make node): skipping its baseline", flush=True)
        return
    r, cmd = job(["wrangler-local", "--size", "1k"])
    out = row("wrangler CLI (baseline)", "1k", r, cmd,
              seconds_per_call=round(r["seconds_per_call"], 3))
    verify = next(x for x in rows if x["job"] == "verify local" and x["size"] == "1k")
    out["speedup_of_verify"] = round(out["seconds"] / verify["seconds"], 1)
    verify["speedup_vs_wrangler"] = out["speedup_of_verify"]
    rows.append(out)


def row_notes(r: dict[str, Any]) -> list[str]:
    notes = []
    if "wrangler_calls" in r:
        notes.append(f"{r['wrangler_calls']} wrangler runs ({r['days']} days), "
                     f"{r['seconds_per_call']} s each, node peak {r['wrangler_peak_rss_mb']} MB")
    if "speedup_of_verify" in r:
        notes.append(f"verify {r['speedup_of_verify']}× faster")
    if "extrapolated" in r:
        notes.append(f"measured {r['measured_seconds']} s for the {r['extrapolated']}")
    if waited := (r.get("requests") or {}).get("waited_s"):
        notes.append(f"client limiter waited {waited} s")
    if r.get("account_limit_floor_s"):
        notes.append(f"≥ {r['account_limit_floor_s']:g} s at the account's "
                     f"{ACCOUNT_MAX:,}/{ACCOUNT_WINDOW_S:g} s")
    return notes


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("job", "size", "listed", "matched", "s", "matched/s", "listed/s", "RSS MB",
            "KV req/min", "×naive", "notes")
    lines = [head]
    for r in rows:
        kvr = f"{r['kv_requests']}/{r['kv_minimum']}" if "kv_requests" in r else ""
        note = ""
        if "ratio_to_bound" in r:
            note = f"bound {r['limit_bound_s']:g} s → {r['ratio_to_bound']}×"
        elif "limit_not_binding" in r:
            note = f"limit does not bind: {r['limit_not_binding']}"
        if r.get("packing"):
            p = r["packing"]
            note = (f"{p['statements_per_request']} stmts/req, {p['rows_per_statement']} rows/stmt"
                    f" of {p['rows_per_statement_allowed']} allowed")
        if r.get("seeded_ok"):
            note = (note + " " if note else "") + f"seeded {r['seeded_found']} found"
        note = "; ".join(n for n in (note, *row_notes(r)) if n)
        lines.append((r["job"], r["size"], f"{r.get('listed') or ''}", f"{r.get('matched') or ''}",
                      f"{r['seconds']}", f"{r.get('matched_per_s') or ''}",
                      f"{r.get('listed_per_s') or ''}", f"{r.get('peak_rss_mb', '')}", kvr,
                      f"{r.get('speedup_vs_naive', '')}", note))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
    print("\nCommands:")
    for r in rows:
        print(f"  [{r['job']} {r['size']}] {r['command']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k,100k,1m")
    parser.add_argument("--quick", action="store_true", help="1k and 10k only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench.json")
    parser.add_argument("--remote-max", type=parse_size, default=REMOTE_MAX)
    parser.add_argument("--rate-size", type=parse_size, help="size of the rate-limited run")
    parser.add_argument("--rate-window", type=float, default=RATE_WINDOW_S,
                        help="seconds per 1,200 requests in the rate-limited run (300: unscaled)")
    parser.add_argument("--no-wrangler", action="store_true")
    args = parser.parse_args()
    sizes = [1000, 10_000] if args.quick else [parse_size(s) for s in args.sizes.split(",")]
    args.rate_size = args.rate_size or max(s for s in sizes if s <= args.remote_max)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in sizes:
        measure_size(n, rows, args)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"generated_by": "bench/run.py " + " ".join(sys.argv[1:]),
                "seconds": round(time.perf_counter() - started, 1),
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "rate_limit": f"{RATE_MAX} per {args.rate_window:g} s, sliding window "
                              f"(the account's is {ACCOUNT_MAX:,} per {ACCOUNT_WINDOW_S:g} s)",
                "rows": rows}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nWrote {args.out} in {document['seconds']} s")


if __name__ == "__main__":
    main()
