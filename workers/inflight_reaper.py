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

from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.queue_depth import queue_depths
from workers.fork_guard import no_fork_meanwhile

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 1.0


class InflightReaper:
    def __init__(
        self,
        app: Celery,
        ledger: InflightLedger,
        grace_s: float,
        interval_s: float = REAP_INTERVAL_S,
        broker_client: redis.Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        """``broker_client`` reads queue depth on the workers' broker (by default the
        ledger's Redis, which is the broker unless ``IOTSCHED_BROKER_URL`` says otherwise)."""
        self.app = app
        self.ledger = ledger
        self.broker_client = broker_client if broker_client is not None else ledger.client
        self.keys = keys if keys is not None else ledger.keys
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
            self.app.send_task(
                batch.task,
                args=(batch.payload,),
                queue=batch.queue,
                serializer="msgpack",
                argsrepr=f"<batch {batch.batch_id} republished>",
            )
        if overdue:
            log.warning("published %d overdue batches again", len(overdue))
        self.republished += len(overdue)
        return len(overdue)

    def _busy_queues(self, queues: set[str]) -> set[str]:
        depths = queue_depths(self.broker_client, self.keys, sorted(queues))
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
        from tasks import context

        client = getattr(context.store(), "client", None)
        # The embedded worker's broker lives in its own process memory: nothing to reap.
        if not isinstance(client, redis.Redis):
            return
        cfg = context.settings()
        keys = Keys(cfg.key_prefix)
        ledger = InflightLedger(client, keys)
        broker = redis.Redis.from_url(cfg.effective_broker_url)
        self.reaper = InflightReaper(
            parent.app, ledger, grace_s=cfg.visibility_timeout_s, broker_client=broker, keys=keys
        )
        self.reaper.start()

    def stop(self, parent: Any) -> None:
        if self.reaper is not None:
            self.reaper.stop()
            self.reaper = None

    shutdown = stop


def install_inflight_reaper(app: Celery) -> None:
    app.steps["worker"].add(InflightReaperStep)
