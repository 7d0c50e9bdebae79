"""The routine queue scan finds the same waiting batches in a Redis broker and in memory."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from runtime import memory_broker
from scheduler.codec import encode_batch
from scheduler.model import Batch
from scheduler.settings import Settings
from scheduler.wire import MSGPACK_CONTENT_TYPE, ROUTINE_TASK, SCREEN_TASK
from stores.bundle import Stores, memory_stores
from stores.keys import Keys
from stores.memory_broker import MemoryQueueScan


def envelope(task: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A broker message as kombu writes it (protocol 2, msgpack body, base64)."""
    body = msgpack.packb([[payload], {}, {}], use_bin_type=True)
    return {
        "body": base64.b64encode(body).decode(),
        "content-type": MSGPACK_CONTENT_TYPE,
        "headers": {"task": task},
    }


def payload(batch_id: str) -> dict[str, Any]:
    n = 3
    return encode_batch(
        Batch(
            batch_id,
            "eu",
            "standard",
            ("value",),
            np.arange(n, dtype=np.uint64),
            np.zeros(n),
            np.ones((n, 1)),
            np.zeros(n),
        )
    )


Enqueue = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def scan_and_enqueue(backend: str, stores: Stores, settings: Settings) -> tuple[Stores, Enqueue]:
    """The stores, with a scan reading the broker ``enqueue`` writes to (oldest first)."""
    if backend == "redis":
        client = stores.redis_client
        keys = Keys(settings.key_prefix)

        def push(queue: str, message: dict[str, Any]) -> None:
            client.lpush(keys.broker_queue_lists(queue)[0], json.dumps(message))

        return stores, push
    queues: dict[str, list[dict[str, Any]]] = {}

    def payloads_of(queue: str) -> list[dict[str, Any]]:
        found = (memory_broker.decode_routine(e) for e in reversed(queues.get(queue, [])))
        return [p for p in found if p is not None]

    bundle = memory_stores(settings, payloads_of=payloads_of)
    assert isinstance(bundle.queue_scan, MemoryQueueScan)
    return bundle, lambda queue, message: queues.setdefault(queue, []).append(message)


def test_waiting_routine_batches_are_found_newest_first_and_others_skipped(
    scan_and_enqueue: tuple[Stores, Enqueue],
) -> None:
    stores, enqueue = scan_and_enqueue
    enqueue("eu.standard", envelope(ROUTINE_TASK, payload("old")))
    enqueue("eu.standard", envelope(SCREEN_TASK, payload("screen copy")))
    enqueue("eu.standard", envelope(ROUTINE_TASK, payload("new")))
    enqueue("us.standard", envelope(ROUTINE_TASK, payload("elsewhere")))
    found = stores.queue_scan.routine_payloads("eu")
    assert [p["id"] for p in found.payloads] == ["new", "old"]
    assert not found.truncated
