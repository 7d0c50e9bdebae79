"""The producer's own cost: CPU per reading at a paced rate, and the rate it reaches.

    uv run python -m bench.producer_rate [--rate-rps 500000] [--seconds 5]
        [--gate open|closed] [--devices 20000] [--profile FILE]

Feeds pre-generated synthetic chunks (the stream's own cost is not measured) through
the ``Producer`` a bench builds (the bench's publisher with the in-flight ledger),
publishing to a private redis-server that no worker reads; the harness empties its
broker lists and ledger every second instead. Paced as ``iotsched bench`` paces its
gateway (5 ms of readings per call) at ``--rate-rps``, or as fast as it goes with
``--rate-rps 0``. ``--gate open`` admits every reading: each is routed, batched,
published with its screening copy. ``--gate closed`` has every region past its backlog:
premium is admitted, the rest are pushed back and screened while held, as a spike
past capacity does to most of them. Premium coalescing is off: with no worker, the
premium lists would only grow, and hold every premium batch.

Prints one JSON object: the rate reached, CPU microseconds per reading of the producer
process and of redis-server, and the producer's CPU share of one core (what it takes
from the workers on a shared machine; steadier than wall-clock figures under load).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import time
from typing import Any

import numpy as np
import redis

from bench.redis_server import private_redis
from bench.sending import bench_publisher
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.model import WorkClass, queue_name, screen_queue_kind
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from scheduler.validation import Limits
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app

#: Distinct pre-generated chunks cycled through (their event times shifted each round).
CHUNKS = 50
#: Readings per call when paced: 5 ms of the rate, as the bench's gateway offers them.
STEP_S = 0.005
CHUNK_MAX = 20_000


def measure(
    url: str,
    rate_rps: float,
    seconds: float,
    gate: str,
    devices: int,
    profile: str | None = None,
) -> dict[str, Any]:
    keys = Keys("bench-producer-rate")
    client = redis.Redis.from_url(url)
    store = RedisStateStore(client, keys)
    store.save_registry(generate_registry(devices, seed=0))
    registry = store.load_registry()
    assert registry is not None
    settings = Settings(redis_url=url, key_prefix=keys.prefix)
    app = broker_app(url, keys)
    closed = np.full(len(settings.regions), gate == "closed")
    producer = Producer(
        lambda: registry,
        bench_publisher(app, ledger=InflightLedger(client, keys)),
        store,
        limits=Limits(metrics=settings.metrics),
        backlog_gate=lambda: closed,
    )
    lists = _lists(keys, settings)
    chunk = CHUNK_MAX if rate_rps <= 0 else max(1, min(CHUNK_MAX, int(rate_rps * STEP_S)))
    stream = SyntheticStream(registry, seed=0)
    t0 = time.time()
    pieces = [stream.chunk(chunk, t0) for _ in range(CHUNKS)]
    redis_cpu0 = _redis_cpu_s(client)
    profiler = cProfile.Profile() if profile else None
    offered = pushed_back = calls = 0
    start, cpu0 = time.time(), time.process_time()
    emptied_at = start
    if profiler is not None:
        profiler.enable()
    while (now := time.time()) - start < seconds:
        if rate_rps > 0 and offered + chunk > (now - start) * rate_rps:
            producer.poll(now)
            time.sleep(STEP_S / 5)
            continue
        ids, ts, values = pieces[calls % CHUNKS]
        res = producer.ingest_columns(ids, ts + (now - t0), values, now_ts=now)
        offered += len(ids)
        pushed_back += res.pushed_back
        calls += 1
        if now - emptied_at >= 1.0:
            emptied_at = now
            client.unlink(*lists)
    producer.flush()
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    wall_s = time.time() - start
    cpu_s = time.process_time() - cpu0
    redis_cpu_s = _redis_cpu_s(client) - redis_cpu0
    app.close()
    return {
        "gate": gate,
        "rate_rps": rate_rps,
        "devices": devices,
        "chunk": chunk,
        "offered": offered,
        "pushed_back": pushed_back,
        "published_batches": producer.link.published_batches,
        "seconds": round(wall_s, 3),
        "offered_rps": round(offered / wall_s, 1),
        "producer_cpu_share": round(cpu_s / wall_s, 3),
        "producer_cpu_us_per_reading": round(cpu_s / max(offered, 1) * 1e6, 3),
        "redis_cpu_us_per_reading": round(redis_cpu_s / max(offered, 1) * 1e6, 3),
    }


def _lists(keys: Keys, settings: Settings) -> list[str]:
    """Every broker list the producer fills, and the in-flight ledger."""
    kinds = [*settings.tiers, screen_queue_kind(0), screen_queue_kind(1), WorkClass.ANOMALY.value]
    queues = [queue_name(r, k) for r in settings.regions for k in kinds]
    return [keys.broker_queue(q) for q in queues] + [keys.inflight, keys.inflight_since]


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-rps", type=float, default=500_000, help="0: as fast as it goes")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gate", choices=("open", "closed"), default="open")
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--profile", help="write a cProfile of the producer loop here")
    args = parser.parse_args()
    with private_redis() as url:
        figures = measure(url, args.rate_rps, args.seconds, args.gate, args.devices, args.profile)
        print(json.dumps(figures))
