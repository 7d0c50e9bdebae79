"""Cost of the dropout sweep on a private redis-server: one sweep and a full pass.

``uv run python bench/dropout_sweep.py [--devices 200000]`` stores warmed-up detector
states for a one-region fleet (1 % of it silent for 10 minutes), then runs sweeps of
the default size (``tasks.dropout.MAX_PAGES`` pages of ``PAGE_SIZE``) until a pass
over every state finishes, and prints the per-sweep time and the devices alerted.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import redis

from bench.redis_server import private_redis
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.geography import DEFAULT_SITES
from scheduler.registry import generate_registry
from stores.detector_store import RedisDetectorStore
from stores.dropout_store import RedisDropoutStore
from stores.keys import Keys
from tasks.dropout import sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200_000)
    args = parser.parse_args()
    site = DEFAULT_SITES[0]
    registry = generate_registry(args.devices, seed=0, sites=(site,))
    ids = registry.device_id.astype(np.uint64)
    now = time.time()
    silent = np.random.default_rng(0).random(ids.size) < 0.01
    last_ts = np.where(silent, now - 600.0, now - 5.0)
    keys = Keys("bench-dropout")
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        detector = RedisDetectorStore(client, keys)
        readings = 8
        for lo in range(0, ids.size, 50_000):
            part = slice(lo, lo + 50_000)
            n = ids[part].size
            rows = np.repeat(np.arange(n), readings)
            ts = (last_ts[part][:, None] - 10.0 * np.arange(readings)[::-1]).ravel()
            values = np.random.default_rng(lo).normal(20.0, 0.5, ts.size)
            result = screen(fresh_states(n), rows, ts, values, DetectorConfig())
            warm = detector.load(f"warm-{lo}", ids[part], 1)
            detector.commit(warm, result.states, {}, ts.size, 0)
        store = RedisDropoutStore(client, keys)
        alerted = 0
        times = []
        while True:
            t0 = time.perf_counter()
            res = sweep(store, registry, site.name, lambda p: None, now)
            times.append(time.perf_counter() - t0)
            alerted += res.alerts
            if res.passes_finished:
                break
        print(
            json.dumps(
                {
                    "devices": int(ids.size),
                    "silent": int(silent.sum()),
                    "alerted": alerted,
                    "sweeps_per_pass": len(times),
                    "sweep_ms_median": round(1e3 * float(np.median(times)), 1),
                    "sweep_ms_max": round(1e3 * max(times), 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
