"""Queued routine batches read straight from the broker lists, and applied early for an incident.

Messages are published by a real Celery app whose kombu Redis transport talks to
fakeredis, so the scan decodes exactly the envelope kombu writes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import fakeredis
import numpy as np
import pytest
import redis
from celery import Celery
from kombu.transport import redis as kombu_redis
from runtime_doubles import MakeRuntime

from runtime.runtime import Runtime
from scheduler.codec import encode_batch
from scheduler.model import Batch
from stores.keys import Keys
from stores.queue_scan import QueueScan
from stores.redis_state import RedisStateStore
from tasks import routine
from tasks.accelerate import accelerate
from tasks.app import broker_app

REGION = "eu-west"
KEYS = Keys("t")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def broker(server: fakeredis.FakeServer) -> Iterator[Celery]:
    """A Celery app publishing through kombu's Redis transport into the fake server."""

    def fake_pool(self: Any, asynchronous: bool = False) -> redis.ConnectionPool:
        return redis.ConnectionPool(connection_class=fakeredis.FakeRedisConnection, server=server)

    with mock.patch.object(kombu_redis.Channel, "_get_pool", fake_pool):
        # A host of its own: kombu keeps producer pools per connection, process-wide.
        app = broker_app(f"redis://fake-{uuid.uuid4().hex[:8]}:6379/0", KEYS)
        yield app
        app.close()


@pytest.fixture
def rt(client: fakeredis.FakeRedis, make_runtime: MakeRuntime) -> Runtime:
    return make_runtime(client, key_prefix=KEYS.prefix, regions=(REGION,))


@pytest.fixture
def store(rt: Runtime) -> RedisStateStore:
    assert isinstance(rt.stores.state, RedisStateStore)
    return rt.stores.state


def payload(batch_id: str, first_device: int, n: int, tier: str = "standard") -> dict[str, Any]:
    """A routine message cut in chunks of 1,000 readings (small chunks keep the arithmetic
    readable; the scheme does not depend on the size)."""
    now = time.time()
    return {"chunk_readings": 1_000} | encode_batch(
        Batch(
            batch_id=batch_id,
            region=REGION,
            tier=tier,
            metrics=("value",),
            device_id=np.arange(first_device, first_device + n, dtype=np.uint64),
            ts=np.full(n, now - 1.0),
            values=np.ones((n, 1)),
            ingest_ts=np.full(n, now - 0.5),
        )
    )


def publish(app: Celery, p: dict[str, Any], **options: Any) -> None:
    app.send_task(
        routine.ROUTINE_TASK,
        args=(p,),
        queue=f"{REGION}.{p['tier']}",
        serializer="msgpack",
        **options,
    )


def test_scan_decodes_queued_routine_batches_of_both_tiers(
    broker: Celery, client: fakeredis.FakeRedis
) -> None:
    # Given routine batches queued by Celery in premium and standard (one with a priority),
    # and a message of another task
    publish(broker, payload("p1", 0, 10, "premium"))
    publish(broker, payload("s1", 100, 10))
    publish(broker, payload("s2", 200, 10), priority=5)
    broker.send_task("iotsched.other", args=(1,), queue=f"{REGION}.standard")
    # When the region's queues are scanned
    found = QueueScan(client, KEYS).routine_payloads(REGION)
    # Then every routine payload is found, premium first, and the other message is skipped
    assert sorted(p["id"] for p in found.payloads) == ["p1", "s1", "s2"]
    assert found.payloads[0]["id"] == "p1"
    assert (found.scanned_messages, found.skipped_messages, found.truncated) == (4, 1, False)
    # And the messages are still queued for the routine workers
    assert client.llen(KEYS.broker_queue(f"{REGION}.standard")) == 2


def test_scan_stops_at_its_message_and_byte_bounds(
    broker: Celery, client: fakeredis.FakeRedis
) -> None:
    # Given ten queued batches
    for i in range(10):
        publish(broker, payload(f"s{i}", i * 10, 10))
    # When scanned with a bound of 4 messages, then with a byte bound of about 2 messages
    by_count = QueueScan(client, KEYS, max_messages=4).routine_payloads(REGION)
    one = len(client.lindex(KEYS.broker_queue(f"{REGION}.standard"), 0) or b"")
    by_bytes = QueueScan(client, KEYS, max_bytes=2 * one + one // 2).routine_payloads(REGION)
    # Then each stops there, says so, and the newest batches come first
    assert [p["id"] for p in by_count.payloads] == ["s9", "s8", "s7", "s6"]
    assert by_count.truncated
    assert [p["id"] for p in by_bytes.payloads] == ["s9", "s8"]
    assert by_bytes.truncated and by_bytes.scanned_bytes <= 2 * one + one // 2
    # And a scan reading three messages per round trip stops at its bound the same way
    paged = QueueScan(client, KEYS, max_messages=7, page_messages=3).routine_payloads(REGION)
    assert [p["id"] for p in paged.payloads] == [f"s{i}" for i in range(9, 2, -1)]
    assert paged.truncated


def test_accelerated_chunks_are_applied_once_across_the_later_routine_run(
    broker: Celery,
    rt: Runtime,
    store: RedisStateStore,
) -> None:
    # Given two queued batches of 2,500 readings; devices 2,100 and 7,400 are in an incident
    first, second = payload("b1", 0, 2_500), payload("b2", 5_000, 2_500)
    publish(broker, first)
    publish(broker, second)
    # When the incident's pending data is accelerated (twice: the gate let a growth through)
    done = accelerate(rt, REGION, [2_100, 7_400])
    again = accelerate(rt, REGION, [2_100, 7_400])
    # Then exactly the chunks holding them were applied, once
    assert (done.chunks, done.readings) == (2, 500 + 500)
    assert (again.chunks, again.readings) == (0, 0)
    # When the routine worker later processes both queued messages
    later = [
        routine.process_routine.apply(args=(p,)).get(disable_sync_subtasks=False)
        for p in (first, second)
    ]
    # Then it skips the accelerated chunks: every reading applied exactly once
    assert later == [2_000, 2_000]
    assert store.rollup_count_total() == 5_000
    assert store.counters()["duplicate_deliveries"] >= 2


def test_accelerated_run_stops_at_its_deadline_and_leaves_the_rest_queued(
    broker: Celery,
    rt: Runtime,
    store: RedisStateStore,
) -> None:
    # Given a queued batch whose three chunks each hold an incident device
    queued = payload("b1", 0, 3_000)
    publish(broker, queued)
    ticks = iter([0.1, 0.3])
    # When a run whose deadline passes after its second chunk accelerates them
    done = accelerate(
        rt,
        REGION,
        [10, 1_010, 2_010],
        deadline_ts=0.2,
        clock=lambda: next(ticks),
    )
    # Then it applied two chunks and stopped (premium waits behind it no longer)
    assert (done.chunks, done.readings, done.stopped) == (2, 2_000, True)
    # And the routine worker applies the rest when it reaches the message: nothing lost
    rest = routine.process_routine.apply(args=(queued,)).get(disable_sync_subtasks=False)
    assert rest == 1_000
    assert store.rollup_count_total() == 3_000
