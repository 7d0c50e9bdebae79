"""``iotsched export-postgres``: closed minutes' rollups and incidents into PostgreSQL."""

from __future__ import annotations

import argparse
import json
import os
import time

import psycopg

from iotsched.rollups_cmd import add_redis_options, connect
from scheduler.errors import ConfigError
from stores.incident_reader import incidents
from stores.postgres_export import PostgresExporter
from stores.rollup_reader import RollupReader

DEFAULT_DSN = "postgresql://127.0.0.1:5432/test"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export-postgres", help="write rollups and incidents to PostgreSQL")
    p.add_argument(
        "--dsn",
        default=os.environ.get("IOTSCHED_POSTGRES_DSN", DEFAULT_DSN),
        help=f"libpq DSN or URL (default IOTSCHED_POSTGRES_DSN or {DEFAULT_DSN})",
    )
    p.add_argument("--schema", default="iotsched", help="schema holding the tables")
    p.add_argument(
        "--grace-s", type=float, default=120.0, help="export a minute this long after it ends"
    )
    p.add_argument("--follow", action="store_true", help="keep exporting, beside the workers")
    p.add_argument("--interval-s", type=float, default=15.0, help="--follow: pause between runs")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    add_redis_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    client, keys, settings = connect(args)
    try:
        conn = psycopg.connect(args.dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ConfigError(f"cannot connect to PostgreSQL ({args.dsn}): {first}") from exc
    reader = RollupReader(client, keys, len(settings.metrics))
    exporter = PostgresExporter(conn, settings.metrics, args.schema)
    exporter.create_schema()
    with conn:
        while True:
            result = exporter.export(
                reader,
                time.time(),
                args.grace_s,
                lambda: incidents(client, keys, settings.regions),
            )
            figures = {
                "minutes": result.minutes,
                "rows_read": result.rows_read,
                "rows_written": result.rows_written,
                "incidents_written": result.incidents,
                "seconds": round(result.seconds, 3),
                "rows_per_s": round(result.rows_per_s, 1),
                "watermark_minute_ts": exporter.watermark(),
            }
            if args.json:
                print(json.dumps(figures), flush=True)
            else:
                print(
                    f"{result.minutes} minutes, {result.rows_written:,} of {result.rows_read:,} "
                    f"rollup rows new, {result.incidents} incidents changed, "
                    f"{result.rows_per_s:,.0f} rows/s",
                    flush=True,
                )
            if not args.follow:
                return 0
            time.sleep(args.interval_s)
