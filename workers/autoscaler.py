"""``worker_autoscaler``: a worker's pool sized from broker queue depth, arrival and forecast.

Celery calls the autoscaler on the worker's event loop (``maybe_scale`` on every
task message and every ``keepalive`` seconds), so nothing there may wait on
Redis. A background thread refreshes the figures every ``autoscale_refresh_s``
(``workers.pool_refresher``: one pipelined round trip for the queues, one for the
pool heartbeats), runs the policies and leaves a ``PoolFigures``; the loop only
compares that cached target with the pool. Growth is immediate; shrinking follows the policies'
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
from collections.abc import Callable
from typing import Any

import redis
from celery.worker.autoscale import Autoscaler

from scheduler.pool_sizing import PoolFigures
from scheduler.settings import Settings
from tasks.app import app as task_app
from workers.fork_guard import no_fork_meanwhile
from workers.pool_refresher import PoolRefresher, queue_of

logger = logging.getLogger(__name__)

#: Figures this many refresh intervals old are stale: hold the pool as it is.
STALE_REFRESHES = 8
AUTOSCALER_PATH = "workers.autoscaler:QueueDepthAutoscaler"


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
        self.queues = tuple(self.consuming()) if worker is not None else ()
        self.refresher = PoolRefresher(cfg, self.node, self.queues, clock, client)
        self.figures: PoolFigures | None = None
        #: Messages taken per queue, written only by the event loop; the
        #: refresher reads a copy and reports the growth since its last refresh.
        self._taken: dict[str, int] = {}
        #: False: nothing refreshes on its own; the caller drives ``refresh()`` (tests).
        self.background = background
        self._refresh_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- event loop side: cheap, never touches Redis ---------------------------------

    def on_task_received(self, req: Any) -> None:
        super().on_task_received(req)
        queue = queue_of(req)
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
        if self._refresh_thread is None and self.background:
            self._refresh_thread = threading.Thread(
                target=self._refresh_forever, name="iotsched-autoscale", daemon=True
            )
            self._refresh_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if (
            self._refresh_thread is not None
            and self._refresh_thread is not threading.current_thread()
        ):
            # bgThread.stop joins a thread that was started; ours may be the only one.
            self._refresh_thread.join(timeout=2 * self.settings.autoscale_refresh_s + 1)
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

    def consuming(self) -> list[str]:
        """The queues this worker consumes from now."""
        consume_from = self.worker.app.amqp.queues.consume_from
        return [str(name) for name in list(consume_from or {})]

    def refresh(self) -> PoolFigures | None:
        """One refresh (``PoolRefresher.refresh``); the figures the loop acts on."""
        figures = self.refresher.refresh(self, dict(self._taken))
        if figures is not None:
            self.figures = figures
        return figures


def autoscaler_options(max_slots: int, min_slots: int) -> dict[str, Any]:
    """Celery worker options that run this autoscaler between ``min_slots`` and ``max_slots``.

    Use as ``app.Worker(**autoscaler_options(8, 1))`` or on the command line as
    ``celery worker --autoscale 8,1`` (celeryconfig sets ``worker_autoscaler``).
    """
    if not 0 <= min_slots <= max_slots or max_slots < 1:
        raise ValueError(f"need 0 <= min <= max and max >= 1, got {max_slots},{min_slots}")
    return {"autoscale": f"{max_slots},{min_slots}", "autoscaler_cls": AUTOSCALER_PATH}
