"""Publishes micro-batches as Celery tasks: routine on ``{region}.{tier}``, and, with
screening on, the same payload on ``{region}.screen``, which workers take first."""

from __future__ import annotations

from celery import Celery

from scheduler.codec import encode_batch
from scheduler.model import Batch, WorkClass, queue_name
from scheduler.settings import Settings
from tasks.routine import ROUTINE_TASK
from tasks.screen import SCREEN_TASK


class CeleryPublisher:
    def __init__(self, app: Celery, screening: bool | None = None) -> None:
        """``screening`` None follows the environment (``IOTSCHED_SCREENING``, on by default)."""
        self.app = app
        self.screening = Settings.from_env().screening if screening is None else screening

    def publish(self, batch: Batch) -> None:
        payload = encode_batch(batch)
        # Screening first: its queue is drained before routine work, so publish order
        # only matters for a worker idle on both, and then detection should win.
        if self.screening:
            self.app.send_task(
                SCREEN_TASK,
                args=(payload,),
                queue=queue_name(batch.region, WorkClass.SCREEN.value),
                serializer="msgpack",
            )
        self.app.send_task(
            ROUTINE_TASK,
            args=(payload,),
            queue=queue_name(batch.region, batch.tier),
            serializer="msgpack",
        )
