"""The ``iotsched`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from scheduler.errors import IotschedError

# Each module exposes register(subparsers); optional ones may not have landed yet.
COMMAND_MODULES = (
    "iotsched.demo",
    "iotsched.bench",
    "iotsched.worker_cmd",
    "iotsched.registry_cmd",
    "iotsched.status_cmd",
    "iotsched.produce_cmd",
    "iotsched.metrics_cmd",
    "iotsched.detect_cmd",
    "iotsched.simulate_cmd",
    "iotsched.report_cmd",
    "iotsched.maintenance_cmd",
    "iotsched.partition_cmd",
    "iotsched.scale_cmd",
    "iotsched.overload_cmd",
    "iotsched.storm_bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotsched", description="IoT telemetry scheduling on Celery and Redis."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IotschedError as exc:
        print(f"iotsched {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
