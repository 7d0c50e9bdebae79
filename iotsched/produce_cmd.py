"""``iotsched produce``: a producer against the configured Redis and broker.

Reads JSON readings (one per line) from stdin, or offers a synthetic stream
from the stored registry at a steady rate. Prints progress once a second.
"""

from __future__ import annotations

import argparse
import sys
import time

import redis

from ingest.backlog_gate import admission_gate
from ingest.placement import make_placer
from ingest.producer import Producer
from ingest.regional_publisher import RegionalPublisher
from ingest.synthetic import SyntheticStream
from iotsched.loadrun import drive, offer_singles, stderr_progress
from scheduler.settings import Settings
from scheduler.validation import Limits
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from stores.registry_cache import RegistryCache
from tasks.app import app


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce", help="ingest readings from stdin or a synthetic stream")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--stdin", action="store_true", help="JSON readings, one per line")
    src.add_argument("--rate-rps", type=float, default=10_000, help="synthetic readings/s")
    p.add_argument("--seconds", type=float, default=60.0, help="synthetic stream duration")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    keys = Keys(settings.key_prefix)
    store = RedisStateStore.from_url(settings.redis_url, keys)
    registry = RegistryCache(store)
    # Home region unless it is partitioned or overloaded; never outside residency.
    placer = make_placer(
        store.client,
        keys,
        settings.topology,
        broker_clients={r: redis.Redis.from_url(u) for r, u in settings.region_broker_urls.items()},
    )
    publisher = RegionalPublisher.from_urls(
        app, settings.region_broker_urls, ledger=InflightLedger(store.client, keys)
    )
    # Admission control is on by default: standard readings a region cannot drain within
    # the wait budget are held here and offered again (premium always flows).
    gate = admission_gate(settings, store.client, keys)
    producer = Producer(
        registry.get,
        publisher,
        store,
        limits=Limits(metrics=settings.metrics),
        producer_id=f"produce-{int(time.time())}",
        placer=placer,
        backlog_gate=gate,
    )
    try:
        if args.stdin:
            return _from_stdin(producer)
        stream = SyntheticStream(registry.get(), n_metrics=len(settings.metrics), seed=args.seed)
        res = drive(
            producer,
            stream,
            int(args.rate_rps * args.seconds),
            args.rate_rps,
            2_000,
            None,
            stderr_progress,
        )
        print(
            f"offered {res.offered:,}, accepted {res.accepted:,}, rejected {res.rejected:,}, "
            f"pushed back (and offered again) {res.pushed_back:,}"
        )
        return 0
    finally:
        placer.close()
        publisher.close()


def _from_stdin(producer: Producer, chunk: int = 1_000) -> int:
    lines: list[bytes] = []
    accepted = rejected = 0
    for line in sys.stdin.buffer:
        if line.strip():
            lines.append(line.strip())
        if len(lines) >= chunk:
            a, r = offer_singles(producer, lines)
            accepted, rejected, lines = accepted + a, rejected + r, []
    if lines:
        a, r = offer_singles(producer, lines)
        accepted, rejected = accepted + a, rejected + r
    producer.flush()
    print(f"accepted {accepted:,}, rejected {rejected:,}")
    return 0
