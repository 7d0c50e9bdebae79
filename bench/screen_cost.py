"""Screening's cost per reading against routine processing's, on a private redis-server.

    uv run python bench/screen_cost.py [--devices 20000] [--batches 20] [--readings 5000]
        [--per-device 1]

Runs the two task handlers a region worker runs (``tasks.screen.handle_screen`` and
``tasks.routine.handle_routine``) on the same 5,000-reading batches of a warmed fleet,
stores on a private Redis, and prints one JSON object: microseconds per reading of each
(median over batches) and their ratio. The ratio says what share of a region's slot
time screening every reading takes: a reading costs screen + routine when admitted, and
screening alone when it is only screened while held back.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from bench.redis_server import private_redis
from runtime.runtime import Runtime, redis_runtime
from scheduler.codec import encode_batch
from scheduler.model import Batch
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from tasks.routine import handle_routine
from tasks.screen import handle_screen

#: Readings per device before timing: the detector's states exist and are warm.
WARM_ROUNDS = 3


def _batches(
    devices: int, batches: int, readings: int, t0: float, per_device: int = 1
) -> list[Batch]:
    rng = np.random.default_rng(0)
    out = []
    distinct = max(1, readings // per_device)
    for i in range(batches):
        ids = np.repeat(
            rng.choice(devices, distinct, replace=False).astype(np.uint64) + 1, per_device
        )
        readings = ids.size
        ts = t0 + i + np.tile(np.arange(per_device) * 0.1 / per_device, distinct)
        values = rng.normal(20.0, 1.0, (readings, 1))
        out.append(Batch(f"b{i}", "eu-west", "standard", ("value",), ids, ts, values, ts))
    return out


def _timed(rt: Runtime, handler: Callable[[Runtime, dict[str, Any]], Any], batch: Batch) -> float:
    payload = encode_batch(batch)
    start = time.perf_counter()
    handler(rt, payload)
    return (time.perf_counter() - start) / len(batch) * 1e6


def measure(
    url: str, devices: int, batches: int, readings: int, per_device: int = 1
) -> dict[str, Any]:
    keys = Keys("bench-screen-cost")
    client = redis.Redis.from_url(url)
    registry = generate_registry(devices, seed=0)
    RedisStateStore(client, keys).save_registry(registry)
    app = broker_app(url, keys)
    rt = redis_runtime(Settings(redis_url=url, key_prefix=keys.prefix), app, client=client)
    readings = min(readings, devices * per_device)
    t0 = time.time() - 3600.0
    ids = registry.device_id
    for r in range(WARM_ROUNDS):
        ts = np.full(ids.size, t0 - 60 + r)
        values = np.full((ids.size, 1), 20.0)
        warm = Batch(f"w{r}", "eu-west", "standard", ("value",), ids, ts, values, ts)
        handle_screen(rt, encode_batch(warm))
    screen_us, routine_us = [], []
    for b in _batches(devices, batches, readings, t0, per_device):
        b.device_id = ids[(b.device_id - 1).astype(np.intp)]
        screen_us.append(_timed(rt, handle_screen, b))
        routine_us.append(_timed(rt, handle_routine, b))
    app.close()
    screen, routine = float(np.median(screen_us)), float(np.median(routine_us))
    return {
        "devices": devices,
        "batches": batches,
        "batch_readings": readings,
        "readings_per_device": per_device,
        "screen_us_per_reading": round(screen, 3),
        "routine_us_per_reading": round(routine, 3),
        "screen_to_routine": round(screen / routine, 3),
        # Slot share screening every reading takes when each reading is screened and
        # processed once: screen / (screen + routine).
        "screen_share": round(screen / (screen + routine), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--readings", type=int, default=5_000)
    parser.add_argument("--per-device", type=int, default=1)
    args = parser.parse_args()
    with private_redis() as url:
        figures = measure(url, args.devices, args.batches, args.readings, args.per_device)
        print(json.dumps(figures, indent=2))
