"""Screening's cost per reading against routine processing's, on a private redis-server.

    uv run python bench/screen_cost.py [--devices 20000] [--batches 20] [--readings 5000]
        [--per-device 1]

Runs the two task handlers a region worker runs (``tasks.screen.handle_screen`` and
``tasks.routine.handle_routine``) on the same 5,000-reading batches of a warmed fleet,
stores on a private Redis, and prints one JSON object: microseconds per reading of each
(median over batches) and their ratio. The ratio says what share of a region's slot
time screening every reading takes: a reading costs screen + routine when admitted, and
screening alone when it is only screened while held back. Wall time on a loaded machine
is mostly waiting for a core, so CPU time per reading is printed too: the worker's and
the redis-server's.
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
#: Seconds between warm-up readings, which end just before the timed batches: about how
#: often a device comes back in them (a batch a second, a quarter of the fleet in each).
#: A longer gap would make every device's first timed reading a return from silence,
#: folded into silence events and sent as alerts: not the steady state being measured.
WARM_INTERVAL_S = 4.0


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


def _server_cpu_s(client: redis.Redis) -> float:
    info: Any = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _timed(
    rt: Runtime,
    handler: Callable[[Runtime, dict[str, Any]], Any],
    batch: Batch,
    client: redis.Redis,
) -> tuple[float, float, float]:
    """Microseconds per reading: wall time, this process's CPU, the redis-server's CPU.

    The CPU figures hold up on a loaded machine, where wall time mostly says how long
    the two processes waited for a core."""
    payload = encode_batch(batch)
    server_from = _server_cpu_s(client)
    cpu_from, start = time.process_time(), time.perf_counter()
    handler(rt, payload)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_from
    server = _server_cpu_s(client) - server_from
    return wall / len(batch) * 1e6, cpu / len(batch) * 1e6, server / len(batch) * 1e6


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
        ts = np.full(ids.size, t0 - (WARM_ROUNDS - r) * WARM_INTERVAL_S)
        values = np.full((ids.size, 1), 20.0)
        warm = Batch(f"w{r}", "eu-west", "standard", ("value",), ids, ts, values, ts)
        handle_screen(rt, encode_batch(warm))
    screen, routine = [], []
    for b in _batches(devices, batches, readings, t0, per_device):
        b.device_id = ids[(b.device_id - 1).astype(np.intp)]
        screen.append(_timed(rt, handle_screen, b, client))
        routine.append(_timed(rt, handle_routine, b, client))
    app.close()
    # Medians over batches of wall, client CPU, redis-server CPU (us per reading).
    s_wall, s_cpu, s_redis = np.median(np.array(screen), axis=0).tolist()
    r_wall, r_cpu, r_redis = np.median(np.array(routine), axis=0).tolist()
    return {
        "devices": devices,
        "batches": batches,
        "batch_readings": readings,
        "readings_per_device": per_device,
        "screen_us_per_reading": round(s_wall, 3),
        "routine_us_per_reading": round(r_wall, 3),
        "screen_to_routine": round(s_wall / r_wall, 3),
        # Slot share screening every reading takes when each reading is screened and
        # processed once: screen / (screen + routine).
        "screen_share": round(s_wall / (s_wall + r_wall), 3),
        # CPU per reading: the worker's, and what it costs the redis-server.
        "screen_cpu_us_per_reading": {"worker": round(s_cpu, 3), "redis": round(s_redis, 3)},
        "routine_cpu_us_per_reading": {"worker": round(r_cpu, 3), "redis": round(r_redis, 3)},
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
