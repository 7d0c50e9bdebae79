"""Memory the dropout sweep keeps for folded devices as the fleet churns, on a private redis-server.

``uv run python -m bench.folded_churn [--outages 5] [--devices-per-outage 900]`` runs
region outages one after another, each of devices new to the fleet: the sweep folds
the outage into one event (remembering each device), then the devices leave the
fleet (their detector states are deleted) and the sweep runs two more passes. Prints,
after each outage, the devices the region still remembers as folded. Before passes
were numbered (``DropoutStore.end_pass``) it grew by every outage's devices.
"""

from __future__ import annotations

import argparse

import numpy as np
import redis

from bench.redis_server import private_redis
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.registry import generate_registry
from stores.detector_store import RedisDetectorStore
from stores.dropout_store import RedisDropoutStore
from stores.keys import Keys
from tasks.dropout import sweep

NOW = 1_700_000_000.0
INTERVAL_S = 10.0
#: Beyond any pass's ids: the stream frontier is recorded on a device of its own.
FRONTIER_DEVICE = 999_999_999


def warm_up(detector: RedisDetectorStore, ids: np.ndarray, last_ts: float, name: str) -> None:
    """States of devices that reported every 10 s, the last time at ``last_ts``."""
    readings = 20
    rows = np.repeat(np.arange(ids.size), readings)
    ts = (np.full(ids.size, last_ts)[:, None] - INTERVAL_S * np.arange(readings)[::-1]).ravel()
    values = np.random.default_rng(0).normal(20.0, 0.5, ts.size)
    loaded = detector.load(name, ids.astype(np.uint64), 1)
    result = screen(fresh_states(ids.size), rows, ts, values, DetectorConfig())
    detector.commit(loaded, result.states, {}, ts.size, 0)


def screened_up_to(detector: RedisDetectorStore, region: str, tier: str, ts: float) -> None:
    """The region's ``tier`` stream screened up to ``ts`` (and nothing since: an outage)."""
    name = f"frontier-{tier}-{ts}"
    ids = np.array([FRONTIER_DEVICE], dtype=np.uint64)
    loaded = detector.load(name, ids, 1)
    if loaded.states is not None:
        detector.commit(loaded, loaded.states, {}, 0, 0, b"", (region, tier, ts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=int, default=5)
    parser.add_argument("--devices-per-outage", type=int, default=900)
    parser.add_argument("--redis-url", help="an existing Redis (default: a private one)")
    args = parser.parse_args()
    n = args.devices_per_outage
    registry = generate_registry(4 * n * args.outages, seed=1, group_size=100)
    region = registry.topology.regions[0]
    mine = registry.device_id[registry.home_region == registry.topology.region_code(region)]
    keys = Keys("bench-folded-churn")
    with private_redis(args.redis_url) as url:
        client = redis.Redis.from_url(url)
        detector = RedisDetectorStore(client, keys)
        store = RedisDropoutStore(client, keys)

        def a_pass(now_ts: float) -> int:
            """Sweeps until a pass ends; the devices they folded."""
            folded = 0
            while True:
                done = sweep(store, registry, region, lambda _: None, now_ts, budget_s=float("inf"))
                folded += done.folded
                if done.passes_finished:
                    return folded

        for k in range(args.outages):
            wave = mine[k * n : (k + 1) * n]
            at = NOW + 10_000.0 * k
            warm_up(detector, wave, at - 60.0, f"warm-{k}")
            for tier in registry.topology.tiers:
                screened_up_to(detector, region, tier, at - 60.0)
            folded = a_pass(at)
            client.delete(*[keys.detector_state(int(d)) for d in wave])
            a_pass(at + 1.0)
            a_pass(at + 2.0)
            remembered = client.zcard(keys.dropout_folded(region))
            print(f"outage {k + 1}: folded {folded}, then gone; remembered as folded {remembered}")
        client.flushdb()


if __name__ == "__main__":
    main()
