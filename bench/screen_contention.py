"""Screening workers that share devices, at once, on a private redis-server.

    uv run python -m bench.screen_contention [--workers 2] [--devices 2000]
        [--batches 40] [--readings 1000] [--regions 1]

Starts ``--workers`` processes that each run the screening task's handler
(``tasks.screen.handle_screen``) on their own batches drawn from one small fleet, so
most batches share devices with a batch another process is screening at that moment.
With ``--regions`` N, worker w screens region w mod N, over that region's own slice of
the fleet: regions share no device, so their commits collide on nothing but the shared
detector-write count (what re-reading states on a moved count costs).
Prints one JSON object: readings screened, the readings each device's state counts
(``lost_steps``: the difference, steps lost to a later commit written over an earlier
one), the commits refused and screened again (``screen_collisions``), and CPU per
reading of the worker processes and of the redis-server, which hold up on a loaded
machine where wall time does not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from typing import Any

import numpy as np
import redis

from bench.redis_server import private_redis
from runtime.runtime import redis_runtime
from scheduler.codec import encode_batch
from scheduler.detector_state import COUNT, unpack_states
from scheduler.errors import TransientError
from scheduler.model import Batch
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from tasks.screen import handle_screen

KEYS = Keys("bench-screen-contention")


REGIONS = ("eu-west", "us-east", "ap-south")


def _batches(
    worker: int, devices: int, batches: int, readings: int, regions: int = 1
) -> list[Batch]:
    """One worker's batches: distinct devices of its region's slice within a batch, every
    batch a second apart."""
    rng = np.random.default_rng(worker)
    t0 = time.time() - 3600.0
    region = worker % regions
    per_region = devices // regions
    out = []
    for i in range(batches):
        picked = rng.choice(per_region, readings, replace=False) + region * per_region
        ids = picked.astype(np.uint64) + 1
        ts = np.full(readings, t0 + i + worker * 0.01)
        values = rng.normal(20.0, 1.0, (readings, 1))
        batch_id = f"w{worker}-b{i}"
        out.append(Batch(batch_id, REGIONS[region], "standard", ("value",), ids, ts, values, ts))
    return out


def _screen(
    url: str,
    worker: int,
    devices: int,
    batches: int,
    readings: int,
    start_ts: float,
    regions: int = 1,
) -> tuple[float, int]:
    """Runs in a worker process: its batches through the handler, from ``start_ts`` on
    (every worker at once); its CPU seconds and the readings of batches handed back to
    Celery (``StatesContended``: too many collisions in a row)."""
    client = redis.Redis.from_url(url)
    app = broker_app(url, KEYS)
    rt = redis_runtime(Settings(redis_url=url, key_prefix=KEYS.prefix), app, client=client)
    payloads = [encode_batch(b) for b in _batches(worker, devices, batches, readings, regions)]
    time.sleep(max(0.0, start_ts - time.time()))
    handed_back = 0
    cpu_from = time.process_time()
    for payload in payloads:
        try:
            handle_screen(rt, payload)
        except TransientError:
            handed_back += readings
    cpu = time.process_time() - cpu_from
    app.close()
    return cpu, handed_back


def _server_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(
    url: str, workers: int, devices: int, batches: int, readings: int, regions: int = 1
) -> dict[str, Any]:
    client: Any = redis.Redis.from_url(url)
    RedisStateStore(client, KEYS).save_registry(generate_registry(devices, seed=0))
    server_from = _server_cpu_s(client)
    ctx = multiprocessing.get_context("spawn")
    # Every worker starts screening at this moment, once its process is up.
    start_ts = time.time() + 5.0
    with ctx.Pool(workers) as pool:
        done = pool.starmap(
            _screen,
            [(url, w, devices, batches, readings, start_ts, regions) for w in range(workers)],
        )
    server = _server_cpu_s(client) - server_from
    names = [KEYS.detector_state(d) for d in range(1, devices + 1)]
    counted = float(unpack_states(client.mget(names))[:, COUNT].sum())
    cpu = [c for c, _ in done]
    handed_back = sum(h for _, h in done)
    screened = workers * batches * readings - handed_back
    return {
        "workers": workers,
        "regions": regions,
        "devices": devices,
        "batch_readings": readings,
        "readings_screened": screened,
        "readings_handed_back": handed_back,
        "readings_in_states": int(counted),
        "lost_steps": int(screened - counted),
        # Commits refused because a device's state changed since the load (screened again).
        "screen_collisions": int(client.hget(KEYS.counters, "screen_collisions") or 0),
        # Mostly a waiter's looks at the turn another batch holds; take_turn, give_turn
        # and the registry's version check GET too.
        "redis_get_calls": int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)),
        "cpu_us_per_reading": {
            "workers": round(sum(cpu) / screened * 1e6, 3),
            "redis": round(server / screened * 1e6, 3),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--readings", type=int, default=1_000)
    parser.add_argument("--regions", type=int, default=1, choices=range(1, len(REGIONS) + 1))
    args = parser.parse_args()
    with private_redis() as url:
        figures = measure(
            url, args.workers, args.devices, args.batches, args.readings, args.regions
        )
        print(json.dumps(figures, indent=2))
