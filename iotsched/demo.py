"""``iotsched demo``: the whole data path for a few seconds, then a summary table.

With no ``--redis-url`` it needs no services: kombu's in-memory transport, an
in-process worker and an in-memory store. With ``--redis-url`` the same run
uses real Redis and one real ``celery worker`` process per region.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from bench.loadrun import drive, stderr_progress, summarize, wait_drained
from ingest.synthetic import SyntheticStream, bad_readings
from iotsched.argtypes import non_negative_int, positive_float, positive_int
from scheduler.registry import generate_registry
from scheduler.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the data path for a few seconds and print a summary")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="how long to offer load (s)")
    p.add_argument(
        "--rate-rps", type=positive_float, default=20_000, help="readings per second offered"
    )
    p.add_argument("--devices", type=positive_int, default=100_000, help="fleet size")
    p.add_argument("--redis-url", help="use this Redis and real worker processes")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.rate_rps <= 0 or args.devices <= 0:
        raise SystemExit("demo: --seconds, --rate-rps and --devices must be positive")
    readings = int(args.seconds * args.rate_rps)
    bad_every_s = 1.0
    state = {"next_bad": 0.0}

    def extra(now: float) -> list[Any]:
        # A handful of malformed readings each second shows the dead-letter path.
        if now < state["next_bad"]:
            return []
        state["next_bad"] = now + bad_every_s
        return list(bad_readings(now, ("value",)))

    if args.redis_url:
        summary = _run_on_redis(args, readings, extra)
    else:
        summary = _run_embedded(args, readings, extra)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


def _run_embedded(args: argparse.Namespace, readings: int, extra: Any) -> dict[str, Any]:
    from ingest.celery_publisher import CeleryPublisher
    from ingest.producer import Producer
    from iotsched.embedded import embedded_worker
    from stores.memory_state import MemoryStateStore

    settings = Settings()
    store = MemoryStateStore()
    registry = generate_registry(args.devices, seed=args.seed)
    store.save_registry(registry)
    snapshot = store.load_registry()
    assert snapshot is not None
    stderr_progress(f"embedded mode: in-memory broker and store, {args.devices:,} devices")
    with embedded_worker(settings, store) as app:
        producer = Producer(lambda: snapshot, CeleryPublisher(app), store)
        stream = SyntheticStream(snapshot, seed=args.seed)
        result = drive(producer, stream, readings, args.rate_rps, 2_000, extra, stderr_progress)
        _, done = wait_drained(store, timeout_s=120, progress=stderr_progress)
    return {"mode": "embedded", **summarize(store, settings.tiers, result, done)}


def _run_on_redis(args: argparse.Namespace, readings: int, extra: Any) -> dict[str, Any]:
    from bench.redis_run import RedisRun

    prefix = f"iotsched-demo-{uuid.uuid4().hex[:8]}"
    with RedisRun(args.redis_url, prefix, args.devices, seed=args.seed) as run:
        result = drive(
            run.producer, run.stream(), readings, args.rate_rps, 2_000, extra, stderr_progress
        )
        _, done = wait_drained(run.store, timeout_s=300, progress=stderr_progress)
        return {"mode": "redis", **summarize(run.store, run.settings.tiers, result, done)}


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        ("mode", s.get("mode", "")),
        ("readings offered", f"{s['readings']:,}"),
        ("accepted", f"{s['accepted']:,}"),
        ("processed", f"{s['processed']:,}"),
        ("dead-lettered", f"{s['dead_lettered']:,}"),
        ("lost", f"{s['lost']:,}"),
        ("duplicated", f"{s['duplicated']:,}"),
        ("seconds", f"{s['seconds']:.2f}"),
        ("throughput", f"{s['throughput_rps']:,.0f} readings/s"),
    ]
    for tier, lat in s["latency_ms"].items():
        p50, p99 = lat["p50"], lat["p99"]
        rows.append(
            (f"{tier} latency", "-" if p50 is None else f"p50 {p50:.1f} ms   p99 {p99:.1f} ms")
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
