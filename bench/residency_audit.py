"""Residency, audited where it shows: in what is published and in what waits in a broker.

Where a reading is processed is the region of the queue it was published to: a
region's workers consume only ``{region}.*`` (``workers/profiles.py``), on that
region's broker. So an audit wraps the publisher and counts readings published
outside their allowed regions, and ``queued_batches`` decodes what actually sits in a
region's broker lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.producer import Publisher
from scheduler.codec import decode_batch
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry
from stores.connection import RedisClient
from stores.health_store import DATA_KINDS
from stores.keys import Keys
from stores.queue_scan import decode_routine


@dataclass
class AuditPublisher:
    """Counts, per published batch, readings outside their allowed regions (must stay 0)."""

    inner: Publisher
    registry: Registry
    outside_allowed: int = 0
    published: dict[str, int] = field(default_factory=dict)

    def publish(self, batch: Batch) -> None:
        bit = 1 << self.registry.topology.region_code(batch.region)
        rows = self.registry.lookup(batch.device_id)
        self.outside_allowed += int(((self.registry.allowed_mask[rows] & bit) == 0).sum())
        self.published[batch.region] = self.published.get(batch.region, 0) + len(batch)
        self.inner.publish(batch)


def queued_batches(client: RedisClient, keys: Keys, region: str) -> list[Batch]:
    """Decode every routine batch waiting in ``region``'s data queues, as the broker holds it."""
    found = []
    for kind in DATA_KINDS:
        for key in keys.broker_queue_lists(queue_name(region, kind)):
            for raw in client.lrange(key, 0, -1):
                payload = decode_routine(raw)
                if payload is not None:
                    found.append(decode_batch(payload))
    return found
