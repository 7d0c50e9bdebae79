"""The ``iotsched`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from iotsched.cli_errors import configured_redis_url, describe

# Each module exposes register(subparsers); optional ones may not have landed yet.
COMMAND_MODULES = (
    "iotsched.demo",
    "iotsched.bench",
    "iotsched.worker_cmd",
    "iotsched.registry_cmd",
    "iotsched.status_cmd",
    "iotsched.deadletters_cmd",
    "iotsched.produce_cmd",
    "iotsched.metrics_cmd",
    "iotsched.detect_cmd",
    "iotsched.simulate_cmd",
    "iotsched.report_cmd",
    "iotsched.maintenance_cmd",
    "iotsched.partition_cmd",
    "iotsched.scale_cmd",
    "iotsched.overload_cmd",
    "iotsched.faults_bench",
    "iotsched.mqtt_bridge_cmd",
    "iotsched.mqtt_bench",
    "iotsched.rollups_cmd",
    "iotsched.incidents_cmd",
    "iotsched.export_postgres_cmd",
    "iotsched.storm_bench",
)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (what is wrong, where to look), not the whole usage text.

    Subcommand parsers inherit this class: argparse builds them with the parent's class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="iotsched", description="IoT telemetry scheduling on Celery and Redis."
    )
    # Handled in main() before parsing; declared here so --help lists it.
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is taken out before parsing, wherever it stands: building the parser
    # imports celeryconfig, which reads the environment and may fail first.
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    if debug:
        argv.remove("--debug")
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        command = f" {args.command}" if args is not None else ""
        message, status = describe(exc, configured_redis_url(getattr(args, "redis_url", None)))
        print(f"iotsched{command}: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
