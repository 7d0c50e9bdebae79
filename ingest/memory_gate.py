"""Pause ingest before Redis refuses writes: ``used_memory`` against ``maxmemory``.

With ``maxmemory`` and the ``noeviction`` policy Redis answers every write
with an OOM error once it is full, and a batch half way through the pipeline
would meet it. The producer reads ``INFO memory`` at most every ``refresh_s``
(one round trip, never per reading) and pushes back every new reading while
usage is at or above ``high_water`` of the limit; it takes them again once
workers have drained the queues (or the limit is raised). Without a limit
(``maxmemory`` 0) the gate never closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Share of ``maxmemory`` at which ingest pauses: room left for what is already in flight.
HIGH_WATER = 0.85


class MemoryGate:
    """``PauseGate`` for ``Producer(pause_gate=...)``: True while Redis is nearly full."""

    def __init__(
        self,
        client: Any,
        high_water: float = HIGH_WATER,
        refresh_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < high_water <= 1:
            raise ValueError(f"high_water must be in (0, 1], got {high_water}")
        self.client = client
        self.high_water = high_water
        self.refresh_s = refresh_s
        self.clock = clock
        self.paused = False
        self.used_share = 0.0
        self._read_at = float("-inf")

    def __call__(self) -> bool:
        now = self.clock()
        if now - self._read_at >= self.refresh_s:
            # An outage raises to the producer, which treats it as one; either way
            # the server is asked at most once per refresh_s.
            self._read_at = now
            info = self.client.info("memory")
            limit = int(info.get("maxmemory", 0))
            self.used_share = int(info.get("used_memory", 0)) / limit if limit else 0.0
            self.paused = self.used_share >= self.high_water
        return self.paused
