"""``iotsched storm-bench``: a reconnect flood on real workers, with the default settings.

The measurement lives in :mod:`bench.storm`; this module only declares the options.
"""

from __future__ import annotations

import argparse
import json

from bench.loadrun import stderr_progress
from bench.storm import StormConfig, run_storm
from iotsched.argtypes import non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "storm-bench", help="a reconnect flood on real workers: premium p99, incidents"
    )
    d = StormConfig()
    p.add_argument("--devices", type=positive_int, default=d.devices, help="fleet size")
    p.add_argument(
        "--rate-rps", type=positive_float, default=d.rate_rps, help="rate before the outage"
    )
    p.add_argument(
        "--warm-s", type=positive_float, default=d.warm_s, help="seconds before the outage"
    )
    p.add_argument("--silence-s", type=positive_float, default=d.silence_s, help="outage length")
    p.add_argument("--resume-rps", type=positive_float, default=d.resume_rps, help="rate after it")
    p.add_argument("--resume-s", type=positive_float, default=d.resume_s, help="seconds after it")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = StormConfig(
        devices=args.devices,
        rate_rps=args.rate_rps,
        warm_s=args.warm_s,
        silence_s=args.silence_s,
        resume_rps=args.resume_rps,
        resume_s=args.resume_s,
        seed=args.seed,
    )
    summary = run_storm(args.redis_url, cfg, None if args.json else stderr_progress)
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0 if summary["drained"] and summary["lost"] == 0 else 1
