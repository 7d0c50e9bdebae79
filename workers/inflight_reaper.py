"""Publish again the routine batches the broker lost (see stores.inflight).

A worker bootstep starts a daemon thread in every data worker's main process;
a lease in Redis makes one of them the reaper at a time. Every second it
takes the batches still in the in-flight ledger past the grace period (the
visibility timeout: what kombu itself would wait before delivering again) and
sends each to its queue. Chunk claims make a copy of a batch that was merely
slow harmless.

"Is this queue still busy?" is answered with LLEN over the queue's prefixed
broker lists (``Keys.broker_queue_lists``), not kombu's passive
``queue_declare``: kombu 5.7's ``global_keyprefix`` does not prefix the
``EXISTS`` that sends, so every queue read as empty and every waiting batch
was published again once per grace period.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import Celery, bootsteps
from kombu.exceptions import ChannelError, OperationalError

from runtime.publisher import Publisher
from scheduler import defaults
from stores.inflight import InflightLedgerStore
from stores.protocols import QueueDepthRead
from workers.fork_guard import no_fork_meanwhile

log = logging.getLogger(__name__)

REAP_INTERVAL_S = defaults.REAP_INTERVAL_S


class InflightReaper:
    def __init__(
        self,
        publisher: Publisher,
        ledger: InflightLedgerStore,
        depth: QueueDepthRead,
        grace_s: float,
        interval_s: float = REAP_INTERVAL_S,
    ) -> None:
        """``depth`` reads the workers' broker: a batch whose queue still holds messages
        is waiting its turn, not lost."""
        self.publisher = publisher
        self.ledger = ledger
        self.depth = depth
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.holder = f"{socket.gethostname()}-{os.getpid()}"
        self.republished = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reap_once(self) -> int:
        if not self.ledger.try_lead(self.holder, ttl_s=3 * self.interval_s):
            return 0
        # A batch whose queue still holds messages may simply be waiting its turn
        # (a backlog, a partitioned region); one whose queue is empty was lost.
        overdue = self.ledger.overdue(time.time(), self.grace_s, skip_queues=self._busy_queues)
        for batch in overdue:
            self.publisher.republish(batch)
        if overdue:
            log.warning("published %d overdue batches again", len(overdue))
        self.republished += len(overdue)
        return len(overdue)

    def _busy_queues(self, queues: set[str]) -> set[str]:
        depths = self.depth.depths(sorted(queues))
        return {q for q, waiting in depths.items() if waiting > 0}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with no_fork_meanwhile():  # over TLS a fork mid-call can hang the child
                    self.reap_once()
            except (redis.RedisError, OperationalError, ChannelError) as exc:
                log.warning("in-flight reaper: %s", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inflight-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s)


class InflightReaperStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: run the in-flight reaper beside the consumer."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.reaper: InflightReaper | None = None

    def start(self, parent: Any) -> None:
        rt = parent.app.runtime
        stores = rt.stores
        grace_s = rt.settings.visibility_timeout_s
        self.reaper = InflightReaper(rt.publisher, stores.inflight, stores.queue_depth, grace_s)
        self.reaper.start()

    def stop(self, parent: Any) -> None:
        if self.reaper is not None:
            self.reaper.stop()
            self.reaper = None

    shutdown = stop


def install_inflight_reaper(app: Celery) -> None:
    app.steps["worker"].add(InflightReaperStep)
