"""Region workers heartbeat: ``HSET heartbeats region → ts`` every second while they run.

A worker bootstep (in the main worker process, beside the consumer) starts a
daemon thread. Only data workers heartbeat: placement asks "can this region
process readings", which maintenance workers do not answer. The region comes
from the data queues the worker consumes (``{region}.{kind}``), so it works for
any launch profile without another setting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from celery import Celery, bootsteps

from scheduler.model import DATA_QUEUE_KINDS
from stores.keys import Keys

log = logging.getLogger(__name__)

#: Seconds between heartbeats; the silence timeout of region health is several of these.
HEARTBEAT_INTERVAL_S = 1.0
_DATA_KINDS = frozenset(DATA_QUEUE_KINDS)


def regions_served(queue_names: Iterable[str]) -> list[str]:
    """Regions whose data queues (anomaly, screen, premium, standard) are among ``queue_names``."""
    regions = set()
    for q in queue_names:
        region, _, kind = q.rpartition(".")
        if region and kind in _DATA_KINDS:
            regions.add(region)
    return sorted(regions)


class Heartbeater:
    """Writes this process's regions' heartbeat on a timer thread until stopped."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        regions: Iterable[str],
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = keys
        self.regions = tuple(regions)
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self) -> None:
        now = repr(self.clock())
        self.client.hset(self.keys.heartbeats, mapping={r: now for r in self.regions})

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat_once()
            except redis.RedisError as exc:
                # Missing beats are the signal: the region looks partitioned, as it is.
                log.warning("heartbeat for %s failed: %s", self.regions, exc)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None and self.regions:
            self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s)
            self._thread = None


class RegionHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: heartbeat the regions whose data queues this worker consumes."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeater: Heartbeater | None = None

    def start(self, parent: Any) -> None:
        from tasks import context

        regions = regions_served(parent.app.amqp.queues.consume_from or {})
        client = getattr(context.store(), "client", None)
        # The embedded worker keeps state in memory: there is no one to tell.
        if not regions or not isinstance(client, redis.Redis):
            return
        self.heartbeater = Heartbeater(client, Keys(context.settings().key_prefix), regions)
        self.heartbeater.start()

    def stop(self, parent: Any) -> None:
        if self.heartbeater is not None:
            self.heartbeater.stop()
            self.heartbeater = None

    shutdown = stop


def install_heartbeat(app: Celery) -> None:
    """Add the heartbeat bootstep to ``app``'s workers."""
    app.steps["worker"].add(RegionHeartbeat)
