"""``iotsched scale``, ``iotsched supervise`` and ``iotsched scale-bench``.

- ``scale --region R``: the replicas region R needs now, from its workers'
  autoscaler figures (a bare number, or ``--compose`` for ``docker compose``).
- ``supervise``: run a local fleet (worker processes per region with
  ``--autoscale MAX,MIN``), add and drain workers, publish desired replicas.
- ``scale-bench``: reaction time, drain time and steady wastage on a real
  worker, as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from iotsched.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from scheduler.errors import ConfigError
from scheduler.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scale", help="print the worker replicas a region needs now")
    p.add_argument("--region", required=True)
    p.add_argument("--max-slots", type=positive_int, default=4, help="pool slots per worker (MAX)")
    p.add_argument("--min-replicas", type=non_negative_int, default=1)
    p.add_argument("--max-replicas", type=positive_int, default=16)
    p.add_argument("--compose", action="store_true", help="print docker compose --scale args")
    p.set_defaults(func=run_scale)

    p = sub.add_parser("supervise", help="run and scale local worker processes per region")
    p.add_argument("--regions", default=None, help="comma-separated (default: IOTSCHED_REGIONS)")
    p.add_argument("--autoscale", default="4,1", metavar="MAX,MIN", help="pool bounds per worker")
    p.add_argument("--min-replicas", type=non_negative_int, default=1)
    p.add_argument("--max-replicas", type=positive_int, default=4)
    p.add_argument("--interval-s", type=positive_float, default=1.0)
    p.add_argument("--drain-timeout-s", type=non_negative_float, default=30.0)
    # --seconds, as on produce and demo; --duration-s is kept (hidden) for old scripts.
    p.add_argument(
        "--seconds", type=positive_float, default=None, help="stop after (default: never)"
    )
    p.add_argument("--duration-s", dest="seconds", type=positive_float, help=argparse.SUPPRESS)
    p.set_defaults(func=run_supervise)

    p = sub.add_parser("scale-bench", help="autoscaler reaction and wastage on a real worker")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--region", default="eu-west")
    p.add_argument("--autoscale", default="4,1", metavar="MAX,MIN")
    p.add_argument("--window-s", type=positive_float, default=4.0, help="scale-down window (short)")
    p.add_argument(
        "--refresh-s", type=positive_float, default=0.1, help="autoscaler refresh period"
    )
    p.add_argument("--batch-readings", type=positive_int, default=2_000)
    p.add_argument("--steady-s", type=positive_float, default=10.0)
    p.add_argument(
        "--steady-load", type=positive_float, default=0.9, help="× one slot's service rate"
    )
    p.add_argument("--burst-batches", type=positive_int, default=300)
    p.add_argument("--trace", action="store_true", help="include every pool heartbeat")
    p.set_defaults(func=run_bench)


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"8,1"`` → (8, 1), as ``celery worker --autoscale`` reads it."""
    max_text, _, min_text = text.partition(",")
    try:
        high, low = int(max_text), int(min_text or 0)
    except ValueError as exc:
        raise ConfigError(f"--autoscale wants MAX,MIN, got {text!r}") from exc
    if not 0 <= low <= high or high < 1:
        raise ConfigError(f"--autoscale wants 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return high, low


def run_scale(args: argparse.Namespace) -> int:
    from stores.connection import connect
    from stores.keys import Keys
    from stores.pool_heartbeats import PoolHeartbeats
    from workers.pool_refresher import heartbeat_fresh_s
    from workers.supervisor import FleetConfig, compose_scale_args, desired_replicas

    settings = Settings.from_env()
    if args.region not in settings.regions:
        raise ConfigError(
            f"unknown region {args.region!r}; configured: {', '.join(settings.regions)}"
            " (IOTSCHED_REGIONS)"
        )
    cfg = FleetConfig(
        regions=(args.region,),
        max_slots=args.max_slots,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    client = connect(settings.redis_url)
    beats = PoolHeartbeats(client, Keys(settings.key_prefix)).read()
    wanted = desired_replicas(
        args.region, beats.values(), cfg, time.time(), heartbeat_fresh_s(settings)
    )
    if wanted is None:
        print(f"iotsched scale: no live autoscaler reports for {args.region}", file=sys.stderr)
        return 1
    print(compose_scale_args({args.region: wanted}) if args.compose else wanted)
    return 0


def run_supervise(args: argparse.Namespace) -> int:
    from tasks.app import make_app
    from workers.supervisor import FleetConfig, Supervisor, compose_scale_args, supervise

    settings = Settings.from_env()
    regions = tuple(args.regions.split(",")) if args.regions else settings.regions
    if unknown := sorted(set(regions) - set(settings.regions)):
        raise ConfigError(
            f"unknown region {', '.join(unknown)}; configured: {', '.join(settings.regions)}"
            " (IOTSCHED_REGIONS)"
        )
    high, low = parse_autoscale(args.autoscale)
    cfg = FleetConfig(
        regions=regions,
        max_slots=high,
        min_slots=low,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        drain_timeout_s=args.drain_timeout_s,
    )
    sup = Supervisor(settings, cfg, make_app())

    def report(replicas: dict[str, int]) -> None:
        line = {"at_ts": round(time.time(), 3), "replicas": replicas}
        print(json.dumps(line), "#", "docker compose up -d", compose_scale_args(replicas))
        sys.stdout.flush()

    try:
        supervise(sup, args.interval_s, args.seconds, report)
    finally:
        sup.stop()
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from bench.scale import BenchConfig, run_bench
    from bench.worker_launch import WaitTimedOut

    high, low = parse_autoscale(args.autoscale)
    cfg = BenchConfig(
        redis_url=args.redis_url,
        region=args.region,
        max_slots=high,
        min_slots=low,
        scale_down_window_s=args.window_s,
        refresh_s=args.refresh_s,
        batch_readings=args.batch_readings,
        steady_s=args.steady_s,
        steady_load=args.steady_load,
        burst_batches=args.burst_batches,
        trace=args.trace,
    )
    try:
        result = run_bench(cfg)
    except WaitTimedOut as exc:
        print(f"scale-bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=None if args.trace else 2))
    return 0
