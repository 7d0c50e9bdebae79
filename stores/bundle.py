"""Every store a process uses, behind its Protocol: built for Redis or in memory, once.

``redis_stores`` is what deployed workers and producers use; ``memory_stores`` is
the embedded run's and the task tests'. Both implement every feature: a store is
never switched off for lack of a Redis client. The contract suite
(tests/stores/contract) runs each Protocol against both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from scheduler.settings import Settings
from stores.detector_store import DetectorStore, MemoryDetectorStore, RedisDetectorStore
from stores.dropout_store import DropoutStore, MemoryDropoutStore, RedisDropoutStore
from stores.health_store import HealthStore
from stores.incident_store import IncidentStore, MemoryIncidentStore, RedisIncidentStore
from stores.inflight import InflightLedgerStore, MemoryInflightLedger, RedisInflightLedger
from stores.keys import Keys
from stores.maintenance_ops import RedisMaintenanceOps
from stores.memory_broker import DepthOf, MemoryQueueDepth, MemoryQueueScan, PayloadsOf
from stores.memory_control import (
    MemoryHealthStore,
    MemoryPoolHeartbeats,
    MemoryReservationStore,
    MemoryWorkBudgetStore,
)
from stores.memory_maintenance import MemoryMaintenanceOps
from stores.memory_state import MemoryStateStore
from stores.parked_readings import (
    MemoryParkedReadings,
    ParkedReadingsStore,
    RedisParkedReadings,
)
from stores.pool_heartbeats import PoolHeartbeats
from stores.preemption_signal import (
    MemoryPreemptionSignal,
    PreemptionSignal,
    RedisPreemptionSignal,
)
from stores.protocols import (
    ClaimStore,
    MaintenanceOps,
    PoolHeartbeatStore,
    QueueDepthRead,
    RegionHealthStore,
    ReservationsStore,
    RoutineQueueScan,
    StateStore,
    WorkBudgetStore,
)
from stores.queue_depth_read import RedisQueueDepth
from stores.queue_scan import QueueScan
from stores.redis_state import RedisStateStore
from stores.reservation_store import ReservationStore
from stores.work_budget_store import RedisWorkBudgetStore


@dataclass
class Stores:
    state: StateStore
    #: The claims ``state.apply_batch`` checks (the same store, seen as its claim side).
    claims: ClaimStore
    detector: DetectorStore
    incidents: IncidentStore
    inflight: InflightLedgerStore
    preemption: PreemptionSignal
    dropout: DropoutStore
    reservations: ReservationsStore
    health: RegionHealthStore
    #: The read side of broker queue depth (the workers' broker).
    queue_depth: QueueDepthRead
    pool_heartbeats: PoolHeartbeatStore
    work_budget: WorkBudgetStore
    queue_scan: RoutineQueueScan
    maintenance: MaintenanceOps
    #: Non-premium readings ingest pushed back, parked per region (the MQTT bridge's).
    parked: ParkedReadingsStore
    #: The state Redis where there is one: alert sinks that write a Redis stream use it.
    redis_client: Any | None = None


def redis_stores(
    settings: Settings, client: Any | None = None, broker_client: Any | None = None
) -> Stores:
    """Stores on the deployment's Redis (``settings.redis_url``) under its key prefix.

    ``broker_client`` reads queue depth and waiting batches; by default the state
    client when the broker is the state Redis, a client of ``IOTSCHED_BROKER_URL``
    otherwise. Clients connect on first use.
    """
    keys = Keys(settings.key_prefix)
    state_client: Any = client if client is not None else redis.Redis.from_url(settings.redis_url)
    if broker_client is None:
        same = settings.effective_broker_url == settings.redis_url
        broker_client = (
            state_client if same else redis.Redis.from_url(settings.effective_broker_url)
        )
    regional = {
        r: redis.Redis.from_url(url)
        for r, url in settings.region_broker_urls.items()
        if url and url != settings.effective_broker_url
    }
    state = RedisStateStore(state_client, keys)
    return Stores(
        state=state,
        claims=state,
        detector=RedisDetectorStore(state_client, keys),
        incidents=RedisIncidentStore(state_client, keys),
        inflight=RedisInflightLedger(state_client, keys),
        preemption=RedisPreemptionSignal(broker_client, keys),
        dropout=RedisDropoutStore(state_client, keys),
        reservations=ReservationStore.from_settings(state_client, settings),
        health=HealthStore(state_client, keys, settings.regions, regional),
        queue_depth=RedisQueueDepth(broker_client, keys),
        pool_heartbeats=PoolHeartbeats(state_client, keys),
        work_budget=RedisWorkBudgetStore(state_client, keys),
        queue_scan=QueueScan(broker_client, keys),
        maintenance=RedisMaintenanceOps(state_client, keys),
        parked=RedisParkedReadings(state_client, keys),
        redis_client=state_client,
    )


def memory_stores(
    settings: Settings,
    depth_of: DepthOf | None = None,
    payloads_of: PayloadsOf | None = None,
    state: MemoryStateStore | None = None,
) -> Stores:
    """Stores of one process. ``depth_of`` and ``payloads_of`` read its in-process broker
    (the embedded run); without them queues read as empty."""
    state = state if state is not None else MemoryStateStore()
    detector = MemoryDetectorStore()
    depth = MemoryQueueDepth(depth_of)
    reservations = MemoryReservationStore.from_settings(settings)
    return Stores(
        state=state,
        claims=state,
        detector=detector,
        incidents=MemoryIncidentStore(),
        inflight=MemoryInflightLedger(),
        preemption=MemoryPreemptionSignal(depth),
        dropout=MemoryDropoutStore(detector),
        reservations=reservations,
        health=MemoryHealthStore(settings.regions, depth, reservations.drain_levels),
        queue_depth=depth,
        pool_heartbeats=MemoryPoolHeartbeats(),
        work_budget=MemoryWorkBudgetStore(),
        queue_scan=MemoryQueueScan(payloads_of or (lambda _queue: [])),
        maintenance=MemoryMaintenanceOps(state, detector),
        parked=MemoryParkedReadings(),
    )
