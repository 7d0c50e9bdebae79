"""``iotsched report``: the scaling-efficiency table for the simulated day, side by side."""

from __future__ import annotations

import argparse
import json
from typing import Any

from iotsched.argtypes import non_negative_int, positive_float
from simulation.compare import format_settings, format_table, side_by_side


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="scaling efficiency: this policy vs Celery, HPA and KEDA (each also with a forecast)",
        description="Run the simulated day once per scaler and print reaction time, premium "
        "p99, wastage and slot-hours side by side, then each scaler's settings "
        "(about 30 s per scaler here).",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--hours", type=positive_float, default=24.0, help="simulate only the first HOURS"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = side_by_side(seed=args.seed, hours=args.hours)
    if args.json:
        keep = ("scaling_reaction_s", "premium_p99_ms", "standard_p99_ms", "queue_wait_ms",
                "wastage_pct", "policy_wastage_pct", "slot_seconds", "lost", "wall_time_s",
                "settings")  # fmt: skip
        print(json.dumps({s: {k: f.get(k) for k in keep} for s, f in rows.items()}))
    else:
        print(f"simulated day, 1,000,000 devices, seed {args.seed}, first {args.hours:g} h\n")
        print(format_table(rows))
        print("\nsettings (eu-west's pool; the other regions differ only in bounds):")
        print(format_settings(rows))
    return 0
