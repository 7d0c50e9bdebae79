"""``iotsched bench``: real Redis, real worker processes, a synthetic fleet; one JSON object.

The measurement lives in :mod:`bench.throughput`; this module only declares the options.
"""

from __future__ import annotations

import argparse
import json

from bench.loadrun import stderr_progress
from bench.throughput import ThroughputConfig, run_throughput
from iotsched.argtypes import non_negative_int, positive_float, positive_int, share


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure throughput and latency on real Redis and workers")
    p.add_argument("--readings", type=positive_int, default=1_000_000, help="readings to offer")
    p.add_argument("--devices", type=positive_int, default=1_000_000, help="fleet size")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument(
        "--concurrency", type=positive_int, default=1, help="pool processes per region worker"
    )
    p.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    p.add_argument(
        "--rate-rps", type=positive_float, default=None, help="pace the producer (default: max)"
    )
    p.add_argument("--batch-readings", type=positive_int, default=5_000, help="micro-batch size")
    p.add_argument("--chunk", type=positive_int, default=20_000, help="readings per gateway chunk")
    p.add_argument(
        "--spike-share",
        type=share,
        default=1e-4,
        help="share of readings given an injected spike once devices are warm (detector warm-up)",
    )
    p.add_argument(
        "--anomaly-share",
        type=share,
        default=1e-4,
        help="share of readings that start an injected anomaly of each kind in turn, at 3-8 "
        "noise widths, judged for recall and false alerts (detection_quality)",
    )
    p.add_argument(
        "--pattern",
        help="pace by a named load pattern (steady, daily, ramp, spike, fleet_spike, bursts, "
        "beyond_capacity) at --rate-rps base over --horizon-s; --readings then follows",
    )
    p.add_argument("--horizon-s", type=positive_float, default=60.0, help="length of --pattern (s)")
    p.add_argument("--no-verify", action="store_true", help="skip re-reading every rollup")
    p.add_argument("--timeout-s", type=positive_float, default=600.0, help="give up draining after")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pattern and not args.rate_rps:
        raise SystemExit("bench: --pattern needs --rate-rps (the pattern's base rate)")
    cfg = ThroughputConfig(
        redis_url=args.redis_url,
        readings=args.readings,
        devices=args.devices,
        concurrency=args.concurrency,
        pool=args.pool,
        rate_rps=args.rate_rps,
        batch_readings=args.batch_readings,
        chunk=args.chunk,
        spike_share=args.spike_share,
        anomaly_share=args.anomaly_share,
        pattern=args.pattern,
        horizon_s=args.horizon_s,
        verify=not args.no_verify,
        timeout_s=args.timeout_s,
        seed=args.seed,
    )
    summary = run_throughput(cfg, None if args.json else stderr_progress)
    print(json.dumps(summary, indent=None if args.json else 2))
    ok = summary["drained"] and summary["lost"] == 0 and summary["duplicated"] == 0
    return 0 if ok else 1
