"""The autoscaler's background side: one refresh reads Redis, runs the policies, beats.

``QueueDepthAutoscaler`` runs ``PoolRefresher.refresh`` off the worker's event loop
every ``autoscale_refresh_s``: one pipelined round trip samples the broker's queues,
the pool's own load and busy time are read locally, the region's maintenance pre-drain
level is read, the pool sizer turns it all into ``PoolFigures``, and the pool
heartbeats are exchanged (which set this pool's share of the region and the region's
current size for the next refresh). The autoscaler acts only on the figures returned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import redis
from celery.worker import state

from scheduler.pool_sizing import LocalLoad, PoolFigures, PoolSizer
from scheduler.rate_meter import ARRIVAL_WINDOW_S, RateMeter
from scheduler.region_sizing import work_class
from scheduler.service_meter import ServiceMeter
from scheduler.settings import Settings
from stores.health_store import DATA_ROLE, LANE_ROLE
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats, pool_share
from stores.queue_depth import QueueDepthReader
from workers import busy_time
from workers.heartbeat import lanes_served

#: A pool heartbeat older than this many refreshes (at least 3 s) is a gone worker.
HEARTBEAT_REFRESHES = 12


def queue_of(req: Any) -> str | None:
    """The queue a task request was delivered from, if it says."""
    info = getattr(req, "delivery_info", None) or {}
    key = info.get("routing_key")
    return str(key) if key else None


def heartbeat_fresh_s(cfg: Settings) -> float:
    return max(3.0, HEARTBEAT_REFRESHES * cfg.autoscale_refresh_s)


class PoolView(Protocol):
    """The pool as the event loop keeps it (``QueueDepthAutoscaler``), read at refresh."""

    @property
    def processes(self) -> int: ...
    @property
    def min_concurrency(self) -> int: ...
    @property
    def max_concurrency(self) -> int: ...
    def consuming(self) -> list[str]: ...


class PoolRefresher:
    """What one worker pool's refresh reads and publishes; never runs on the event loop."""

    def __init__(
        self,
        settings: Settings,
        node: str,
        queues: tuple[str, ...],
        clock: Callable[[], float],
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = cfg = settings
        self.clock = clock
        self.node = node
        self.queues = queues
        self.region = queues[0].partition(".")[0] if queues else ""
        self.role = LANE_ROLE if lanes_served(queues) else DATA_ROLE
        self.keys = Keys(cfg.key_prefix)
        self.sizer = PoolSizer(queues, cfg)
        self.service = ServiceMeter(cfg.service_rps_prior)
        self.busy_time = busy_time.install()
        self.meter = RateMeter(max(ARRIVAL_WINDOW_S, 4 * cfg.autoscale_refresh_s))
        #: Built on first refresh from settings unless given (tests pass fakeredis).
        self._state_client: redis.Redis | None = client
        self._reader: QueueDepthReader | None = (
            None if client is None else QueueDepthReader(client, self.keys, client, clock)
        )
        #: Messages taken per queue as of the last refresh.
        self._flushed: dict[str, int] = {}
        self._share = (0, 1)
        self._region_current: int | None = None
        #: The region's pre-drain level as last read.
        self.maintenance_slots = 0

    def _clients(self) -> tuple[QueueDepthReader, redis.Redis]:
        if self._reader is None or self._state_client is None:
            cfg = self.settings
            self._state_client = redis.Redis.from_url(cfg.redis_url, socket_timeout=5.0)
            broker = (
                self._state_client
                if cfg.effective_broker_url == cfg.redis_url
                else redis.Redis.from_url(cfg.effective_broker_url, socket_timeout=5.0)
            )
            self._reader = QueueDepthReader(broker, self.keys, self._state_client, self.clock)
        return self._reader, self._state_client

    def local_load(self) -> tuple[LocalLoad, int]:
        """What this worker holds per queue, and the slots busy now."""
        # tuple()/dict() copy these in one step under the GIL while the loop mutates them.
        reserved = Counter(queue_of(r) for r in tuple(state.reserved_requests))
        active = Counter(queue_of(r) for r in tuple(state.active_requests))
        waiting = {q: max(0, n - active.get(q, 0)) for q, n in reserved.items() if q}
        busy = {q: n for q, n in active.items() if q}
        return LocalLoad(waiting, busy), sum(active.values())

    def refresh(self, pool: PoolView, taken_now: dict[str, int]) -> PoolFigures | None:
        """One refresh: sample, size, publish this pool's heartbeat; returns the figures.

        ``taken_now``: the messages the event loop has taken per queue so far."""
        reader, client = self._clients()
        delta = {q: n - self._flushed.get(q, 0) for q, n in taken_now.items()}
        sample = reader.sample(self.queues, delta)
        self._flushed = taken_now
        local, busy_slots = self.local_load()
        busy_s, finished = self.busy_time.totals()
        service_rps = self.service.update(finished, busy_s)
        rates = self.meter.update(sample)
        self.maintenance_slots = self.drain_level(client)
        consuming = pool.consuming()
        figures = None
        if rates is not None:
            figures = self.sizer.size(
                rates,
                local,
                service_rps,
                bounds=(pool.min_concurrency, pool.max_concurrency),
                share=self._share,
                consuming=consuming,
                region_current_slots=self._region_current,
                maintenance_reserved_slots=self.maintenance_slots,
            )
        held = sum(local.busy.values()) + sum(local.waiting.values())
        # A premium lane's figures cover its own queues: the data pools' replicas are not its.
        if figures is not None and self.region and self.role == DATA_ROLE:
            desired = desired_replicas_by_class(self.region, figures, pool.max_concurrency)
            client.hset(self.keys.scaling_desired, mapping=desired)  # type: ignore[arg-type]
        beat = PoolBeat(
            node=self.node,
            region=self.region,
            slots=pool.processes,
            busy=busy_slots,
            busy_s=busy_s,
            finished=finished,
            held=held,
            max_slots=pool.max_concurrency,
            min_slots=pool.min_concurrency,
            target_slots=figures.target_slots if figures else pool.processes,
            region_slots=figures.region_slots if figures else None,
            service_rps=self.service.rate_rps,
            consuming=bool(consuming),
            at_ts=sample.at_ts,
            reason=figures.reason if figures else "warming up",
            role=self.role,
        )
        self._exchange_heartbeats(client, beat)
        return figures

    def drain_level(self, client: redis.Redis) -> int:
        """Slots the maintenance tick holds back from this region's data pools now."""
        raw: Any = client.hget(self.keys.maintenance_drain, self.region)
        return max(0, int(raw)) if raw is not None else 0

    def _exchange_heartbeats(self, client: redis.Redis, beat: PoolBeat) -> None:
        beats = PoolHeartbeats(client, self.keys).exchange(beat)
        now_ts = beat.at_ts
        fresh_s = heartbeat_fresh_s(self.settings)
        self._region_current = sum(
            b.slots
            for b in beats.values()
            if b.region == self.region
            and b.role == self.role
            and b.consuming
            and b.fresh(now_ts, fresh_s)
        )
        self._share = pool_share(self.node, self.region, beats, now_ts, fresh_s, self.role)


def desired_replicas_by_class(
    region: str, figures: PoolFigures, slots_per_replica: int
) -> dict[str, int]:
    """Worker replicas (of ``slots_per_replica`` slots each) the region's grants call for:
    per work class, and "all" for the region's data pools together."""
    per = max(1, slots_per_replica)
    by_class: dict[str, int] = {}
    for queue, slots in figures.grants.items():
        cls = work_class(queue).value
        by_class[cls] = by_class.get(cls, 0) + slots
    out = {f"{region}:{cls}": -(-slots // per) for cls, slots in by_class.items()}
    out[f"{region}:all"] = -(-figures.region_slots // per)
    return out
