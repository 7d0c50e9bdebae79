"""Cost of one accelerated-processing scan at its bounds, on a private redis-server.

``uv run python bench/accelerate_scan.py [--batches 500] [--readings 5000]`` queues
routine batches the way Celery does, then times ``QueueScan.routine_payloads`` (fetch
and decode, within its message and byte bounds) and ``chunks_holding`` for 50 devices.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import redis

from bench.redis_server import private_redis
from bench.sending import bench_publisher, send_batches
from scheduler.model import Batch
from stores.keys import Keys
from stores.queue_scan import QueueScan
from tasks import routine
from tasks.app import broker_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--readings", type=int, default=5_000)
    args = parser.parse_args()
    keys = Keys("bench-scan")
    rng = np.random.default_rng(0)
    with private_redis() as url:
        app = broker_app(url, keys)
        publisher = bench_publisher(app, screening=False)
        n = args.readings
        for i in range(args.batches):
            now = time.time()
            batch = Batch(
                f"b{i}", "eu-west", "standard", ("value",),
                rng.integers(0, 1_000_000, n).astype(np.uint64),
                np.full(n, now), rng.normal(size=(n, 1)), np.full(n, now),
            )  # fmt: skip
            send_batches(publisher, [batch])
        app.close()
        client = redis.Redis.from_url(url)
        devices = rng.integers(0, 1_000_000, 50).tolist()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = QueueScan(client, keys).routine_payloads("eu-west")
            t1 = time.perf_counter()
            chunks = sum(len(routine.chunks_holding(p, devices)) for p in found.payloads)
            t2 = time.perf_counter()
            runs.append((t1 - t0, t2 - t1))
        print(
            json.dumps(
                {
                    "queued_batches": args.batches,
                    "readings_per_batch": n,
                    "scanned_messages": found.scanned_messages,
                    "scanned_mb": round(found.scanned_bytes / 1e6, 1),
                    "truncated": found.truncated,
                    "chunks_holding_50_devices": chunks,
                    "scan_ms_best_of_3": round(1e3 * min(r[0] for r in runs), 1),
                    "find_chunks_ms_best_of_3": round(1e3 * min(r[1] for r in runs), 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
