"""The ``iotsched`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from iotsched.cli_errors import configured_redis_url, describe


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
    # Imported here, inside main()'s error handling: importing a command module builds the
    # Celery app from celeryconfig, which reads the environment and may fail. Each module
    # declares its commands with register(subparsers), in --help's order.
    from iotsched import (
        bench_cmd,
        deadletters_cmd,
        demo,
        detect_cmd,
        export_postgres_cmd,
        faults_cmd,
        incidents_cmd,
        maintenance_cmd,
        metrics_cmd,
        mqtt_bench,
        mqtt_bridge_cmd,
        overload_cmd,
        partition_cmd,
        produce_cmd,
        registry_cmd,
        report_cmd,
        rollups_cmd,
        scale_cmd,
        simulate_cmd,
        status_cmd,
        storm_cmd,
        worker_cmd,
    )

    command_modules = (
        demo,
        bench_cmd,
        worker_cmd,
        registry_cmd,
        status_cmd,
        deadletters_cmd,
        produce_cmd,
        metrics_cmd,
        detect_cmd,
        simulate_cmd,
        report_cmd,
        maintenance_cmd,
        partition_cmd,
        scale_cmd,
        overload_cmd,
        faults_cmd,
        mqtt_bridge_cmd,
        mqtt_bench,
        rollups_cmd,
        incidents_cmd,
        export_postgres_cmd,
        storm_cmd,
    )
    for module in command_modules:
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
