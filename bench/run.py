"""`make bench`: how fast, lean and close to the API's limits kv2d1 is as the data grows.

    .venv/bin/python bench/run.py                      # 1k, 10k, 100k, 1M listed KV keys
    .venv/bin/python bench/run.py --quick              # 1k and 10k only (about 2 minutes)
    .venv/bin/python bench/run.py --sizes 1k,100k --out bench/results/bench.json

Sizes count KV keys *listed* (job keys plus ten unrelated keys each); `matched` counts the keys
the profile maps to records in the window. Rates are given per matched record and per listed key.
Every measured job runs in a fresh process (`bench/job.py`, its command is in the table and the
JSON) and reports its own peak RSS. Remote jobs talk to the loopback Cloudflare API
(`bench/serve.py`, a separate process, so its memory is not counted).
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
RATE_WINDOW_S = 3.0  # 1,200 per 300 s scaled 100×: 1,200 per 3 s
RATE_MAX = 1200
NAIVE_LOCAL_MAX = 100_000
NAIVE_REMOTE_MAX = 1_000
REMOTE_MAX = 100_000


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
        return json.loads(line)

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
        "matched_per_s": round(r["matched"] / seconds) if r.get("matched") else None,
        "listed_per_s": round(r["listed"] / seconds) if r.get("listed") else None,
        "peak_rss_mb": r["peak_rss_mb"], "command": command, **extra,
    }
    for key in ("findings", "seeded_found", "seeded_ok", "d1_rows", "requests", "packing",
                "rows_inserted", "apply_seconds", "limited_to", "snapshot_bytes"):
        if key in r:
            out[key] = r[key]
    return out


def remote_figures(r: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    req = r["requests"]
    minimum = minimum_kv_requests(r["listed"], r["matched"])
    kv = req["list"] + req["bulk_get"] + req["get_value"] + req["get_metadata"]
    return {"kv_requests": kv, "kv_minimum": minimum, "kv_ratio": round(kv / minimum, 4),
            "d1_requests": req["d1_query"], "all_requests": req_total(req),
            "server_saw": counts}


def req_total(req: dict[str, Any]) -> int:
    return int(sum(v for k, v in req.items() if k not in ("retries", "rate_limited", "waited_s")))


def measure_size(n: int, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    label = size_label(n)
    worker = load(n)
    print(f"== {label}: {worker.meta['kv_keys']:,} keys", flush=True)
    r, cmd = job(["verify-local", "--size", label])
    verify = row("verify local", label, r, cmd)
    rows.append(verify)
    if n <= NAIVE_LOCAL_MAX:
        r, cmd = job(["naive-local", "--size", label])
        naive = row("naive local (baseline)", label, r, cmd)
        naive["speedup_of_verify"] = round(naive["seconds"] / verify["seconds"], 1)
        verify["speedup_vs_naive"] = naive["speedup_of_verify"]
        rows.append(naive)
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
        if n <= NAIVE_REMOTE_MAX:
            r, cmd = job(["naive-remote", *base])
            naive = row("naive remote (baseline)", label, r, cmd, **{
                "all_requests": req_total(r["requests"]), "server_saw": server.ask("counts")})
            naive["speedup_of_verify"] = round(naive["seconds"] / remote["seconds"], 1)
            remote["speedup_vs_naive"] = naive["speedup_of_verify"]
            rows.append(naive)
        if n == args.rate_size:
            server.ask(f"limit {RATE_MAX} {RATE_WINDOW_S}")
            rate = f"{RATE_MAX}/{RATE_WINDOW_S:g}"
            r, cmd = job(["verify-remote", *base, "--rate", rate])
            figures = remote_figures(r, server.ask("counts"))
            bound = figures["all_requests"] / RATE_MAX * RATE_WINDOW_S
            rows.append(row(f"verify remote, limit {RATE_MAX} per {RATE_WINDOW_S:g} s", label,
                            r, cmd, **figures, limit_bound_s=round(bound, 3),
                            ratio_to_bound=round(r["seconds"] / bound, 3)))
            server.ask("limit off")
    finally:
        server.close()


def wrangler_baseline(rows: list[dict[str, Any]], sample: int = 20, days: int = 5) -> None:
    """The plan's own tooling at 1k: `wrangler kv key get` per key, `d1 execute` per day."""
    wrangler = ROOT / "node_modules" / ".bin" / "wrangler"
    if not wrangler.exists():
        print("wrangler is not installed (make node): skipping its baseline", flush=True)
        return
    worker = load(1000)
    sys.path.insert(0, str(ROOT))
    from verifier.profile import load_profile
    from verifier.sources.local import LocalKv
    profile = load_profile()
    with LocalKv(worker.v3_dir, worker.meta["kv_namespace_id"]) as kv:
        keys = [i.name for i in kv.iter_keys() if profile.match(i.name)]
    dates = sorted({profile.match(k).date for k in keys})  # type: ignore[union-attr]
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "WRANGLER_HIDE_BANNER": "true",
           "CLOUDFLARE_CF_FETCH_ENABLED": "false"}
    persist = str(worker.directory / ".wrangler" / "state")
    common = ["--local", "--persist-to", persist, "--config", worker.meta["config"]]

    def timed(commands: list[list[str]]) -> tuple[float, str]:
        started = time.perf_counter()
        for c in commands:
            subprocess.run(c, cwd=worker.directory, env=env, check=True, capture_output=True)
        return (time.perf_counter() - started) / len(commands), shlex.join(commands[0])

    step = max(len(keys) // sample, 1)
    per_key, key_cmd = timed([[str(wrangler), "kv", "key", "get", k, "--binding",
                               "MARKET_ANALYSIS_CACHE", "--text", *common]
                              for k in keys[::step][:sample]])
    per_day, day_cmd = timed([[str(wrangler), "d1", "execute", "DB", "--json", "--command",
                               f"SELECT * FROM job_executions WHERE execution_date = '{d}'", *common]
                              for d in dates[:days]])
    total = per_key * len(keys) + per_day * len(dates)
    rows.append({"job": "wrangler CLI (baseline, extrapolated)", "size": "1k",
                 "listed": worker.meta["kv_keys"], "matched": len(keys),
                 "seconds": round(total, 1), "matched_per_s": round(len(keys) / total, 2),
                 "sample": f"{sample} keys ({per_key:.2f} s each) and {days} days "
                           f"({per_day:.2f} s each), extrapolated to {len(keys)} keys and "
                           f"{len(dates)} days; D1 side is one execute per day",
                 "command": f"{key_cmd}   |   {day_cmd}"})


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("job", "size", "listed", "matched", "s", "matched/s", "listed/s", "RSS MB",
            "KV req/min", "×naive", "notes")
    lines = [head]
    for r in rows:
        kvr = f"{r['kv_requests']}/{r['kv_minimum']}" if "kv_requests" in r else ""
        note = ""
        if "ratio_to_bound" in r:
            note = f"bound {r['limit_bound_s']} s → {r['ratio_to_bound']}×"
        if r.get("packing"):
            p = r["packing"]
            note = (f"{p['statements_per_request']} stmts/req, {p['rows_per_statement']} rows/stmt"
                    f" of {p['rows_per_statement_allowed']} allowed")
        if r.get("seeded_ok"):
            note = (note + " " if note else "") + f"seeded {r['seeded_found']} found"
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
    parser.add_argument("--no-wrangler", action="store_true")
    args = parser.parse_args()
    sizes = [1000, 10_000] if args.quick else [parse_size(s) for s in args.sizes.split(",")]
    args.rate_size = args.rate_size or max(s for s in sizes if s <= args.remote_max)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in sizes:
        measure_size(n, rows, args)
    if 1000 in sizes and not args.no_wrangler:
        wrangler_baseline(rows)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"generated_by": "bench/run.py " + " ".join(sys.argv[1:]),
                "seconds": round(time.perf_counter() - started, 1),
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "rate_limit_scale": f"{RATE_MAX} per {RATE_WINDOW_S:g} s (1,200 per 300 s × 100)",
                "rows": rows}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nWrote {args.out} in {document['seconds']} s")


if __name__ == "__main__":
    main()
