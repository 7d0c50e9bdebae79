"""Publish each region's batches to that region's broker.

``Settings.region_broker_urls`` (``IOTSCHED_BROKER_URL_<REGION>``) names a
broker per region; regions without one use the shared app. One Celery app per
distinct broker URL, each wrapped in the ordinary CeleryPublisher, so what is
published (task, queues, serializer) stays defined in one place.

A region's workers must consume from the same broker: start them with
``IOTSCHED_BROKER_URL`` set to that region's URL.
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery

from ingest.celery_publisher import CeleryPublisher
from runtime.celery_app import region_apps
from scheduler.model import Batch
from stores.inflight import InflightLedgerStore


class RegionalPublisher:
    def __init__(
        self,
        default_app: Celery,
        region_apps: Mapping[str, Celery] | None = None,
        screening: bool | None = None,
        ledger: InflightLedgerStore | None = None,
    ) -> None:
        """``screening`` and ``ledger`` as for CeleryPublisher."""
        self.default = CeleryPublisher(default_app, screening, ledger=ledger)
        self._by_region = {
            r: CeleryPublisher(a, screening, ledger=ledger) for r, a in (region_apps or {}).items()
        }
        self._owned: list[Celery] = []

    @classmethod
    def from_urls(
        cls,
        default_app: Celery,
        region_broker_urls: Mapping[str, str],
        screening: bool | None = None,
        ledger: InflightLedgerStore | None = None,
    ) -> RegionalPublisher:
        """One app per distinct region broker URL, configured like ``default_app`` otherwise."""
        apps = region_apps(default_app, region_broker_urls)
        publisher = cls(default_app, apps, screening, ledger)
        publisher._owned = list({id(a): a for a in apps.values()}.values())
        return publisher

    def app_for(self, region: str) -> Celery:
        return self._by_region.get(region, self.default).app

    def publish(self, batch: Batch) -> None:
        self._by_region.get(batch.region, self.default).publish(batch)

    def publish_many(self, batches: list[Batch]) -> None:
        by_publisher: dict[int, tuple[CeleryPublisher, list[Batch]]] = {}
        for batch in batches:
            publisher = self._by_region.get(batch.region, self.default)
            by_publisher.setdefault(id(publisher), (publisher, []))[1].append(batch)
        for publisher, group in by_publisher.values():
            publisher.publish_many(group)

    def screen_many(self, batches: list[Batch]) -> bool:
        """Screening copies only, each to its region's broker; False when screening is off."""
        by_publisher: dict[int, tuple[CeleryPublisher, list[Batch]]] = {}
        for batch in batches:
            publisher = self._by_region.get(batch.region, self.default)
            by_publisher.setdefault(id(publisher), (publisher, []))[1].append(batch)
        return all([p.screen_many(group) for p, group in by_publisher.values()])

    def poll(self, now_ts: float | None = None) -> None:
        for publisher in {id(p): p for p in (self.default, *self._by_region.values())}.values():
            publisher.poll(now_ts)

    def flush(self) -> None:
        for publisher in {id(p): p for p in (self.default, *self._by_region.values())}.values():
            publisher.flush()

    def close(self) -> None:
        """Close the broker connections of the apps this publisher created."""
        for a in self._owned:
            a.close()
        self._owned = []
