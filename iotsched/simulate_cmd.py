"""``iotsched simulate``: run a named scenario on the virtual clock and print its figures."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from iotsched.argtypes import non_negative_int
from scheduler.errors import ConfigError
from simulation.criteria import Outcome
from simulation.scenarios import SCENARIOS, run_scenario

#: The figures the JSON always carries when they apply (issue 3), then the rest.
HEADLINE = (
    "scaling_reaction_s",
    "premium_p99_ms",
    "standard_p99_ms",
    "detection_p99_s",
    "wastage_pct",
    "home_region_pct",
    "maintenance_start_delay_s",
    "lost",
    "wall_time_s",
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run a seeded scenario of the 1M-device fleet on a virtual clock",
        description="Run a named scenario through the runtime's own policies on a virtual clock.",
    )
    p.add_argument("--scenario", default="sudden_spike", help="scenario name (see --list)")
    p.add_argument("--list", action="store_true", help="name the scenarios and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write arrival, queues, slots, latency")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=run)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else (value if math.isinf(value) else round(value, 3))
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def as_json(outcome: Outcome) -> dict[str, Any]:
    figs = outcome.figures
    ordered = {k: figs[k] for k in HEADLINE if k in figs}
    ordered.update({k: v for k, v in figs.items() if k not in ordered})
    ordered["scenario"] = outcome.scenario.name
    ordered["criteria"] = {c.describe(): c.check(figs) for c in outcome.scenario.criteria}
    return {k: _clean(v) for k, v in ordered.items()}


def as_table(outcome: Outcome) -> str:
    figs = outcome.figures
    lines = [f"scenario {outcome.scenario.name}: {outcome.scenario.summary}", ""]
    keys = [k for k in HEADLINE if k in figs] + [
        k for k in figs if k not in HEADLINE and k != "maintenance_runs"
    ]
    width = max(len(k) for k in keys)
    for k in keys:
        v = figs[k]
        shown = f"{v:,.3f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
        lines.append(f"  {k.ljust(width)}  {shown}")
    for run in figs.get("maintenance_runs", []):
        line = (
            f"  maintenance {run['reservation_id']} {run['operation']} at {run['start_s']:.0f} s:"
            f" {run['state']}, {run['start_delay_s']:.3f} s late"
        )
        if run["rebooked_as"]:
            line += f", rebooked as {run['rebooked_as']} at {run['rebooked_start_s']:.0f} s"
        lines.append(line)
    lines.append("")
    for c in outcome.scenario.criteria:
        lines.append(f"  [{'pass' if c.check(figs) else 'FAIL'}] {c.describe()}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        width = max(len(n) for n in SCENARIOS)
        for name, sc in SCENARIOS.items():
            kind = "critical" if sc.critical else "edge"
            print(f"{name.ljust(width)}  {kind:8}  {sc.summary}")
        return 0
    if args.scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {args.scenario!r}; known: {', '.join(SCENARIOS)}")
    outcome = run_scenario(args.scenario, seed=args.seed)
    if args.plot:
        from simulation.plot import plot_trace

        plot_trace(outcome.trace, args.plot, f"{args.scenario} (seed {args.seed})")
    if args.json:
        print(json.dumps(as_json(outcome)))
    else:
        print(as_table(outcome))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 1 if outcome.failed() else 0
