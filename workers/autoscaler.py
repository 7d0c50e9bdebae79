"""``worker_autoscaler``: a worker's pool sized from broker queue depth, arrival and forecast.

Celery calls the autoscaler on the worker's event loop (``maybe_scale`` on every
task message and every ``keepalive`` seconds), so nothing there may wait on
Redis. A background thread refreshes the figures every ``autoscale_refresh_s``
(one pipelined round trip for the queues, one for the pool heartbeats), runs
the policies and leaves a ``PoolFigures``; the loop only compares that cached
target with the pool. Growth is immediate; shrinking follows the policies'
stabilisation window. Figures older than ``STALE_REFRESHES`` refreshes are not
acted on: while Redis cannot be read the pool keeps its size.

Each refresh also reads the region's maintenance pre-drain level
(``Keys.maintenance_drain``, published by the maintenance tick): the ledger
holds those slots back, so the pool shrinks ahead of a window and grows back
after it, within one refresh of the level changing.

Enable with ``celery worker --autoscale MAX,MIN`` (``worker_autoscaler`` in
celeryconfig points here unless ``IOTSCHED_AUTOSCALER=stock``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
from celery.worker import state
from celery.worker.autoscale import Autoscaler

from scheduler.pool_sizing import LocalLoad, PoolFigures, PoolSizer
from scheduler.rate_meter import ARRIVAL_WINDOW_S, RateMeter
from scheduler.region_sizing import work_class
from scheduler.service_meter import ServiceMeter
from scheduler.settings import Settings
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats, pool_share
from stores.queue_depth import QueueDepthReader
from tasks.app import app as task_app
from workers import busy_time
from workers.fork_guard import no_fork_meanwhile

logger = logging.getLogger(__name__)

#: Figures this many refresh intervals old are stale: hold the pool as it is.
STALE_REFRESHES = 8
#: A pool heartbeat older than this many refreshes (at least 3 s) is a gone worker.
HEARTBEAT_REFRESHES = 12
AUTOSCALER_PATH = "workers.autoscaler:QueueDepthAutoscaler"


def _queue_of(req: Any) -> str | None:
    info = getattr(req, "delivery_info", None) or {}
    key = info.get("routing_key")
    return str(key) if key else None


def heartbeat_fresh_s(cfg: Settings) -> float:
    return max(3.0, HEARTBEAT_REFRESHES * cfg.autoscale_refresh_s)


class QueueDepthAutoscaler(Autoscaler):  # type: ignore[misc]
    """Celery's autoscaler with the decision moved to cached, broker-wide figures."""

    def __init__(
        self,
        pool: Any,
        max_concurrency: int,
        min_concurrency: int = 0,
        worker: Any = None,
        keepalive: float | None = None,
        mutex: Any = None,
        *,
        settings: Settings | None = None,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.settings = cfg = settings or task_app.runtime.settings
        # The stock class uses keepalive as the loop's re-check period (and as a
        # shrink delay, which the policies' window replaces).
        super().__init__(
            pool, max_concurrency, min_concurrency, worker=worker,
            keepalive=keepalive or cfg.autoscale_refresh_s, mutex=mutex,
        )  # fmt: skip
        self.clock = clock
        self.node = str(getattr(worker, "hostname", None) or "worker")
        self.queues = tuple(self._consuming()) if worker is not None else ()
        self.region = self.queues[0].partition(".")[0] if self.queues else ""
        self.keys = Keys(cfg.key_prefix)
        self.sizer = PoolSizer(self.queues, cfg)
        self.service = ServiceMeter(cfg.service_rps_prior)
        self.busy_time = busy_time.install()
        self.meter = RateMeter(max(ARRIVAL_WINDOW_S, 4 * cfg.autoscale_refresh_s))
        self.figures: PoolFigures | None = None
        #: Built on first refresh from settings unless given (tests pass fakeredis).
        self._state_client: redis.Redis | None = client
        self._reader: QueueDepthReader | None = (
            None if client is None else QueueDepthReader(client, self.keys, client, clock)
        )
        #: Messages taken per queue, written only by the event loop; the
        #: refresher reads a copy and reports the growth since its last flush.
        self._taken: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        self._share = (0, 1)
        self._region_current: int | None = None
        #: The region's pre-drain level as last read by the refresher.
        self.maintenance_slots = 0
        #: False: nothing refreshes on its own; the caller drives ``refresh()`` (tests).
        self.background = background
        self._refresher: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- event loop side: cheap, never touches Redis ---------------------------------

    def on_task_received(self, req: Any) -> None:
        super().on_task_received(req)
        queue = _queue_of(req)
        if queue is not None:
            self._taken[queue] = self._taken.get(queue, 0) + 1

    def maybe_scale(self, req: Any = None) -> None:
        self._ensure_refresher()
        super().maybe_scale(req)

    def _maybe_scale(self, req: Any = None) -> bool:
        figures = self.figures
        stale_s = STALE_REFRESHES * self.settings.autoscale_refresh_s
        if figures is None or self.clock() - figures.at_ts > stale_s:
            return False
        target = min(self.max_concurrency, max(self.min_concurrency, figures.target_slots))
        procs = self.processes
        if target > procs:
            self.scale_up(target - procs)
            return True
        if target < procs:
            self._shrink(procs - target)
            return True
        return False

    def body(self) -> None:
        # Pools without an event loop (threads, solo) run this on Celery's own thread.
        self._ensure_refresher()
        with self.mutex:
            self.maybe_scale()
        time.sleep(self.keepalive)

    def _ensure_refresher(self) -> None:
        # Started on first use, after the pool has forked its first children.
        if self._refresher is None and self.background:
            self._refresher = threading.Thread(
                target=self._refresh_forever, name="iotsched-autoscale", daemon=True
            )
            self._refresher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            # bgThread.stop joins a thread that was started; ours may be the only one.
            self._refresher.join(timeout=2 * self.settings.autoscale_refresh_s + 1)
        if self.is_alive():
            super().stop()

    def info(self) -> dict[str, Any]:
        base: dict[str, Any] = super().info()
        figures = self.figures
        if figures is not None:
            base.update(target=figures.target_slots, region=figures.region_slots,
                        reason=figures.reason)  # fmt: skip
        return base

    # -- background thread side: reads Redis, runs the policies --------------------------

    def _refresh_forever(self) -> None:
        interval_s = self.settings.autoscale_refresh_s
        failing = False
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                with no_fork_meanwhile():  # over TLS a fork mid-call can hang the child
                    self.refresh()
                if failing:
                    logger.info("autoscaler: queue figures readable again")
                failing = False
            except Exception as exc:  # keep refreshing; the loop holds its size meanwhile
                if not failing:
                    logger.warning("autoscaler: cannot refresh queue figures: %r", exc)
                failing = True
            self._stopping.wait(max(0.0, interval_s - (time.monotonic() - started)))

    def _consuming(self) -> list[str]:
        consume_from = self.worker.app.amqp.queues.consume_from
        return [str(name) for name in list(consume_from or {})]

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
        reserved = Counter(_queue_of(r) for r in tuple(state.reserved_requests))
        active = Counter(_queue_of(r) for r in tuple(state.active_requests))
        waiting = {q: max(0, n - active.get(q, 0)) for q, n in reserved.items() if q}
        busy = {q: n for q, n in active.items() if q}
        return LocalLoad(waiting, busy), sum(active.values())

    def refresh(self) -> PoolFigures | None:
        """One refresh: sample, size, publish this pool's heartbeat; returns the figures."""
        reader, client = self._clients()
        taken_now = dict(self._taken)
        delta = {q: n - self._flushed.get(q, 0) for q, n in taken_now.items()}
        sample = reader.sample(self.queues, delta)
        self._flushed = taken_now
        local, busy_slots = self.local_load()
        busy_s, finished = self.busy_time.totals()
        service_rps = self.service.update(finished, busy_s)
        rates = self.meter.update(sample)
        self.maintenance_slots = self.drain_level(client)
        consuming = self._consuming()
        figures = None
        if rates is not None:
            figures = self.sizer.size(
                rates,
                local,
                service_rps,
                bounds=(self.min_concurrency, self.max_concurrency),
                share=self._share,
                consuming=consuming,
                region_current_slots=self._region_current,
                maintenance_reserved_slots=self.maintenance_slots,
            )
            self.figures = figures
        held = sum(local.busy.values()) + sum(local.waiting.values())
        if figures is not None and self.region:
            desired = desired_replicas_by_class(self.region, figures, self.max_concurrency)
            client.hset(self.keys.scaling_desired, mapping=desired)  # type: ignore[arg-type]
        self._exchange_heartbeats(
            client, sample.at_ts, busy_slots, (busy_s, finished), held, bool(consuming), figures
        )
        return figures

    def drain_level(self, client: redis.Redis) -> int:
        """Slots the maintenance tick holds back from this region's data pools now."""
        raw: Any = client.hget(self.keys.maintenance_drain, self.region)
        return max(0, int(raw)) if raw is not None else 0

    def _exchange_heartbeats(
        self,
        client: redis.Redis,
        now_ts: float,
        busy_slots: int,
        work: tuple[float, int],
        held: int,
        consuming: bool,
        figures: PoolFigures | None,
    ) -> None:
        beat = PoolBeat(
            node=self.node,
            region=self.region,
            slots=self.processes,
            busy=busy_slots,
            busy_s=work[0],
            finished=work[1],
            held=held,
            max_slots=self.max_concurrency,
            min_slots=self.min_concurrency,
            target_slots=figures.target_slots if figures else self.processes,
            region_slots=figures.region_slots if figures else None,
            service_rps=self.service.rate_rps,
            consuming=consuming,
            at_ts=now_ts,
            reason=figures.reason if figures else "warming up",
        )
        beats = PoolHeartbeats(client, self.keys).exchange(beat)
        fresh_s = heartbeat_fresh_s(self.settings)
        self._region_current = sum(
            b.slots
            for b in beats.values()
            if b.region == self.region and b.consuming and b.fresh(now_ts, fresh_s)
        )
        self._share = pool_share(
            self.node, self.region, beats, now_ts, heartbeat_fresh_s(self.settings)
        )


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


def autoscaler_options(max_slots: int, min_slots: int) -> dict[str, Any]:
    """Celery worker options that run this autoscaler between ``min_slots`` and ``max_slots``.

    Use as ``app.Worker(**autoscaler_options(8, 1))`` or on the command line as
    ``celery worker --autoscale 8,1`` (celeryconfig sets ``worker_autoscaler``).
    """
    if not 0 <= min_slots <= max_slots or max_slots < 1:
        raise ValueError(f"need 0 <= min <= max and max >= 1, got {max_slots},{min_slots}")
    return {"autoscale": f"{max_slots},{min_slots}", "autoscaler_cls": AUTOSCALER_PATH}
