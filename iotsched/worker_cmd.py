"""``iotsched worker --region R``: a Celery worker on R's queues, in DESIGN's order.

A region runs two workers by default: ``--region R`` (the data worker) and
``--region R --role premium`` (the premium lane, premium work only, sized by
IOTSCHED_PREMIUM_GUARANTEE_SLOTS).
"""

from __future__ import annotations

import argparse
import os

from iotsched.argtypes import positive_int
from scheduler.errors import ConfigError
from scheduler.settings import Settings
from workers.profiles import ROLES, worker_argv

#: Pool processes of a data (or standard, maintenance) worker unless --concurrency says.
DEFAULT_CONCURRENCY = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="start a Celery worker for one region and role")
    p.add_argument("--region", required=True, help="region whose queues to consume")
    p.add_argument(
        "--role",
        default="data",
        choices=ROLES,
        help="data (default), premium (the region's premium lane: run one beside the data"
        " workers), standard or maintenance",
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        help=f"pool processes (default {DEFAULT_CONCURRENCY};"
        " the premium lane: IOTSCHED_PREMIUM_GUARANTEE_SLOTS)",
    )
    p.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    p.add_argument(
        "--autoscale",
        metavar="MAX,MIN",
        help="size the pool from queue depth and forecast (workers.autoscaler)",
    )
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--dry-run", action="store_true", help="print the celery command, run nothing")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra args after --")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.region not in settings.regions:
        raise ConfigError(
            f"unknown region {args.region!r}; configured: {', '.join(settings.regions)}"
            " (IOTSCHED_REGIONS)"
        )
    concurrency = args.concurrency
    if concurrency is None:
        concurrency = DEFAULT_CONCURRENCY
        if args.role == "premium":
            if settings.premium_guarantee_slots < 1:
                raise ConfigError(
                    "IOTSCHED_PREMIUM_GUARANTEE_SLOTS is 0: no premium lane to run"
                    " (set it, or pass --concurrency)"
                )
            concurrency = settings.premium_guarantee_slots
    extra = [a for a in args.celery_args if a != "--"]
    if args.autoscale:
        from iotsched.scale_cmd import parse_autoscale

        high, low = parse_autoscale(args.autoscale)
        extra += ["--autoscale", f"{high},{low}"]
    argv = worker_argv(args.region, args.role, concurrency, args.pool, args.loglevel, extra)
    if args.dry_run:
        print(" ".join(argv))
        return 0
    os.execv(argv[0], argv)
    return 0  # pragma: no cover  (execv does not return)
