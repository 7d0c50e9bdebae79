"""An ack Redis refuses must not wedge a worker: the delivery slot is freed, the message
comes back after the visibility timeout (against a private redis-server).

Given a channel with one prefetch slot (the workers' setting) holding one delivery,
when Redis is at maxmemory as the delivery is acked, then the channel can consume
again and the message is still in the unacked index, for kombu to deliver again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from runtime.celery_app import make_app
from runtime.redis_transport import transport_for

pytestmark = pytest.mark.integration


@pytest.fixture
def channel(redis_server: str, key_prefix: str) -> Iterator[object]:
    conn = Connection(
        redis_server,
        transport=transport_for(redis_server),
        transport_options={"global_keyprefix": f"{key_prefix}:"},
    )
    ch = conn.channel()
    ch.basic_qos(0, 1, False)  # worker_prefetch_multiplier = 1, concurrency 1
    try:
        yield ch
    finally:
        redis.Redis.from_url(redis_server).config_set("maxmemory", 0)
        conn.release()


def _refusing_writes(redis_server: str) -> redis.Redis:
    admin = redis.Redis.from_url(redis_server)
    admin.config_set("maxmemory", 1)  # every command queued in a MULTI is refused
    return admin


def test_an_ack_refused_at_maxmemory_frees_the_slot_and_leaves_the_message_unacked(
    channel: object, redis_server: str, key_prefix: str
) -> None:
    ch = channel
    ch.queue_declare("work")  # type: ignore[attr-defined]
    ch.basic_publish(ch.prepare_message("one"), "", "work")  # type: ignore[attr-defined]
    ch.basic_publish(ch.prepare_message("two"), "", "work")  # type: ignore[attr-defined]
    first = ch.basic_get("work", no_ack=False)  # type: ignore[attr-defined]
    assert first is not None
    assert not ch.qos.can_consume()  # type: ignore[attr-defined]

    admin = _refusing_writes(redis_server)
    first.ack()
    admin.config_set("maxmemory", 0)

    assert ch.qos.can_consume()  # type: ignore[attr-defined]
    unacked = ch.qos.unacked_index_key  # type: ignore[attr-defined]
    assert admin.zcard(f"{key_prefix}:{unacked}") == 1
    second = ch.basic_get("work", no_ack=False)  # type: ignore[attr-defined]
    assert second is not None and second.body == b"two"  # type: ignore[attr-defined]
    second.ack()
    assert admin.zcard(f"{key_prefix}:{unacked}") == 1  # the refused one only


def test_workers_and_producers_on_a_redis_url_use_this_transport() -> None:
    app = make_app(broker_url="redis://127.0.0.1:1/0")
    assert app.conf.broker_transport == "runtime.redis_transport:Transport"
    assert make_app(broker_url="memory://localhost/").conf.broker_transport is None
