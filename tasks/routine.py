"""Routine processing task: a batch becomes per-device, per-minute rollups, once."""

from __future__ import annotations

import time
from typing import Any

from celery import Task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler.codec import decode_batch
from scheduler.errors import InvalidBatch, TransientError
from scheduler.routine import routine_effects
from tasks import context
from tasks.app import app
from tasks.deadletter import dead_letter_payload

ROUTINE_TASK = "iotsched.routine"
MAX_RETRIES = 5


@app.task(
    name=ROUTINE_TASK,
    bind=True,
    acks_late=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
)
def process_routine(self: Task, payload: dict[str, Any]) -> int:
    """Returns the number of readings applied (0 when this batch was applied before)."""
    try:
        batch = decode_batch(payload)
    except InvalidBatch as exc:
        dead_letter_payload(payload, "invalid_batch", str(exc), ROUTINE_TASK)
        return 0
    effects = routine_effects(batch, processed_ts=time.time())
    try:
        applied = context.store().apply_batch(
            batch.batch_id, batch.tier, effects.delta, effects.latency, effects.readings
        )
    except (RedisConnectionError, RedisTimeoutError, TransientError) as exc:
        if self.request.retries >= MAX_RETRIES:
            dead_letter_payload(payload, "retries_exhausted", repr(exc), ROUTINE_TASK)
            return 0
        raise self.retry(exc=exc, countdown=min(0.2 * 2**self.request.retries, 10.0)) from exc
    return effects.readings if applied else 0
