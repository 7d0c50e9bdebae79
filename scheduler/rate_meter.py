"""Queue rates from successive cumulative samples of the broker's queues and counters.

A ``QueueSample`` is what a reader saw at one instant (depth per queue, messages
taken per queue since the deployment started, the producer's ``ingested``
counter); the ``RateMeter`` turns a run of them into ``QueueRates``. Pure: the
Redis side that takes the samples is ``stores.queue_depth``.

Arrivals per queue are ``Δdepth + Δtaken``: a message leaves a list only when a
worker takes it, and every worker reports what it took.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Arrival rates are measured over this long: short enough to follow a ramp,
#: long enough that one refresh's handful of messages is not read as a peak.
ARRIVAL_WINDOW_S = 1.0


@dataclass(frozen=True)
class QueueSample:
    """Cumulative figures at ``at_ts`` (epoch seconds)."""

    at_ts: float
    #: Messages waiting per queue, summed over its priority lists.
    depth: Mapping[str, int]
    #: Messages taken off each queue by workers since the deployment started.
    taken: Mapping[str, int]
    #: Readings accepted by ingest (the producer's ``ingested`` counter), all regions.
    ingested: int
    #: Mean readings per processed batch, per tier; empty until a batch is processed.
    readings_per_message: Mapping[str, float]
    #: Readings applied per tier so far (the ``processed:{tier}`` counters), all regions.
    processed: Mapping[str, int] = field(default_factory=dict)
    #: The workers' service counters (``scheduler.screen_cost``), all regions.
    service: Mapping[str, int] = field(default_factory=dict)

    def depth_readings(self, queue: str) -> float | None:
        """Estimated readings waiting in ``queue`` (``{region}.{tier}``); None if unknown."""
        per = self.readings_per_message.get(queue.rpartition(".")[2])
        return None if per is None else self.depth.get(queue, 0) * per


@dataclass(frozen=True)
class QueueRates:
    """Rates between two samples; every rate is per second over ``interval_s``."""

    at_ts: float
    interval_s: float
    depth: Mapping[str, int]
    #: Messages arriving per queue: what the depth grew by plus what workers took.
    arrival_rps: Mapping[str, float]
    #: Messages workers took per queue (all workers, as far as they have reported).
    taken_rps: Mapping[str, float]
    #: Readings accepted by ingest per second, all regions.
    ingested_rps: float


class RateMeter:
    """Turns successive cumulative samples into rates; a counter reset reads as zero.

    Rates are taken over the last ``window_s`` (the oldest sample at least that
    old), not between adjacent samples: a sampler refreshing every 0.1 s sees a
    few messages per interval, and a rate from one interval is mostly noise.
    """

    def __init__(self, window_s: float = ARRIVAL_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[QueueSample] = deque()

    def update(self, sample: QueueSample) -> QueueRates | None:
        """Rates up to this sample; None for the first (or a same-instant) one."""
        samples = self._samples
        if samples and sample.at_ts <= samples[-1].at_ts:
            return None
        samples.append(sample)
        while len(samples) > 2 and samples[1].at_ts <= sample.at_ts - self.window_s:
            samples.popleft()
        if len(samples) < 2:
            return None
        base = samples[0]
        dt = sample.at_ts - base.at_ts
        arrival: dict[str, float] = {}
        taken: dict[str, float] = {}
        for queue, depth in sample.depth.items():
            took = max(0, sample.taken.get(queue, 0) - base.taken.get(queue, 0))
            grew = depth - base.depth.get(queue, depth)
            taken[queue] = took / dt
            arrival[queue] = max(0.0, (grew + took) / dt)
        return QueueRates(
            at_ts=sample.at_ts,
            interval_s=dt,
            depth=dict(sample.depth),
            arrival_rps=arrival,
            taken_rps=taken,
            ingested_rps=max(0, sample.ingested - base.ingested) / dt,
        )
