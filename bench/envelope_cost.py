"""What kombu's Redis envelope costs per large message, stock kombu against our transport.

    uv run python bench/envelope_cost.py [--messages 200] [--body-bytes 300000] [--rounds 3]

Publishes ``--messages`` messages of a random ``--body-bytes`` body (300,000 bytes is
~400 KB of base64, a routine batch's size) the way ``runtime.publisher`` does (one
producer publish batch), then consumes and acks them (BRPOP, the unacked hash), through
stock kombu's Redis transport and through ``runtime.redis_transport`` (which differs
from stock kombu only in how it JSON-encodes and decodes messages, and in acks Redis
refuses), on a private redis-server. Prints one JSON object: microseconds per message
of this process's CPU and of wall time, publishing and consuming, the best of
``--rounds`` rounds. redis-server's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bench.redis_server import private_redis
from runtime.redis_transport import transport_for


def _round(url: str, transport: str | None, prefix: str, messages: int, body: bytes) -> Any:
    queue = Queue("envelope", routing_key="envelope")  # type: ignore[no-untyped-call]
    options = {"global_keyprefix": f"{prefix}:"}
    with Connection(url, transport=transport, transport_options=options) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        queue(channel).declare()  # type: ignore[no-untyped-call]
        producer = Producer(channel)  # type: ignore[no-untyped-call]
        wall_s, cpu_s = time.perf_counter(), time.process_time()
        with producer.batch(messages + 1):  # type: ignore[no-untyped-call]
            for _ in range(messages):
                producer.publish(  # type: ignore[no-untyped-call]
                    body,
                    routing_key="envelope",
                    content_type="application/x-msgpack",
                    content_encoding="binary",
                )
        publish = (time.perf_counter() - wall_s, time.process_time() - cpu_s)

        got: list[Message] = []
        wall_s, cpu_s = time.perf_counter(), time.process_time()
        consumer = Consumer(channel, queues=[queue], on_message=got.append, no_ack=False)  # type: ignore[no-untyped-call]
        with consumer:
            while len(got) < messages:
                conn.drain_events(timeout=30)
                got[-1].ack()  # type: ignore[no-untyped-call]
        consume = (time.perf_counter() - wall_s, time.process_time() - cpu_s)
    assert all(m.body == body for m in got)
    return publish, consume


def measure(url: str, messages: int, body_bytes: int, rounds: int) -> dict[str, Any]:
    body = os.urandom(body_bytes)
    figures: dict[str, Any] = {"messages": messages, "body_bytes": body_bytes}
    for name, transport in (("stock_kombu", None), ("ours", transport_for(url))):
        runs = [
            _round(url, transport, f"envelope-{name}-{n}", messages, body) for n in range(rounds)
        ]
        per_message_us = {
            f"{step}_{clock}_us": round(
                min(run[step_at][clock_at] for run in runs) / messages * 1e6, 1
            )
            for step_at, step in enumerate(("publish", "consume"))
            for clock_at, clock in enumerate(("wall", "cpu"))
        }
        figures[name] = per_message_us
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--body-bytes", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with private_redis() as url:
        print(json.dumps(measure(url, args.messages, args.body_bytes, args.rounds), indent=2))
