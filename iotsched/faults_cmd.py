"""``iotsched faults-bench``: faults against a recorded stream, reconciled exactly.

The measurement lives in :mod:`bench.faults`; this module only declares the options.
"""

from __future__ import annotations

import argparse
import json

from bench.fault_world import FAULTS
from bench.faults import run_fault
from iotsched.argtypes import non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("faults-bench", help="faults against a recorded stream, reconciled exactly")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated: {FAULTS}")
    p.add_argument(
        "--rate-rps", type=positive_float, default=5_000, help="readings offered per second"
    )
    p.add_argument("--seconds", type=positive_float, default=30.0, help="stream length per fault")
    p.add_argument(
        "--outage-s", type=positive_float, default=20.0, help="SIGSTOP / restart / OOM length"
    )
    p.add_argument("--devices", type=positive_int, default=20_000)
    p.add_argument("--drain-timeout-s", type=positive_float, default=180.0)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise SystemExit(f"faults-bench: unknown faults {unknown}; choose from {FAULTS}")
    if args.rate_rps <= 0 or args.seconds <= 0 or args.outage_s < 0:
        raise SystemExit("faults-bench: --rate-rps and --seconds must be positive")
    ok = True
    for fault in faults:
        report = run_fault(
            fault,
            args.rate_rps,
            args.seconds,
            args.outage_s,
            args.devices,
            args.drain_timeout_s,
            args.seed,
            quiet=args.json,
        )
        print(json.dumps(report), flush=True)
        ok = ok and report["lost"] == 0 and report["duplicated"] == 0 and report["drained"]
    return 0 if ok else 1
