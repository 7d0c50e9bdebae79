"""Publishes micro-batches as Celery tasks: routine on ``{region}.{tier}`` and, with
screening on, the same readings on a screening queue: ``{region}.screen_premium`` for
premium readings (taken before premium processing) and ``{region}.screen`` for every
other tier (taken after premium processing, before standard), so screening of standard
readings can never hold premium up under overload.

Screening copies are coalesced per (region, screening queue) (flushed on size, or once
``screen_max_age_ms`` old): premium's routine batches are small and frequent
because of its 25 ms age limit, and one screen message per routine batch would
spend more on per-message overhead than on detection. Detection's budget (1 s)
leaves room for a 100 ms coalescing delay.

Copies of readings held back by admission control (``screen_many``) share their
region's screening queue and its coalescing, in order, but travel as messages of their
own marked ``held``: screening such a message does not advance the stream's screened
frontier, because held readings are screened within a budget and some devices' are
skipped (``scheduler.held_screening``), so it does not vouch for every device. They
arrive already coalesced per region by the producer (``ingest.held_coalescer``) and may
wait here up to ``defaults.HELD_SCREEN_MAX_READINGS`` / ``HELD_SCREEN_MAX_AGE_MS`` more,
unless an admitted copy behind them is due first: a device's held readings then share
one fetch and store of its detector state, most of screening's cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from celery import Celery

from runtime.publisher import Publisher
from scheduler import defaults
from scheduler.model import Batch, queue_name, screen_queue_kind
from scheduler.settings import Settings
from stores.inflight import InflightLedgerStore

#: Kept for callers that read it here; the default lives in ``scheduler.defaults``.
SCREEN_MAX_AGE_MS = defaults.SCREEN_MAX_AGE_MS


class CeleryPublisher:
    def __init__(
        self,
        app: Celery,
        screening: bool | None = None,
        screen_max_readings: int = defaults.BATCH_MAX_READINGS,
        screen_max_age_ms: float = defaults.SCREEN_MAX_AGE_MS,
        held_screen_max_readings: int = defaults.HELD_SCREEN_MAX_READINGS,
        held_screen_max_age_ms: float = defaults.HELD_SCREEN_MAX_AGE_MS,
        clock: Callable[[], float] = time.time,
        ledger: InflightLedgerStore | None = None,
        premium_tier: str | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        """``screening`` None follows the environment (``IOTSCHED_SCREENING``, on by default);
        ``premium_tier`` None is the first configured tier (``IOTSCHED_TIERS``).

        Sends go through ``publisher`` (by default one over ``app`` and ``ledger``): with a
        ledger every batch is recorded before it is published, so a message lost by the
        broker (a worker killed mid-fetch) is published again."""
        self.app = app
        self.publisher = publisher or Publisher(app, ledger, clock)
        settings = Settings.from_env()
        self.screening = settings.screening if screening is None else screening
        self.premium_tier = settings.tiers[0] if premium_tier is None else premium_tier
        self.screen_max_readings = screen_max_readings
        self.screen_max_age_s = screen_max_age_ms / 1000.0
        self.held_screen_max_readings = held_screen_max_readings
        self.held_screen_max_age_s = held_screen_max_age_ms / 1000.0
        self.clock = clock
        #: Screening copies waiting to be coalesced, per screening queue, in order, each
        #: with whether it holds readings held back by admission control.
        self._pending: dict[str, list[tuple[Batch, bool]]] = {}
        self._pending_since: dict[str, float] = {}
        #: When the oldest admitted (not held) copy of each queue's pending ones came.
        self._admitted_since: dict[str, float] = {}
        #: Screening messages cut from the copies above (batch, queue, held), in order:
        #: sent together at the end of the call that cut them.
        self._ready: list[tuple[Batch, str, bool]] = []

    def publish(self, batch: Batch) -> None:
        self.publish_many([batch])

    def publish_many(self, batches: list[Batch]) -> None:
        """Publish batches flushed together; their ledger entries cost one round trip."""
        self.publisher.send_routine(batches)
        if self.screening:
            for batch in batches:
                self._hold_for_screening(batch)
        self.poll()

    def screen_many(self, batches: list[Batch]) -> bool:
        """Screening copies only (readings held back from routine processing); False when
        screening is off, so nothing was sent."""
        if not self.screening:
            return False
        for batch in batches:
            # Cut: a screening task holds its slot until done, and premium may be
            # waiting for that slot.
            size = self.held_screen_max_readings
            for k, start in enumerate(range(0, len(batch), size)):
                piece = batch.take(slice(start, start + size), f"{batch.batch_id}.{k}")
                self._hold_for_screening(piece, held=True)
        self.poll()
        return True

    def _hold_for_screening(self, batch: Batch, held: bool = False) -> None:
        if batch.screened is not None:
            # Rows screened while they were held back are not screened again.
            batch = batch.take(np.flatnonzero(~batch.screened), batch.batch_id)
            if not len(batch):
                return
        kind = screen_queue_kind(0 if batch.tier == self.premium_tier else 1)
        queue = queue_name(batch.region, kind)
        if queue not in self._pending:
            self._pending[queue] = []
            self._pending_since[queue] = self.clock()
        if not held:
            self._admitted_since.setdefault(queue, self.clock())
        self._pending[queue].append((batch, held))
        pending = self._pending[queue]
        held_n = sum(len(b) for b, h in pending if h)
        if (
            sum(len(b) for b, h in pending if not h) >= self.screen_max_readings
            or held_n >= self.held_screen_max_readings
        ):
            self._cut(queue)

    def poll(self, now_ts: float | None = None) -> None:
        """Send screening copies that reached their size or age limit, together."""
        now = self.clock() if now_ts is None else now_ts
        for queue, since in list(self._pending_since.items()):
            admitted_since = self._admitted_since.get(queue)
            if now - since >= self.held_screen_max_age_s or (
                admitted_since is not None and now - admitted_since >= self.screen_max_age_s
            ):
                self._cut(queue)
        self._send_ready()

    def flush(self) -> None:
        for queue in list(self._pending):
            self._cut(queue)
        self._send_ready()

    def _cut(self, queue: str) -> None:
        """Merge what ``queue`` has pending into screening messages, ready to send."""
        pending = self._pending.pop(queue)
        del self._pending_since[queue]
        self._admitted_since.pop(queue, None)
        # Runs of held and admitted copies go as messages of their own, in order.
        start = 0
        while start < len(pending):
            held = pending[start][1]
            end = start + 1
            while end < len(pending) and pending[end][1] == held:
                end += 1
            self._ready.append((_merged([b for b, _ in pending[start:end]]), queue, held))
            start = end

    def _send_ready(self) -> None:
        """Every message cut since the last send, in one round trip for the ledger and
        one for the broker; dropped only once sent: a broker error keeps them for the
        next poll."""
        if self._ready:
            self.publisher.send_screens(self._ready)
            self._ready = []


def _merged(batches: list[Batch]) -> Batch:
    first = batches[0]
    return Batch(
        # A routine batch joins exactly one screening copy, so the first id is unique.
        batch_id=f"{first.batch_id}+{len(batches)}",
        region=first.region,
        # One screening queue per tier class, so a copy usually holds one tier: keep its
        # name, which the screening task records detection latency under.
        tier=first.tier if all(b.tier == first.tier for b in batches) else "mixed",
        metrics=first.metrics,
        device_id=np.concatenate([b.device_id for b in batches]),
        ts=np.concatenate([b.ts for b in batches]),
        values=np.concatenate([b.values for b in batches]),
        ingest_ts=np.concatenate([b.ingest_ts for b in batches]),
    )
