"""What a producer command (``produce``, ``mqtt-bridge``) ingests through, built one way.

The process's Runtime on ``client``, placement (home region unless it is partitioned
or overloaded, never outside residency), the per-region publisher on the Runtime's
in-flight ledger, and admission control, on by default: non-premium readings a region
cannot drain within its wait budget are handed back (premium always flows); and premium
coalescing, on by default: a premium batch due while its region's premium queue is backed
up waits in the batcher for the readings behind it (``scheduler.premium_coalescing``).
A region with a broker of its own reads as not backed up (its premium goes out at the
age limit), as its depth is read on the shared Redis like the admission gate's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery

from ingest.backlog_gate import QueueBacklogGate, admission_gate
from ingest.placement import RegionalPlacer, make_placer
from ingest.premium_backlog import PremiumBacklog
from ingest.producer import Producer
from ingest.regional_publisher import RegionalPublisher
from runtime.runtime import Runtime, redis_runtime
from scheduler.held_screening import HeldScreenBudget
from scheduler.settings import Settings
from scheduler.validation import Limits
from stores.connection import RedisClient, connect
from stores.keys import Keys


@dataclass
class ProducerWiring:
    runtime: Runtime
    placer: RegionalPlacer
    publisher: RegionalPublisher
    backlog_gate: QueueBacklogGate
    premium_backlog: PremiumBacklog

    def producer(self, producer_id: str, *, admission: bool = True, **options: Any) -> Producer:
        """A producer ingesting through this wiring (``options``: the rest of ``Producer``'s).

        ``admission=False`` leaves admission control off, for a deliberate, bounded
        re-offer such as a dead-letter replay: a reading handed back there would have
        nowhere to go."""
        return Producer(
            self.runtime.registry.get,
            self.publisher,
            self.runtime.stores.state,
            limits=Limits(metrics=self.runtime.settings.metrics),
            producer_id=producer_id,
            placer=self.placer,
            backlog_gate=self.backlog_gate if admission else None,
            screen_cost=self._screen_cost if admission else None,
            held_screening=self.backlog_gate.feed(HeldScreenBudget()) if admission else None,
            premium_backlog=self.premium_backlog,
            **options,
        )

    def _screen_cost(self) -> float | None:
        return self.backlog_gate.screen_cost_ratio

    def close(self) -> None:
        self.placer.close()
        self.publisher.close()


def wire_producer(settings: Settings, app: Celery, client: RedisClient) -> ProducerWiring:
    """The Runtime, placer, publisher and admission gate of a producer sending via ``app``."""
    keys = Keys(settings.key_prefix)
    rt = redis_runtime(settings, app, client=client)
    placer = make_placer(
        client,
        keys,
        settings.topology,
        broker_clients={r: connect(u) for r, u in settings.region_broker_urls.items()},
    )
    publisher = RegionalPublisher.from_urls(
        app, settings.region_broker_urls, ledger=rt.stores.inflight
    )
    return ProducerWiring(
        rt,
        placer,
        publisher,
        admission_gate(settings, client, keys),
        PremiumBacklog(client, keys, settings.topology),
    )
