"""``iotsched overload-bench``: premium vs standard latency under standard overload.

The measurement lives in :mod:`bench.overload`; this module only declares the options.
"""

from __future__ import annotations

import argparse
import json

from bench.loadrun import stderr_progress
from bench.overload import OverloadConfig, run_overload
from iotsched.argtypes import non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "overload-bench",
        help="premium vs standard latency under standard overload; preemption latency",
    )
    p.add_argument(
        "--standard-overload", type=positive_float, default=5.0, help="× measured capacity"
    )
    p.add_argument(
        "--premium-rps", type=positive_float, default=2_000.0, help="premium offered rate"
    )
    p.add_argument(
        "--overload-s", type=positive_float, default=4.0, help="length of the overload phase"
    )
    # Two slots by default: one machine's producer can offer 5x one standard slot's rate.
    p.add_argument("--slots", type=positive_int, default=2, help="the region's worker slots")
    p.add_argument(
        "--premium-slots", type=non_negative_int, default=1, help="premium guarantee (slots)"
    )
    p.add_argument(
        "--standard-slots", type=non_negative_int, default=1, help="standard minimum (slots)"
    )
    p.add_argument(
        "--probes", type=non_negative_int, default=20, help="anomaly tasks sent at full load"
    )
    p.add_argument("--batch-readings", type=positive_int, default=5_000, help="micro-batch size")
    p.add_argument("--devices", type=positive_int, default=100_000, help="fleet size")
    p.add_argument("--screening", action="store_true", help="also screen every batch")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument("--timeout-s", type=positive_float, default=120.0, help="give up draining after")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = OverloadConfig(
        redis_url=args.redis_url,
        standard_overload=args.standard_overload,
        premium_rps=args.premium_rps,
        overload_s=args.overload_s,
        slots=args.slots,
        premium_slots=args.premium_slots,
        standard_slots=args.standard_slots,
        probes=args.probes,
        batch_readings=args.batch_readings,
        devices=args.devices,
        screening=args.screening,
        timeout_s=args.timeout_s,
        seed=args.seed,
    )
    summary = run_overload(cfg) if args.json else run_overload(cfg, stderr_progress)
    print(json.dumps(summary, indent=None if args.json else 2))
    counts = summary["counts"]
    return 0 if summary["drained"] and counts["lost"] == 0 and counts["duplicated"] == 0 else 1
