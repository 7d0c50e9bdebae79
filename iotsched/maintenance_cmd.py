"""``iotsched maintenance book|list|cancel|bench``: maintenance windows in the shared book."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from datetime import UTC, datetime

from iotsched.argtypes import positive_float, positive_int, share
from scheduler.errors import ConfigError
from scheduler.reservations import Reservation, ReservationConflict
from scheduler.settings import Settings
from stores.connection import connect
from stores.reservation_store import ReservationStore
from tasks.maintenance_ops import OPERATIONS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("maintenance", help="book, list and cancel maintenance windows")
    msub = p.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--redis-url", help="state Redis (default: IOTSCHED_REDIS_URL)")
        q.add_argument("--key-prefix", help="deployment key prefix (default: IOTSCHED_KEY_PREFIX)")

    b = msub.add_parser("book", help="reserve slots in a region for an operation")
    common(b)
    b.add_argument("--region", required=True)
    b.add_argument("--start", required=True, help="ISO time (UTC if no zone) or +SECONDS from now")
    b.add_argument("--duration-s", type=positive_float, required=True)
    b.add_argument("--slots", type=positive_int, required=True)
    b.add_argument("--operation", required=True, choices=sorted(OPERATIONS))
    b.set_defaults(func=run_book)

    ls = msub.add_parser("list", help="reservations not yet ended (--all: every one kept)")
    common(ls)
    ls.add_argument("--region")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    c = msub.add_parser("cancel", help="cancel a reservation; its slots return at once")
    common(c)
    c.add_argument("reservation_id")
    c.set_defaults(func=run_cancel)

    bench = msub.add_parser(
        "bench", help="measure window start delay and premium p99 under load (JSON)"
    )
    bench.add_argument("--redis-url", help="use this Redis (default: a private redis-server)")
    bench.add_argument(
        "--rate-rps",
        type=positive_float,
        help="offer this load (default: a share of measured capacity)",
    )
    bench.add_argument(
        "--load-fraction", type=share, default=0.75,
        help="share of the data worker's measured capacity to offer (default 0.75)",
    )  # fmt: skip
    bench.set_defaults(func=run_bench)


def parse_start(value: str, now_ts: float) -> float:
    """``+SECONDS`` from now, or an ISO 8601 time (UTC when it names no zone)."""
    text = value.strip()
    if text.startswith("+"):
        try:
            return now_ts + float(text[1:])
        except ValueError:
            raise ConfigError(f"--start {value!r}: expected +SECONDS, e.g. +60") from None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--start {value!r}: expected an ISO time like 2026-01-31T02:00:00Z or +SECONDS"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _store(args: argparse.Namespace) -> ReservationStore:
    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        redis_url=args.redis_url or base.redis_url,
        key_prefix=args.key_prefix or base.key_prefix,
    )
    return ReservationStore.from_settings(connect(settings.redis_url), settings)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _line(r: Reservation) -> str:
    extra = f"  (attempt {r.attempt}, rebooked from {r.rebooked_from})" if r.rebooked_from else ""
    return (
        f"{r.reservation_id:<14} {r.region:<10} {_iso(r.start_ts)}  {r.duration_s:>7.0f}s  "
        f"{r.slots:>3} slots  {r.operation}{extra}"
    )


def run_book(args: argparse.Namespace) -> int:
    now = time.time()
    start = parse_start(args.start, now)
    store = _store(args)
    try:
        r = store.book(args.region, start, args.duration_s, args.slots, args.operation, now)
    except ReservationConflict as exc:
        fit = exc.earliest_start_ts
        if fit is None or math.isinf(fit):
            raise ConfigError(f"booking refused: {exc}") from exc
        raise ConfigError(
            f"booking refused: {exc}\n  earliest start that fits: {_iso(fit)} (--start {_iso(fit)})"
        ) from exc
    print(f"booked {_line(r)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    now = time.time()
    rows = _store(args).list(args.region, None if args.all else now)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    if not rows:
        print("no reservations")
    for r in rows:
        state = "active" if r.is_active(now) else ("ended" if r.end_ts <= now else "booked")
        print(f"{_line(r)}  [{state}]")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    r = _store(args).cancel(args.reservation_id)
    print(f"cancelled {_line(r)}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from bench.maintenance import maintenance_bench

    out = maintenance_bench(args.redis_url, args.rate_rps, load_fraction=args.load_fraction)
    print(json.dumps(out, indent=2))
    return 0
