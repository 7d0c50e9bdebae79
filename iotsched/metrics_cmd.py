"""``iotsched metrics``: Prometheus text exposition of what Flower's /metrics lacks.

Flower exports task events but no queue depth. This serves, on each scrape,
queue depths per queue, every ingest/processing counter, latency quantiles per
tier and the age of each region's heartbeat — one pipelined read per scrape.
"""

from __future__ import annotations

import argparse
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from iotsched.status_cmd import collect
from scheduler.settings import Settings
from stores.keys import Keys

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("metrics", help="serve Prometheus metrics: queue depth, counters, latency")
    p.add_argument("--port", type=int, default=9808)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    p.add_argument("--redis-url", help="Redis to read (default IOTSCHED_REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (default IOTSCHED_KEY_PREFIX)")
    p.add_argument("--once", action="store_true", help="print one exposition and exit")
    p.set_defaults(func=run)


def exposition(status: dict[str, Any], now_ts: float) -> str:
    """Prometheus text format (version 0.0.4) for one ``collect`` result."""
    out = [
        "# HELP iotsched_queue_depth_messages Messages waiting in a queue (all priority lists).",
        "# TYPE iotsched_queue_depth_messages gauge",
    ]
    for queue, depth in sorted(status["queues"].items()):
        out.append(f'iotsched_queue_depth_messages{{queue="{queue}"}} {depth}')
    out += [
        "# HELP iotsched_events_total Readings, batches and events counted by ingest and tasks.",
        "# TYPE iotsched_events_total counter",
    ]
    for name, value in sorted(status["counters"].items()):
        metric, _, label = name.partition(":")
        labels = f'name="{_UNSAFE.sub("_", metric)}"' + (f',tier="{label}"' if label else "")
        out.append(f"iotsched_events_total{{{labels}}} {value}")
    out += [
        "# HELP iotsched_latency_ms Ingest to processed latency (histogram bucket upper edge).",
        "# TYPE iotsched_latency_ms gauge",
    ]
    for tier, lat in sorted(status["latency"].items()):
        for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            if lat[key] is not None:
                out.append(f'iotsched_latency_ms{{tier="{tier}",quantile="{q}"}} {lat[key]:.3f}')
    out += [
        "# HELP iotsched_heartbeat_age_seconds Seconds since a region's workers last reported.",
        "# TYPE iotsched_heartbeat_age_seconds gauge",
    ]
    for region, ts in sorted(status["heartbeats"].items()):
        out.append(f'iotsched_heartbeat_age_seconds{{region="{region}"}} {now_ts - ts:.3f}')
    return "\n".join(out) + "\n"


def desired_replicas_exposition(client: redis.Redis, keys: Keys) -> str:
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
    keys = Keys(args.prefix or settings.key_prefix)
    client = redis.Redis.from_url(args.redis_url or settings.redis_url)

    def render() -> bytes:
        text = exposition(collect(client, keys, settings, dead_letters=0), time.time())
        return (text + desired_replicas_exposition(client, keys)).encode()

    if args.once:
        print(render().decode(), end="")
        return 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = render()
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
