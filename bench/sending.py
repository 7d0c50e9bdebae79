"""The one way benches send work to workers.

Routine micro-batches (and, with screening on, their screening copies) go through the
producer's publisher, the same code path ``iotsched produce`` uses, with the in-flight
ledger when one is given. When the runtime's ``Publisher`` lands, the two constructors
here are the one place to change. Anomaly probes are not routine work: they go straight to the
anomaly queue, as an operator's probe would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from celery import Celery

from ingest.celery_publisher import CeleryPublisher
from ingest.regional_publisher import RegionalPublisher
from scheduler.model import Batch, WorkClass, queue_name
from stores.inflight import InflightLedger
from tasks.routine import PROBE_TASK


def bench_publisher(
    app: Celery, *, screening: bool | None = None, ledger: InflightLedger | None = None
) -> CeleryPublisher:
    """The publisher every bench sends routine work through; ``screening`` None follows
    the environment (``IOTSCHED_SCREENING``, on by default), as a producer does."""
    return CeleryPublisher(app, screening=screening, ledger=ledger)


def bench_regional_publisher(
    app: Celery,
    region_broker_urls: Mapping[str, str],
    *,
    screening: bool | None = None,
    ledger: InflightLedger | None = None,
) -> RegionalPublisher:
    """The same publisher, for regions with brokers of their own (``app`` for the rest)."""
    return RegionalPublisher.from_urls(app, region_broker_urls, screening=screening, ledger=ledger)


def send_batches(publisher: CeleryPublisher, batches: Iterable[Batch]) -> int:
    """Publish ready micro-batches now, screening copies included; returns the readings sent."""
    ready = list(batches)
    publisher.publish_many(ready)
    if publisher.screening:
        # A bench's batches are already whole: their screening copies go out with them.
        publisher.flush()
    return sum(len(b) for b in ready)


def send_probe(app: Celery, region: str, hold_ms: float) -> None:
    """An anomaly probe on ``{region}.anomaly``: it records its wait, enqueued → started."""
    queue = queue_name(region, WorkClass.ANOMALY.value)
    app.send_task(PROBE_TASK, args=(region, time.time(), hold_ms), queue=queue)
