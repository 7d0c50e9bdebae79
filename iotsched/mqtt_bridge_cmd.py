"""``iotsched mqtt-bridge``: readings in from an MQTT broker, through the producer."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace

from ingest.mqtt_bridge import DEFAULT_FILTERS, RECEIVE_MAXIMUM, BridgeOptions, MqttBridge
from ingest.mqtt_client import BrokerConfig
from ingest.mqtt_lanes import premium_filters
from iotsched.argtypes import non_negative_int, positive_int
from iotsched.producer_wiring import wire_producer
from scheduler.settings import Settings
from stores.connection import connect
from stores.keys import Keys
from tasks.app import broker_app


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mqtt-bridge", help="ingest readings from an MQTT broker (v5, QoS 1)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt[s]://[u:p@]HOST:PORT")
    p.add_argument(
        "--topic",
        action="append",
        help=f"topic filter, repeatable (default {' and '.join(DEFAULT_FILTERS)})",
    )
    p.add_argument("--group", default="iotsched", help="shared-subscription group")
    p.add_argument(
        "--client-id",
        default=f"iotsched-bridge-{socket.gethostname()}",
        help="stable per bridge process: a restart with it gets unacknowledged messages back",
    )
    p.add_argument("--username")
    p.add_argument("--password", help="or IOTSCHED_MQTT_PASSWORD")
    p.add_argument("--ca-file", help="CA bundle to verify the broker (mqtts://)")
    p.add_argument("--cert-file", help="client certificate (mutual TLS)")
    p.add_argument("--key-file", help="client key (mutual TLS)")
    p.add_argument("--tls-insecure", action="store_true", help="do not verify the broker")
    p.add_argument("--session-expiry-s", type=non_negative_int, default=3600)
    p.add_argument(
        "--receive-maximum",
        type=positive_int,
        default=RECEIVE_MAXIMUM,
        help="unacknowledged messages the broker may send this bridge (MQTT v5, at most 65535)",
    )
    p.add_argument("--redis-url", help="state and broker Redis (default IOTSCHED_REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (default IOTSCHED_KEY_PREFIX)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.redis_url:
        settings = replace(settings, redis_url=args.redis_url)
    if args.prefix:
        settings = replace(settings, key_prefix=args.prefix)
    keys = Keys(settings.key_prefix)
    broker = BrokerConfig.from_url(
        args.broker,
        username=args.username,
        password=args.password or os.environ.get("IOTSCHED_MQTT_PASSWORD"),
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        tls_insecure=args.tls_insecure or None,
    )
    celery_app = broker_app(settings.effective_broker_url, keys)
    wiring = wire_producer(settings, celery_app, connect(settings.redis_url))
    registry = wiring.runtime.registry
    registry.get()  # fail now, with the one-line reason, when no registry is stored
    producer = wiring.producer(f"mqtt-{args.client_id}-{int(time.time())}")
    options = BridgeOptions(
        group=args.group,
        filters=tuple(args.topic or DEFAULT_FILTERS),
        client_id=args.client_id,
        session_expiry_s=args.session_expiry_s,
        receive_maximum=min(args.receive_maximum, 65_535),
    )
    bridge = MqttBridge(
        producer, broker, options, registry=registry.get, parked=wiring.runtime.stores.parked
    )
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    lane = premium_filters(options.filters)
    print(
        f"bridging {broker.host}:{broker.port} {options.filters} (premium lane {lane}) → "
        f"{keys.prefix}",
        flush=True,
    )
    threading.Thread(target=_say_subscribed, args=(bridge,), daemon=True).start()
    try:
        stats = bridge.run()
    finally:
        wiring.close()
    print(
        f"messages {stats.messages:,}, accepted {stats.accepted:,}, "
        f"rejected {stats.rejected:,}, acked {stats.acked:,}, "
        f"parked {bridge.parking.parked if bridge.parking else 0:,}",
        file=sys.stderr,
    )
    return 0


def _say_subscribed(bridge: MqttBridge) -> None:
    if bridge.subscribed.wait(60):
        print("subscribed", flush=True)
