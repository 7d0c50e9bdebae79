"""Admission control: which regions take non-premium readings now, from queue depths.

On by default. A region is open while its non-premium backlog would drain within
the wait budget at the drain rate measured from the processed counters
(``scheduler.admission``); ``cap_readings`` > 0 (``IOTSCHED_BACKLOG_CAP_READINGS``)
replaces that with a fixed cap. Read at most every ``refresh_s`` (one pipelined
round trip), never per reading; the producer hands back readings bound for a closed
region instead of queueing them without limit.

The processed counters are fleet-wide per tier, so a region's drain rate is taken as
the fleet's non-premium rate split evenly across the regions with readings waiting
(a region whose queues are empty drains no faster than it is fed, so it is left out):
a loaded region among idle ones gets the whole rate, equal regions an equal part.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import redis

from scheduler import defaults
from scheduler.admission import WAIT_BUDGET_S, DrainMeter, admits
from scheduler.held_screening import HeldScreenBudget
from scheduler.model import Topology, WorkClass, queue_name
from scheduler.screen_cost import ScreenCostMeter
from scheduler.settings import Settings
from stores.keys import Keys
from stores.queue_depth import QueueDepthReader, QueueSample


class QueueBacklogGate:
    def __init__(
        self,
        reader: QueueDepthReader,
        topology: Topology,
        cap_readings: int = 0,
        refresh_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        wait_budget_s: float = WAIT_BUDGET_S,
    ) -> None:
        """``cap_readings`` 0 (the default) measures; > 0 is a fixed cap per region."""
        self.reader = reader
        self.topology = topology
        self.cap_readings = cap_readings
        self.refresh_s = refresh_s
        self.clock = clock
        self.wait_budget_s = wait_budget_s
        self._tiers = topology.tiers[1:]
        # Tiers that may be pushed back: every tier but the first (premium); their
        # screening copies wait on {region}.screen, below premium.
        self._queues = [[queue_name(r, t) for t in self._tiers] for r in topology.regions]
        self._screen = [queue_name(r, WorkClass.SCREEN.value) for r in topology.regions]
        self._closed = np.zeros(len(topology.regions), dtype=bool)
        self._read_at = float("-inf")
        self._meter = DrainMeter()
        #: Fleet-wide non-premium drain rate last measured (readings/s); None before.
        self.drain_rps: float | None = None
        self._cost = ScreenCostMeter(self._tiers)
        self._budgets: list[HeldScreenBudget] = []

    def feed(self, budget: HeldScreenBudget) -> HeldScreenBudget:
        """Give ``budget`` (a producer's held-screening budget) each region's measured
        drain at every refresh: held screening earns from it (``follow_drain``)."""
        self._budgets.append(budget)
        return budget

    @property
    def screen_cost_ratio(self) -> float | None:
        """Screening's measured cost per held reading over non-premium routine's (None
        before both were measured): the producer's held-screening budget follows it."""
        return self._cost.ratio

    def __call__(self) -> npt.NDArray[np.bool_]:
        now = self.clock()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            sample = self.reader.sample([q for qs in self._queues for q in qs] + self._screen)
            processed = sum(sample.processed.get(t, 0) for t in self._tiers)
            self.drain_rps = self._meter.update(now, processed)
            self._cost.update(sample.service)
            routine = [sum(_waiting_readings(sample, q) for q in qs) for qs in self._queues]
            if self.cap_readings > 0:
                self._closed[:] = np.array(routine) > self.cap_readings
                return self._closed
            # Standard screening runs before standard processing: a reading waits for
            # whichever of its two queues is longer.
            # A screening copy is coalesced like a routine batch (size or age), so it is
            # counted at the standard tier's measured batch size.
            per_copy = sample.readings_per_message.get(self._tiers[0], defaults.BATCH_MAX_READINGS)
            screen = [sample.depth.get(q, 0) * per_copy for q in self._screen]
            waiting = np.maximum(routine, screen)
            per_region = None
            if self.drain_rps is not None:
                per_region = self.drain_rps / max(1, int((waiting > 0).sum()))
            for budget in self._budgets:
                budget.follow_drain(None if per_region is None else [per_region] * len(waiting))
            for code, w in enumerate(waiting.tolist()):
                self._closed[code] = not admits(w, per_region, self.wait_budget_s)
        return self._closed


def admission_gate(settings: Settings, broker: redis.Redis, keys: Keys) -> QueueBacklogGate:
    """The default gate of a producer: measured (or ``IOTSCHED_BACKLOG_CAP_READINGS``)."""
    return QueueBacklogGate(
        QueueDepthReader(broker, keys), settings.topology, settings.backlog_cap_readings
    )


def _waiting_readings(sample: QueueSample, queue: str) -> float:
    estimate = sample.depth_readings(queue)
    if estimate is None:
        # Before any batch is processed the size per message is unknown: count
        # messages as full micro-batches, erring towards closing early.
        return sample.depth.get(queue, 0) * defaults.BATCH_MAX_READINGS
    return estimate
