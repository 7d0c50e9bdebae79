"""Poison messages of every shape seen in the field, for the fault bench and tests.

Each must end in the dead-letter stream with its reason, counted by the
readings it really carries, and no worker may stop over it. They are sent raw,
past bench/sending.py on purpose: the publisher only ever sends well-formed batches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from celery import Celery

from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry

ROUTINE_TASK = "iotsched.routine"
POISON_PREFIX = "poison:"
#: Readings in each poison batch.
POISON_READINGS = 100


def is_poison(batch_id: str) -> bool:
    return batch_id.startswith(POISON_PREFIX)


def _batch(name: str, region: str, dev: np.ndarray, values: np.ndarray) -> Batch:
    now = time.time()
    n = len(dev)
    return Batch(
        batch_id=f"{POISON_PREFIX}{name}",
        region=region,
        tier="standard",
        metrics=("value",),
        device_id=dev.astype(np.uint64),
        ts=np.full(n, now),
        values=values.reshape(n, 1),
        ingest_ts=np.full(n, now),
    )


def inject_poison(app: Celery, registry: Registry) -> dict[str, int]:
    """Send every poison shape to the first region's standard queue; what was sent, by kind."""
    region = registry.topology.regions[0]
    queue = queue_name(region, "standard")
    n = POISON_READINGS
    real = registry.device_id[:n]
    sent: dict[str, int] = {}

    def task(kind: str, *args: Any) -> None:
        app.send_task(ROUTINE_TASK, args=args, queue=queue, serializer="msgpack")
        sent[kind] = sent.get(kind, 0) + 1

    task("wrong_argument_shape", {"hello": 1})
    task("too_many_arguments", 1, 2, 3)
    huge_n = encode_batch(_batch("huge-n", region, real, np.ones(n)))
    huge_n["n"] = 10**9
    task("n_disagrees_with_columns", huge_n)
    task("not_finite", encode_batch(_batch("nan", region, real, np.full(n, np.nan))))
    unknown = np.arange(n, dtype=np.uint64) + np.uint64(2**62)
    task("unknown_devices", encode_batch(_batch("unknown", region, unknown, np.ones(n))))
    headers = app.amqp.as_task_v2("poison", ROUTINE_TASK, args=(), kwargs={}).headers
    with app.producer_or_acquire() as producer:
        for kind, body in (
            ("body_not_a_tuple", {"hello": 1}),
            ("body_too_short", [1, 2]),
            ("body_a_string", "hello"),
            ("embed_not_a_dict", [[], {}, 5]),
        ):
            producer.publish(body, routing_key=queue, headers=headers, serializer="msgpack")
            sent[kind] = 1
        producer.publish(
            b"\xc1\xc1 not msgpack",
            routing_key=queue,
            headers=headers,
            content_type="application/x-msgpack",
            content_encoding="binary",
        )
        sent["body_not_decodable"] = 1
        producer.publish({"a": 1}, routing_key=queue, headers={}, serializer="msgpack")
        sent["no_task_header"] = 1
        unknown_task = {**headers, "task": "iotsched.no_such_task"}
        producer.publish(
            [[], {}, {}], routing_key=queue, headers=unknown_task, serializer="msgpack"
        )
        sent["unknown_task"] = 1
    return sent
