"""``iotsched metrics``: Prometheus metrics of what Flower's /metrics lacks.

Flower exports task events but no queue depth. This serves, on each scrape,
queue depths, every ingest/processing counter, processing and detection
latency histograms, heartbeat ages, pool slots per region and work class, and
open maintenance reservations. Names are in ``iotsched.metrics_exposition``.
"""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from iotsched.argtypes import key_prefix_option, port
from iotsched.metrics_exposition import Snapshot, exposition
from scheduler.settings import Settings
from stores.connection import RedisClient, RedisError, connect
from stores.detector_store import ALERT_STAGE, NOTIFY_STAGE
from stores.keys import Keys
from stores.pool_heartbeats import decode_beats
from stores.queue_depth import fold_lengths, queue_lengths
from stores.reservation_store import ReservationStore
from workers.pool_refresher import heartbeat_fresh_s
from workers.profiles import region_queues


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("metrics", help="serve Prometheus metrics: queue depth, counters, latency")
    p.add_argument("--port", type=port, default=9808)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    p.add_argument("--redis-url", help="Redis to read (default IOTSCHED_REDIS_URL)")
    key_prefix_option(p)
    p.add_argument("--once", action="store_true", help="print one exposition and exit")
    p.set_defaults(func=run)


def _hist(raw: dict[bytes, bytes]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def snapshot(client: RedisClient, keys: Keys, settings: Settings, now_ts: float) -> Snapshot:
    """One pipelined round trip for queues, counters, histograms, heartbeats and pools;
    one more for the reservation book."""
    queues = [
        q
        for r in settings.regions
        for role in ("data", "maintenance")
        for q in region_queues(r, role)
    ]
    stages = (ALERT_STAGE, NOTIFY_STAGE)
    pipe = client.pipeline(transaction=False)
    queue_lengths(pipe, keys, queues)
    pipe.hgetall(keys.heartbeats)
    pipe.hgetall(keys.lane_heartbeats)
    pipe.hgetall(keys.counters)
    pipe.hgetall(keys.scaling_pools)
    for tier in settings.tiers:
        pipe.hgetall(keys.latency("ingest", tier))
    for stage in stages:
        pipe.hgetall(keys.detection_latency(stage))
    replies = pipe.execute()
    n_lists = sum(len(keys.broker_queue_lists(q)) for q in queues)
    beats, lane_beats, counters, pools, *hists = replies[n_lists:]
    tiers = len(settings.tiers)
    book = ReservationStore.from_settings(client, settings).load().book
    return Snapshot(
        now_ts=now_ts,
        queues=fold_lengths(replies, queues),
        counters={k.decode(): int(v) for k, v in counters.items()},
        processing_latency={
            t: _hist(h) for t, h in zip(settings.tiers, hists[:tiers], strict=True)
        },
        detection_latency={s: _hist(h) for s, h in zip(stages, hists[tiers:], strict=True)},
        heartbeats={k.decode(): float(v) for k, v in beats.items()},
        lane_heartbeats={k.decode(): float(v) for k, v in lane_beats.items()},
        slots=_slots(pools, now_ts, heartbeat_fresh_s(settings)),
        reservations={
            r: (len(active), sum(x.slots for x in active))
            for r in settings.regions
            for active in [book.active(r, now_ts)]
        },
    )


def _slots(
    raw: dict[Any, Any], now_ts: float, fresh_s: float
) -> dict[tuple[str, str], tuple[int, int]]:
    """(region, work class) → (granted, busy) over pools that reported recently.

    The work class is the node name's role part (``data-eu-west@host`` → data)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for beat in decode_beats(raw).values():
        if not beat.fresh(now_ts, fresh_s):
            continue
        role = beat.node.partition("@")[0].removesuffix(f"-{beat.region}") or "data"
        granted, busy = out.get((beat.region, role), (0, 0))
        out[(beat.region, role)] = (granted + beat.slots, busy + beat.busy)
    return out


def desired_replicas_exposition(client: RedisClient, keys: Keys) -> str:
    """``iotsched_autoscaler_desired_replicas{region,class}``: what the autoscaler wants,
    for KEDA's Prometheus trigger (deploy/kubernetes)."""
    raw: Any = client.hgetall(keys.scaling_desired)
    out = [
        "# HELP iotsched_autoscaler_desired_replicas Worker replicas the autoscaler wants.",
        "# TYPE iotsched_autoscaler_desired_replicas gauge",
    ]
    for field, value in sorted(raw.items()):
        region, _, cls = field.decode().rpartition(":")
        out.append(
            f'iotsched_autoscaler_desired_replicas{{region="{region}",class="{cls}"}} {int(value)}'
        )
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    keys = Keys(args.key_prefix or settings.key_prefix)
    client = connect(args.redis_url or settings.redis_url)

    def render() -> bytes:
        text = exposition(snapshot(client, keys, settings, time.time()))
        return (text + desired_replicas_exposition(client, keys)).encode()

    if args.once:
        print(render().decode(), end="")
        return 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            try:
                body = render()
            except RedisError as exc:
                # Prometheus records the failed scrape; the server stays up for the next one.
                self.send_error(503, f"cannot read Redis: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the terminal

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    print(f"serving http://{args.bind}:{args.port}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
