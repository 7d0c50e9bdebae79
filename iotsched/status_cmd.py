"""``iotsched status``: queue depths, counters, latency and recent dead letters at a glance."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from iotsched.argtypes import key_prefix_option, non_negative_int
from scheduler.latency import percentile_ms
from scheduler.settings import Settings
from stores.connection import RedisClient, connect
from stores.keys import Keys
from stores.queue_depth import fold_lengths, queue_lengths
from stores.redis_state import RedisStateStore
from workers.profiles import region_queues


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show queue depths, counters and latency")
    p.add_argument("--redis-url", help="Redis to read (default IOTSCHED_REDIS_URL)")
    key_prefix_option(p)
    p.add_argument(
        "--dead-letters", type=non_negative_int, default=5, help="recent dead letters to show"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def collect(
    client: RedisClient, keys: Keys, settings: Settings, dead_letters: int = 5
) -> dict[str, Any]:
    """Queue depths, counters, latency, region heartbeats and recent dead letters."""
    store = RedisStateStore(client, keys)
    queues = [
        q
        for r in settings.regions
        for role in ("data", "maintenance")
        for q in region_queues(r, role)
    ]
    pipe = client.pipeline(transaction=False)
    queue_lengths(pipe, keys, queues)
    pipe.hgetall(keys.heartbeats)
    pipe.hgetall(keys.lane_heartbeats)
    replies = pipe.execute()
    depth, beats, lanes = fold_lengths(replies[:-1], queues), replies[-2], replies[-1]
    latency = {}
    for tier in settings.tiers:
        h = store.latency_histogram("ingest", tier)
        latency[tier] = {"p50_ms": percentile_ms(h, 50), "p99_ms": percentile_ms(h, 99)}
    return {
        "queues": depth,
        "counters": store.counters(),
        "latency": latency,
        # Per role: a live premium lane beside a dead data worker takes premium work only.
        "heartbeats": {k.decode(): float(v) for k, v in beats.items()},
        "lane_heartbeats": {k.decode(): float(v) for k, v in lanes.items()},
        "dead_letters": [
            {"reason": d.reason, "detail": d.detail, "source": d.source, "at_ts": d.at_ts}
            for d in (store.dead_letters(dead_letters) if dead_letters > 0 else [])
        ],
    }


def heartbeat_lines(out: dict[str, Any], regions: Sequence[str], now_ts: float) -> list[str]:
    """One line per region: the age of its data role's and its premium lane's last beat."""

    def age(ts: float | None) -> str:
        return "never" if ts is None else f"{now_ts - ts:.1f} s ago"

    return [
        f"{region:<20} data {age(out['heartbeats'].get(region)):<14}"
        f" premium lane {age(out['lane_heartbeats'].get(region))}"
        for region in regions
    ]


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    keys = Keys(args.key_prefix or settings.key_prefix)
    client = connect(args.redis_url or settings.redis_url)
    out = collect(client, keys, settings, args.dead_letters)
    depth, latency = out["queues"], out["latency"]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print("queue depth (messages)")
    for q, n in depth.items():
        print(f"  {q:<28} {n:>8,}")
    print("counters")
    for k, v in sorted(out["counters"].items()):
        print(f"  {k:<28} {v:>12,}")
    print("latency, ingest → processed")
    for tier, lat in latency.items():
        if lat["p50_ms"] is None:
            print(f"  {tier:<28} -")
        else:
            print(f"  {tier:<28} p50 {lat['p50_ms']:.1f} ms  p99 {lat['p99_ms']:.1f} ms")
    print("region heartbeats per role (age; data drains every queue, the lane premium only)")
    for line in heartbeat_lines(out, settings.regions, time.time()):
        print(f"  {line}")
    print("recent dead letters (all of them: iotsched deadletters list)")
    for d in out["dead_letters"]:
        print(f"  {d['reason']:<20} {d['source']:<18} {d['detail'][:60]}")
    return 0
