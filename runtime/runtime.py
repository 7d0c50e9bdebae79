"""The Runtime: what every task, loop and producer of a process works with, built once.

A worker process builds it from ``Settings`` on first use (again in each forked
pool child: ``worker_process_init``); a producer command builds it for its
broker; the embedded run and the tests build one in memory and install it on
the app. Code that needs a store or a send takes the Runtime and uses
``runtime.stores.X`` or ``runtime.publisher.send_X``: nothing looks for a Redis
client, nothing keeps its own per-process copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from alerts.config import sinks_from_settings
from alerts.document import AlertSink
from runtime.publisher import Publisher
from scheduler.correlation import CorrelatorConfig
from scheduler.settings import Settings
from stores.bundle import Stores, memory_stores, redis_stores
from stores.memory_broker import DepthOf, PayloadsOf
from stores.memory_state import MemoryStateStore
from stores.registry_cache import RegistryCache


@dataclass
class Runtime:
    settings: Settings
    stores: Stores
    publisher: Publisher
    #: Epoch seconds; event times, deadlines and ledger clocks read it.
    clock: Callable[[], float] = time.time
    #: Where incident notifications go (the alert stream, the log, webhooks).
    sinks: Sequence[AlertSink] = ()
    correlator: CorrelatorConfig = field(default_factory=CorrelatorConfig)
    #: The device registry snapshot, reloaded when its stored version changes.
    registry: RegistryCache = field(init=False)

    def __post_init__(self) -> None:
        self.registry = RegistryCache(self.stores.state)


def redis_runtime(
    settings: Settings,
    app: Celery,
    region_apps: dict[str, Celery] | None = None,
    client: Any | None = None,
) -> Runtime:
    """The deployed runtime: stores on ``settings.redis_url``, sends through ``app``."""
    stores = redis_stores(settings, client=client)
    publisher = Publisher(app, stores.inflight, region_apps=region_apps)
    return Runtime(
        settings,
        stores,
        publisher,
        sinks=sinks_from_settings(settings, stores.redis_client),
    )


def memory_runtime(
    settings: Settings,
    app: Celery,
    state: MemoryStateStore | None = None,
    depth_of: DepthOf | None = None,
    payloads_of: PayloadsOf | None = None,
) -> Runtime:
    """A runtime of one process: every store in memory, sends through ``app`` (whose
    broker ``depth_of`` and ``payloads_of`` read, for preemption and acceleration)."""
    stores = memory_stores(settings, depth_of, payloads_of, state)
    return Runtime(
        settings,
        stores,
        Publisher(app, stores.inflight),
        sinks=sinks_from_settings(settings, None),
    )
