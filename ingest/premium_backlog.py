"""How many premium messages wait in each region's queue: the producer's cue to coalesce.

Read only while a premium batch is due and could be held (``scheduler.premium_coalescing``),
at most every ``refresh_ms``, in one pipelined round trip over every region's premium
queue. A broker that does not answer holds nothing back (and is not asked again for
``retry_s``): batches go out at their age limit, as without coalescing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from scheduler.model import Topology, queue_name
from scheduler.premium_coalescing import PremiumCoalescing
from stores.keys import Keys
from stores.queue_depth import queue_depths


class PremiumBacklog:
    """``hold(region_code, age_s)`` for ``Batcher.due``, from cached premium queue depths."""

    def __init__(
        self,
        broker: Any,
        keys: Keys,
        topology: Topology,
        policy: PremiumCoalescing | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 1.0,
    ) -> None:
        self.broker = broker
        self.keys = keys
        self.policy = policy or PremiumCoalescing()
        self.clock = clock
        self.retry_s = retry_s
        self.refresh_s = self.policy.refresh_ms / 1e3
        self._queues = [queue_name(r, topology.tiers[0]) for r in topology.regions]
        self._depth = [0] * len(self._queues)
        self._read_at = float("-inf")

    def depths(self) -> list[int]:
        """Premium messages waiting per region code; read again once ``refresh_ms`` old."""
        now = self.clock()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            try:
                got = queue_depths(self.broker, self.keys, self._queues)
            except (redis.RedisError, OSError):
                self._read_at = now + self.retry_s
                self._depth = [0] * len(self._queues)
            else:
                self._depth = [got[q] for q in self._queues]
        return self._depth

    def hold(self, region: int, age_s: float) -> bool:
        """Keep region ``region``'s due premium batch, ``age_s`` old, in the batcher?"""
        if age_s >= self.policy.max_hold_ms / 1e3:
            return False  # past the longest hold: no need to read anything
        return self.policy.holds(self.depths()[region], age_s)

    def recheck_ts(self, due_ts: float | None, now_ts: float) -> float | None:
        """The batcher's next due time, or, for a batch held past it, the next depth read."""
        if due_ts is not None and due_ts <= now_ts:
            return now_ts + self.refresh_s
        return due_ts
