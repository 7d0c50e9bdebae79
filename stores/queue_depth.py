"""Broker queue depth and the counters rates are taken from, read in one pipelined round trip.

kombu's Redis transport keeps a queue as up to four lists, one per priority
step (``Keys.broker_queue_lists``), under the broker's ``global_keyprefix``;
a queue's depth is the sum of their lengths.

Depth is counted in *messages* (one message = one micro-batch task). A
message's reading count ``n`` sits inside a base64 msgpack body in a JSON
envelope, so counting readings exactly would mean fetching and decoding every
waiting message; ``QueueSample.readings_per_message`` instead gives the mean
batch size processed so far per tier (from the counters hash), which turns a
depth into a reading estimate at no extra cost.

Each worker's autoscaler adds what it took per queue to the ``Keys.scaling_taken``
hash; the producer's global ``ingested`` counter (readings, all regions) is
sampled too. ``QueueSample``, ``QueueRates`` and ``RateMeter``, which turn the
samples into rates, are pure and live in ``scheduler.rate_meter``; they are
re-exported here for the readers' callers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from scheduler.rate_meter import QueueRates, QueueSample, RateMeter
from scheduler.screen_cost import SERVICE_PREFIX
from stores.keys import PRIORITY_STEPS, Keys

__all__ = [
    "QueueDepthReader",
    "QueueRates",
    "QueueSample",
    "RateMeter",
    "fold_lengths",
    "queue_depths",
    "queue_lengths",
]


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
            service={n: c for n, c in counters.items() if n.startswith(SERVICE_PREFIX)},
        )


def _readings_per_batch(counters: Mapping[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, batches in counters.items():
        kind, _, tier = name.partition(":")
        if kind == "batches" and batches > 0:
            out[tier] = counters.get(f"processed:{tier}", 0) / batches
    return out
