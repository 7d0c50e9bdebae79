"""Publishes micro-batches as Celery tasks on ``{region}.{tier}`` queues."""

from __future__ import annotations

from celery import Celery

from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from tasks.routine import ROUTINE_TASK


class CeleryPublisher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, batch: Batch) -> None:
        self.app.send_task(
            ROUTINE_TASK,
            args=(encode_batch(batch),),
            queue=queue_name(batch.region, batch.tier),
            serializer="msgpack",
        )
