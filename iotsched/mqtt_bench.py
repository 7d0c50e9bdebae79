"""``iotsched mqtt-bench``: MQTT ingest measured end to end on a real broker (``bench.mqtt``)."""

from __future__ import annotations

import argparse
import json

from ingest.mqtt_bridge import RECEIVE_MAXIMUM
from iotsched.argtypes import non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mqtt-bench", help="measure MQTT ingest end to end on a real broker")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--messages", type=positive_int, default=300_000, help="messages to publish")
    p.add_argument("--per-message", type=positive_int, default=1, help="readings per message")
    p.add_argument(
        "--rate-mps", type=positive_float, default=None, help="messages/s (default: max)"
    )
    p.add_argument("--devices", type=positive_int, default=20_000)
    p.add_argument("--publishers", type=positive_int, default=2, help="publishing processes")
    p.add_argument(
        "--publisher-nice",
        type=non_negative_int,
        default=10,
        help="publishers' CPU priority lowered by this much (the fleet is not on this machine)",
    )
    p.add_argument("--bridges", type=positive_int, default=1, help="mqtt-bridge processes")
    p.add_argument(
        "--receive-maximum",
        type=positive_int,
        default=RECEIVE_MAXIMUM,
        help="each bridge's receive window (unacknowledged messages)",
    )
    p.add_argument(
        "--plain-topics",
        action="store_true",
        help="premium devices publish to devices/{id}/telemetry too (default: .../premium)",
    )
    p.add_argument("--timeout-s", type=positive_float, default=300.0)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.mqtt import measure

    out = measure(args)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0 if out["drained"] and out["lost"] == 0 else 1
