"""Serve a cached bench worker through the loopback Cloudflare API (tests/cfserver.py).

    python bench/serve.py --size 100k

Loads the worker's KV and D1 into the stub, prints one JSON line (`base_url`, `database_id`),
then obeys commands on stdin, one per line, each answered with one JSON line:
`counts` (requests by kind since the last `counts`), `limit N SECONDS` (enforce N requests per
sliding window of SECONDS real seconds; `limit off` removes it). EOF stops the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from workers import load, parse_size  # noqa: E402

from tests.cfserver import ACCOUNT, TOKEN, CloudflareStub, ServerRateLimit, serve  # noqa: E402
from tests.remote_loading import load_remote_copy  # noqa: E402
from verifier.sources.local import LocalD1, LocalKv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", required=True)
    args = parser.parse_args()
    worker = load(parse_size(args.size), log=lambda m: print(m, file=sys.stderr))
    stub = CloudflareStub(token=TOKEN, account_id=ACCOUNT)
    started = time.perf_counter()
    now_ms = int(dt.datetime.fromisoformat(worker.meta["now"]).timestamp() * 1000)
    with (
        LocalKv(worker.v3_dir, worker.meta["kv_namespace_id"], now_ms=now_ms) as kv,
        LocalD1(worker.d1_path) as d1,
    ):
        copy = load_remote_copy(
            stub, kv, d1, namespace_id=worker.meta["kv_namespace_id"], database_name="bench"
        )
    with serve(stub):
        print(json.dumps({"base_url": stub.base_url, "database_id": copy.database_id,
                          "keys": copy.keys, "load_s": round(time.perf_counter() - started, 1)}),
              flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["counts"]:
                counts = dict(stub.counts())
                statuses: dict[str, int] = {}
                for entry in stub.log:
                    statuses[str(entry.status)] = statuses.get(str(entry.status), 0) + 1
                stub.log.clear()
                print(json.dumps({"kinds": counts, "statuses": statuses}), flush=True)
            elif words[:1] == ["limit"]:
                stub.rate_limit = (
                    None if words[1] == "off"
                    else ServerRateLimit(max_requests=int(words[1]), window_s=float(words[2]))
                )
                print(json.dumps({"limit": words[1:]}), flush=True)


if __name__ == "__main__":
    main()
