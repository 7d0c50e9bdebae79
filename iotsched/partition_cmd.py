"""``iotsched partition-bench``: a region cut off and healed, with real workers and real Redis.

The scenario lives in :mod:`bench.partition`; this module only declares the options.
"""

from __future__ import annotations

import argparse
import json

from bench.partition import partition_scenario
from bench.redis_server import private_redis
from iotsched.argtypes import positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("partition-bench", help="cut a region off, heal it, print the counts (JSON)")
    p.add_argument("--redis-url", help="use this Redis (default: a private redis-server)")
    p.add_argument("--readings", type=positive_int, default=10_000, help="readings per phase")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with private_redis(args.redis_url) as url:
        result = partition_scenario(url, readings_per_phase=args.readings)
    print(json.dumps(result, indent=2))
    return 0 if result["after_heal"]["lost"] == 0 and result["outside_allowed"] == 0 else 1
