"""The producer's link to the broker: publish, or keep in the outbox until the broker answers.

A broker or store failure never reaches the producer's caller: a batch that cannot be
published goes to the outbox (``ingest.outbox``), behind what it holds, and is replayed
in order once the retry interval has passed. Within ``retry_s`` of an outage Redis is
not asked at all (``guarded``): a stopped server costs a socket timeout per call, and
a gateway must not wait for each. Published batches are kept in the unconfirmed window
(``ingest.unconfirmed``), when given, until Redis has them on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.ingest_types import OUTAGE_ERRORS, Publisher
from ingest.outbox import MemoryOutbox, Outbox
from ingest.unconfirmed import UnconfirmedWindow
from scheduler import defaults
from scheduler.model import Batch

REPLAY_BATCHES = defaults.OUTBOX_REPLAY_BATCHES


class BrokerLink:
    def __init__(
        self,
        publisher: Publisher,
        outbox: Outbox | None = None,
        unconfirmed: UnconfirmedWindow | None = None,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.unconfirmed = unconfirmed
        self.retry_s = retry_s
        self.clock = clock
        self.last_outage: str | None = None
        self.published_batches = 0
        self.published_readings = 0
        self._retry_at = float("-inf")

    @property
    def degraded(self) -> bool:
        """True while the broker is not taking batches (the outbox holds some)."""
        return len(self.outbox) > 0

    def guarded(self, fn: Callable[..., object], *args: object) -> object | None:
        """Call ``fn``; an outage is noted and answered with None instead of raised."""
        if self.in_backoff():
            return None
        try:
            return fn(*args)
        except OUTAGE_ERRORS as exc:
            self.note_outage(exc)
            return None

    def in_backoff(self) -> bool:
        return self.clock() < self._retry_at

    def note_outage(self, exc: BaseException) -> None:
        self.last_outage = f"{type(exc).__name__}: {exc}"
        self._retry_at = self.clock() + self.retry_s

    def retry_now(self) -> None:
        """Ask the broker at the next chance, backoff or not (shutting down)."""
        self._retry_at = float("-inf")

    def publish(self, batches: list[Batch], now: float) -> None:
        """Hand batches over: to the broker, or (broker away, or older ones still waiting)
        to the outbox, behind what it holds, so order is kept."""
        if not batches:
            return
        if self.degraded or now < self._retry_at:
            self.outbox.append(batches)
            return
        if not self._send(batches, now):
            self.outbox.append(batches)

    def recover(self, now: float) -> None:
        """Batches Redis lost in a restart (not yet on its disk) go back in the outbox."""
        if self.unconfirmed is not None:
            again = self.guarded(self.unconfirmed.check, now)
            if isinstance(again, list) and again:
                self.outbox.append(again)

    def replay(self, now: float) -> None:
        """Publish what the outbox holds, oldest first, once the retry interval has passed."""
        while len(self.outbox) and now >= self._retry_at:
            group = self.outbox.peek(REPLAY_BATCHES)
            if not self._send(group, now):
                return
            self.outbox.release(len(group))

    def poll_publisher(self, now: float) -> None:
        """Let a buffering publisher send what is due (coalesced screening copies)."""
        poll = getattr(self.publisher, "poll", None)
        if poll is not None and not self.outbox.held_readings:
            self.guarded(poll, now)

    def flush_publisher(self) -> None:
        flush = getattr(self.publisher, "flush", None)
        if flush is not None and not self.outbox.held_readings:
            self.guarded(flush)

    def _send(self, batches: list[Batch], now: float) -> bool:
        try:
            publish_many = getattr(self.publisher, "publish_many", None)
            if publish_many is not None:
                publish_many(batches)
            else:
                for b in batches:
                    self.publisher.publish(b)
        except OUTAGE_ERRORS as exc:
            # Part of the group may have gone out: replaying it is harmless, chunk
            # claims apply a batch id once.
            self.note_outage(exc)
            return False
        self.published_batches += len(batches)
        self.published_readings += sum(len(b) for b in batches)
        if self.unconfirmed is not None:
            self.unconfirmed.sent(batches, now)
        return True
