"""Broker queue depth and arrival rates, read from Redis in one pipelined round trip.

kombu's Redis transport keeps a queue as up to four lists, one per priority
step (``Keys.broker_queue_lists``), under the broker's ``global_keyprefix``;
a queue's depth is the sum of their lengths.

Depth is counted in *messages* (one message = one micro-batch task). A
message's reading count ``n`` sits inside a base64 msgpack body in a JSON
envelope, so counting readings exactly would mean fetching and decoding every
waiting message; ``QueueSample.readings_per_message`` instead gives the mean
batch size processed so far per tier (from the counters hash), which turns a
depth into a reading estimate at no extra cost.

Arrivals per queue are ``Δdepth + Δtaken``: a message leaves a list only when a
worker takes it, and the autoscaler of every worker adds what it took to the
``Keys.scaling_taken`` hash. The producer's global ``ingested`` counter (readings,
all regions) is sampled too and turned into ``ingested_rps``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from stores.keys import PRIORITY_STEPS, Keys


def queue_depths(client: Any, keys: Keys, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each queue (all its priority lists), in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    queue_lengths(pipe, keys, queues)
    return fold_lengths(pipe.execute(), queues)


def queue_lengths(pipe: Any, keys: Keys, queues: Sequence[str]) -> None:
    """Queue the LLENs of every priority list of ``queues`` on ``pipe``."""
    for queue in queues:
        for key in keys.broker_queue_lists(queue):
            pipe.llen(key)


def fold_lengths(lengths: Sequence[Any], queues: Sequence[str]) -> dict[str, int]:
    """Sum the replies of ``queue_lengths`` (the first ones of a pipeline) per queue."""
    per = len(PRIORITY_STEPS)
    return {q: sum(_int(v) for v in lengths[per * i : per * (i + 1)]) for i, q in enumerate(queues)}


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

    def depth_readings(self, queue: str) -> float | None:
        """Estimated readings waiting in ``queue`` (``{region}.{tier}``); None if unknown."""
        per = self.readings_per_message.get(queue.rpartition(".")[2])
        return None if per is None else self.depth.get(queue, 0) * per


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


class QueueDepthReader:
    """Samples queue depths and the counters they are read against."""

    def __init__(
        self,
        broker: redis.Redis,
        keys: Keys,
        state: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        #: Counters live in the state Redis; when it is the broker (the default)
        #: everything is one pipeline, one round trip.
        self.state = state if state is not None else broker
        self.keys = keys
        self.clock = clock

    def sample(
        self, queues: Sequence[str], taken_delta: Mapping[str, int] | None = None
    ) -> QueueSample:
        """Depths of ``queues`` and the counters; first adds ``taken_delta`` to the taken hash."""
        k = self.keys
        pipe = self.broker.pipeline(transaction=False)
        queue_lengths(pipe, k, queues)
        n_lists = len(PRIORITY_STEPS) * len(queues)
        shared = self.state is self.broker
        state_pipe = pipe if shared else self.state.pipeline(transaction=False)
        for queue, n in (taken_delta or {}).items():
            if n:
                state_pipe.hincrby(k.scaling_taken, queue, n)
        state_pipe.hgetall(k.scaling_taken)
        state_pipe.hgetall(k.counters)
        at_ts = self.clock()
        results = pipe.execute()
        lengths = results[:n_lists]
        state_results = results[n_lists:] if shared else state_pipe.execute()
        taken_raw, counters_raw = state_results[-2], state_results[-1]
        depth = fold_lengths(lengths, queues)
        counters = _decode(counters_raw)
        return QueueSample(
            at_ts=at_ts,
            depth=depth,
            taken=_decode(taken_raw),
            ingested=counters.get("ingested", 0),
            readings_per_message=_readings_per_batch(counters),
            processed={
                name.partition(":")[2]: n
                for name, n in counters.items()
                if name.startswith("processed:")
            },
        )


def _readings_per_batch(counters: Mapping[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, batches in counters.items():
        kind, _, tier = name.partition(":")
        if kind == "batches" and batches > 0:
            out[tier] = counters.get(f"processed:{tier}", 0) / batches
    return out


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

    def __init__(self, window_s: float = 1.0) -> None:
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
