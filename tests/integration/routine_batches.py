"""Routine batches sent straight to a region's queue, as the producer would send them."""

from __future__ import annotations

import time

import numpy as np
from celery import Celery

from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from stores.redis_state import RedisStateStore
from tasks.routine import ROUTINE_TASK


def send_routine_batch(
    app: Celery,
    store: RedisStateStore,
    rng: np.random.Generator,
    batch_id: str,
    region: str,
    tier: str,
    readings: int,
) -> None:
    """One routine batch of ``tier`` for ``region``, stamped as ingested now and counted
    as accepted, so the drain and the reconciliation see it."""
    now = time.time()
    batch = Batch(
        batch_id,
        region,
        tier,
        ("value",),
        rng.integers(1, 50_000, size=readings).astype(np.uint64),
        np.full(readings, now - 0.01),
        rng.normal(20.0, 0.5, size=(readings, 1)),
        np.full(readings, now),
    )
    store.incr_counters({"ingested": readings, "accepted": readings})
    app.send_task(
        ROUTINE_TASK,
        args=(encode_batch(batch),),
        queue=queue_name(region, tier),
        serializer="msgpack",
    )
