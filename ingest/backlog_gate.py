"""Backpressure: which regions' routine backlog is past its cap, from queue depths.

Read at most every ``refresh_s`` (one pipelined round trip), never per reading;
the producer hands back readings bound for a closed region instead of queueing
them without limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from scheduler import defaults
from scheduler.model import Topology, queue_name
from stores.queue_depth import QueueDepthReader, QueueSample


class QueueBacklogGate:
    def __init__(
        self,
        reader: QueueDepthReader,
        topology: Topology,
        cap_readings: int,
        refresh_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.topology = topology
        self.cap_readings = cap_readings
        self.refresh_s = refresh_s
        self.clock = clock
        # Tiers that may be pushed back: every tier but the first (premium).
        self._queues = [[queue_name(r, t) for t in topology.tiers[1:]] for r in topology.regions]
        self._closed = np.zeros(len(topology.regions), dtype=bool)
        self._read_at = float("-inf")

    def __call__(self) -> npt.NDArray[np.bool_]:
        now = self.clock()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            sample = self.reader.sample([q for qs in self._queues for q in qs])
            for code, queues in enumerate(self._queues):
                waiting = sum(_waiting_readings(sample, q) for q in queues)
                self._closed[code] = waiting > self.cap_readings
        return self._closed


def _waiting_readings(sample: QueueSample, queue: str) -> float:
    estimate = sample.depth_readings(queue)
    if estimate is None:
        # Before any batch is processed the size per message is unknown: count
        # messages as full micro-batches, erring towards closing early.
        return sample.depth.get(queue, 0) * defaults.BATCH_MAX_READINGS
    return estimate
