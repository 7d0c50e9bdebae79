"""``iotsched rollups``: a device's minute rollups read back from Redis, merged across
writers; also the Redis options and time formatting ``incidents`` shares."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from iotsched.argtypes import non_negative_int
from scheduler.errors import ConfigError
from scheduler.rollup import Rollup
from scheduler.settings import Settings
from stores.connection import RedisClient
from stores.connection import connect as connect_url
from stores.keys import Keys
from stores.rollup_reader import RollupReader

#: Default window: the rollups' retention (scheduler.defaults.ROLLUP_TTL_S).
DEFAULT_WINDOW_S = 24 * 3600


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollups", help="a device's per-minute rollups (merged across workers)")
    p.add_argument("--device", type=non_negative_int, required=True, help="device id")
    p.add_argument("--since", help="ISO time, UTC unless an offset is given (default: 24 h ago)")
    p.add_argument("--until", help="ISO time (default: now)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header")
    add_redis_options(p)
    p.set_defaults(func=run)


def add_redis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis to read (default IOTSCHED_REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (default IOTSCHED_KEY_PREFIX)")


def connect(args: argparse.Namespace) -> tuple[RedisClient, Keys, Settings]:
    settings = Settings.from_env()
    keys = Keys(args.prefix or settings.key_prefix)
    return connect_url(args.redis_url or settings.redis_url), keys, settings


def parse_iso(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"not an ISO time: {text!r} (e.g. 2026-11-30T12:00:00Z)") from exc
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def rollup_record(
    device_id: int, minute_ts: int, r: Rollup, metrics: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device_id": device_id,
        "minute": iso(minute_ts),
        "minute_ts": minute_ts,
        "count": r.count,
        "last_ts": r.last_ts,
    }
    for i, m in enumerate(metrics):
        out[f"{m}_sum"] = r.sum[i]
        out[f"{m}_min"] = r.min[i]
        out[f"{m}_max"] = r.max[i]
        out[f"{m}_mean"] = r.sum[i] / r.count if r.count else None
        out[f"{m}_last"] = r.last[i]
    return out


def run(args: argparse.Namespace) -> int:
    client, keys, settings = connect(args)
    now = time.time()
    until = parse_iso(args.until) if args.until else now + 60
    since = parse_iso(args.since) if args.since else now - DEFAULT_WINDOW_S
    if since >= until:
        raise ConfigError("--since must be before --until")
    reader = RollupReader(client, keys, len(settings.metrics))
    records = [
        rollup_record(args.device, m, r, settings.metrics)
        for m, r in reader.device(args.device, since, until)
    ]
    if args.json:
        for rec in records:
            print(json.dumps(rec))
    elif args.csv or records:
        fields = list(records[0]) if records else ["device_id", "minute", "count"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        print(
            f"no rollups for device {args.device} between {iso(since)} and {iso(until)}",
            file=sys.stderr,
        )
    return 0
