"""``iotsched export-postgres``: closed minutes' rollups and incidents into PostgreSQL."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from iotsched.argtypes import non_negative_float, positive_float, positive_int
from iotsched.rollups_cmd import add_redis_options, connect
from scheduler.errors import ConfigError
from scheduler.rollup import compute_rollups
from stores.incident_reader import incidents
from stores.keys import Keys
from stores.postgres_export import PostgresExporter
from stores.redis_state import RedisStateStore
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
        "--grace-s",
        type=non_negative_float,
        default=120.0,
        help="wait after a minute ends",
    )
    p.add_argument("--follow", action="store_true", help="keep exporting, beside the workers")
    p.add_argument("--interval-s", type=positive_float, default=15.0, help="--follow: pause (s)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.add_argument(
        "--bench",
        action="store_true",
        help="measure: write --devices x --minutes rollups under a scratch key prefix, export "
        "them into a scratch schema, print rows/s, delete both",
    )
    p.add_argument("--devices", type=positive_int, default=100_000, help="--bench: devices")
    p.add_argument("--minutes", type=positive_int, default=5, help="--bench: minutes")
    add_redis_options(p)
    p.set_defaults(func=run)


def _connect_pg(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ConfigError(f"cannot connect to PostgreSQL ({dsn}): {first}") from exc


def run(args: argparse.Namespace) -> int:
    if args.bench:
        return _bench(args)
    client, keys, settings = connect(args)
    conn = _connect_pg(args.dsn)
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


def _bench(args: argparse.Namespace) -> int:
    """Rollups as the workers write them (one hash per writer, three writers), exported."""
    if args.devices <= 0 or args.minutes <= 0:
        raise ConfigError("--devices and --minutes must be positive")
    client, _keys, settings = connect(args)
    tag = uuid.uuid4().hex[:8]
    keys, schema = Keys(f"iotsched-pgbench-{tag}"), f"iotsched_pgbench_{tag}"
    n_metrics = len(settings.metrics)
    first_minute = (int(time.time()) // 60 - args.minutes - 10) * 60
    rng = np.random.default_rng(0)
    store = RedisStateStore(client, keys)
    conn = _connect_pg(args.dsn)
    try:
        t0 = time.perf_counter()
        for m in range(args.minutes):
            for w in range(3):
                store.writer = f"bench-{w}"
                ids = np.arange(w, args.devices, 3, dtype=np.uint64)
                ts = first_minute + m * 60 + rng.uniform(0, 59, ids.size)
                values = rng.normal(20.0, 2.0, (ids.size, n_metrics))
                delta = compute_rollups(ids, ts, values)
                store.apply_batch(f"{tag}-{m}-{w}", "standard", delta, {}, int(ids.size))
        setup_s = time.perf_counter() - t0
        exporter = PostgresExporter(conn, settings.metrics, schema)
        exporter.create_schema()
        reader = RollupReader(client, keys, n_metrics)
        result = exporter.export(reader, time.time(), args.grace_s)
        again = exporter.export(reader, time.time(), args.grace_s)
        figures = {
            "devices": args.devices,
            "minutes": result.minutes,
            "rows_read": result.rows_read,
            "rows_written": result.rows_written,
            "seconds": round(result.seconds, 3),
            "rows_per_s": round(result.rows_per_s, 1),
            "rerun_rows_written": again.rows_written,
            "setup_seconds": round(setup_s, 3),
        }
        print(json.dumps(figures))
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
        RedisStateStore(client, keys).delete_all()
    return 0
