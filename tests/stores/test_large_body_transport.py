"""Our Redis transport leaves in Redis exactly what stock kombu leaves, and large bodies
survive publish, delivery, unacked restore and redelivery (against a private redis-server).

Given the same messages (a ~400 KB body, a held copy's 1.3-1.7 MB and a small one, unicode
headers, a priority, a queue with an expiry) published plainly and in a publish batch,
once through stock kombu and once through our transport, when each consumes them
(BRPOP), restores the unacked deliveries and consumes them again, then every Redis list,
set and the unacked hash hold the same bytes at each step, and the consumer gets back
the bodies it sent. This pins the kombu methods runtime.redis_transport copies to the
kombu it runs on.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from runtime.redis_transport import Channel, transport_for

pytestmark = pytest.mark.integration

BIG = os.urandom(300_000)  # base64: 400,000 characters, a routine batch's size
HELD_COPY = os.urandom(1_280_160)  # base64: 1.71 MB, the most a held copy (40,000 readings) takes
SMALL = b"small body"
QUEUES = {"plain": {}, "expiring": {"expires": 600.0}}

#: (queue, body, publish options, in a publish batch)
PUBLISHES: list[tuple[str, bytes, dict[str, Any], bool]] = [
    ("plain", BIG, {"headers": {"site": "Zürich ☃", "n": 1}}, False),
    ("plain", SMALL, {}, False),
    ("plain", BIG, {"priority": 5}, False),
    ("plain", BIG, {}, True),
    ("plain", BIG, {"priority": 9, "headers": {"note": "日本\u2028"}}, True),
    ("plain", HELD_COPY, {}, True),
    ("expiring", BIG, {}, False),
    ("expiring", BIG, {"priority": 3}, True),
    ("expiring", SMALL, {}, True),
]


def _redis_state(admin: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its content (sorted-set scores are times: left out)."""
    state: dict[str, Any] = {}
    for key in admin.keys(f"{prefix}:*"):
        name = key.decode()[len(prefix) + 1 :]
        kind = admin.type(key).decode()
        if kind == "list":
            content: Any = admin.lrange(key, 0, -1)
        elif kind == "set":
            content = sorted(admin.smembers(key))
        elif kind == "zset":
            content = sorted(admin.zrange(key, 0, -1))
        else:
            content = admin.hgetall(key)
        state[name] = (kind, content, admin.pttl(key) > 0)
    return state


def _consume(conn: Connection, channel: Any, count: int) -> list[Message]:
    got: list[Message] = []
    queues = [Queue(name, routing_key=name, **options) for name, options in QUEUES.items()]
    with Consumer(channel, queues=queues, on_message=got.append, no_ack=False):
        while len(got) < count:
            conn.drain_events(timeout=10)
    return got


def _run(redis_server: str, prefix: str, transport: str | None) -> tuple[list[Any], list[bytes]]:
    """States of Redis after publishing, consuming, restoring and consuming again, and the
    bodies received the second time."""
    admin = redis.Redis.from_url(redis_server)
    states = []
    with Connection(
        redis_server, transport=transport, transport_options={"global_keyprefix": f"{prefix}:"}
    ) as conn:
        channel = conn.channel()
        tags = (f"tag-{n}" for n in itertools.count())
        channel._next_delivery_tag = lambda: next(tags)  # same tags under both transports
        for name, options in QUEUES.items():
            Queue(name, routing_key=name, **options)(channel).declare()
        producer = Producer(channel)
        for queue, body, options, batched in PUBLISHES:
            publish = dict(
                routing_key=queue,
                content_type="application/octet-stream",
                content_encoding="binary",
                **options,
            )
            if batched:
                with producer.batch(10):
                    producer.publish(body, **publish)
            else:
                producer.publish(body, **publish)
        states.append(_redis_state(admin, prefix))

        first = _consume(conn, channel, len(PUBLISHES))
        assert sorted(m.body for m in first) == sorted(body for _, body, _, _ in PUBLISHES)
        states.append(_redis_state(admin, prefix))

        channel.qos.restore_unacked()
        states.append(_redis_state(admin, prefix))

        second = _consume(conn, channel, len(PUBLISHES))
        for message in second:
            message.ack()
        states.append(_redis_state(admin, prefix))
    return states, sorted(m.body for m in second)


def test_redis_holds_what_stock_kombu_leaves_and_bodies_come_back_after_a_restore(
    redis_server: str, key_prefix: str
) -> None:
    ours = transport_for(redis_server)
    with Connection(redis_server, transport=ours) as conn:
        assert isinstance(conn.default_channel, Channel)

    stock_states, _ = _run(redis_server, f"{key_prefix}-stock", None)
    our_states, bodies = _run(redis_server, f"{key_prefix}-ours", ours)

    assert our_states == stock_states
    assert bodies == sorted(body for _, body, _, _ in PUBLISHES)
    published, delivered, restored, acked = our_states
    assert len(delivered["unacked"][1]) == len(PUBLISHES)  # every delivery recorded unacked
    assert any(ttl for name, (_, _, ttl) in published.items() if name.startswith("expiring"))
    queued_again = [c for _, (kind, c, _) in restored.items() if kind == "list"]
    assert "unacked" not in restored and sum(map(len, queued_again)) == len(PUBLISHES)
    assert "unacked" not in acked
