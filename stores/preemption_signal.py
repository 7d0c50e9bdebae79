"""The cheap preemption signal: is anomaly work waiting for a slot in this region?

The signal is the anomaly queue itself: a message still sitting in the broker
lists of ``{region}.anomaly`` is one that no free slot has taken (an idle
worker's BRPOP would have had it within milliseconds). Nobody has to publish
or clear a flag, so a crashed publisher or monitor cannot leave it stuck.

Reading it costs one pipelined round trip (LLEN of the queue's four priority
lists), at most once per ``max_check_interval_ms`` per process; between reads
routine tasks use the cached figure.

Yield tokens keep one waiting anomaly task from emptying every slot: a routine
task that the policy tells to yield first takes a token (INCR on a counter
that expires after one check interval) and yields only if the count is within
the backlog. Standard work is asked before premium: premium yields only when
the backlog outlives a grace period, i.e. the standard yields did not cover it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import redis

from scheduler.latency import bucket_counts, merge_counts
from scheduler.model import WorkClass, queue_name
from scheduler.preemption import YIELD_ORDER, PreemptionPolicy
from stores.keys import Keys
from stores.protocols import QueueDepthRead
from stores.queue_depth_read import RedisQueueDepth


class PreemptionSignal(Protocol):
    def should_yield(self, region: str, work: WorkClass) -> bool:
        """Whether a running ``work`` task should yield its slot at this chunk boundary."""

    def record_anomaly_start(self, region: str, enqueued_ts: float, started_ts: float) -> None:
        """Add one anomaly task's wait (enqueued → started) to the region's histogram."""

    def anomaly_start_histogram(self, region: str) -> dict[int, int]: ...


class NeverYield:
    """A signal that never asks anything to yield (a worker told not to preempt)."""

    def should_yield(self, region: str, work: WorkClass) -> bool:
        return False

    def record_anomaly_start(self, region: str, enqueued_ts: float, started_ts: float) -> None:
        return None

    def anomaly_start_histogram(self, region: str) -> dict[int, int]:
        return {}


def _wait_counts(enqueued_ts: float, started_ts: float) -> Mapping[int, int]:
    return bucket_counts(np.array([(started_ts - enqueued_ts) * 1e3]))


class QueuePreemptionSignal:
    """Reads the anomaly backlog from the broker's queue depth, cached; hands out yield tokens.

    Subclasses keep the tokens and the anomaly start histogram (Redis, or this process).
    """

    def __init__(
        self,
        depth: QueueDepthRead,
        policy: PreemptionPolicy | None = None,
        premium_grace_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.depth = depth
        self.policy = policy or PreemptionPolicy()
        self.check_interval_s = self.policy.config.max_check_interval_ms / 1e3
        # Two check intervals: every standard task has had a chance to see the backlog.
        grace_ms = 2 * self.policy.config.max_check_interval_ms
        self.premium_grace_s = (
            premium_grace_ms if premium_grace_ms is not None else grace_ms
        ) / 1e3
        self.clock = clock
        self._read_at: dict[str, float] = {}
        self._backlog: dict[str, int] = {}
        self._waiting_since: dict[str, float] = {}

    def anomaly_backlog(self, region: str) -> int:
        """Anomaly messages waiting in the region's queue; at most one read per check interval."""
        now = self.clock()
        read_at = self._read_at.get(region)
        if read_at is None or now - read_at >= self.check_interval_s:
            queue = queue_name(region, WorkClass.ANOMALY.value)
            backlog = self.depth.depths([queue])[queue]
            self._read_at[region] = now
            self._backlog[region] = backlog
            if backlog == 0:
                self._waiting_since.pop(region, None)
            else:
                self._waiting_since.setdefault(region, now)
        return self._backlog[region]

    def should_yield(self, region: str, work: WorkClass) -> bool:
        if work not in YIELD_ORDER:
            return False
        backlog = self.anomaly_backlog(region)
        if backlog == 0:
            return False
        # Standard tasks are assumed to cover the backlog until it outlives the grace.
        waited_s = self.clock() - self._waiting_since.get(region, self.clock())
        standard_covering = backlog if waited_s < self.premium_grace_s else 0
        # A backlog in the queue means no slot was free to take it.
        if not self.policy.should_yield(backlog, 0, work, standard_covering):
            return False
        return self._take_token(region, backlog, max(1, int(self.check_interval_s * 1e3)))

    def _take_token(self, region: str, backlog: int, window_ms: int) -> bool:
        """Count one yield in the region's current window; True while within the backlog."""
        raise NotImplementedError


class RedisPreemptionSignal(QueuePreemptionSignal):
    """Depth from the broker lists; tokens and start waits in Redis, shared by all workers."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        policy: PreemptionPolicy | None = None,
        premium_grace_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(RedisQueueDepth(client, keys), policy, premium_grace_ms, clock)
        self.client = client
        self.keys = keys

    def _take_token(self, region: str, backlog: int, window_ms: int) -> bool:
        key = self.keys.preempt_tokens(region)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, 0, px=window_ms, nx=True)
        pipe.incr(key)
        _, taken = pipe.execute()
        return int(taken) <= backlog

    def record_anomaly_start(self, region: str, enqueued_ts: float, started_ts: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for bucket, count in _wait_counts(enqueued_ts, started_ts).items():
            pipe.hincrby(self.keys.anomaly_start_latency(region), str(bucket), count)
        pipe.execute()

    def anomaly_start_histogram(self, region: str) -> dict[int, int]:
        raw = self.client.hgetall(self.keys.anomaly_start_latency(region))
        return {int(k): int(v) for k, v in raw.items()}


class MemoryPreemptionSignal(QueuePreemptionSignal):
    """The same signal for one process (the embedded run): tokens and waits kept here."""

    def __init__(
        self,
        depth: QueueDepthRead,
        policy: PreemptionPolicy | None = None,
        premium_grace_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(depth, policy, premium_grace_ms, clock)
        self._lock = threading.Lock()
        #: region → (window end, tokens taken in it)
        self._tokens: dict[str, tuple[float, int]] = {}
        self._starts: dict[str, dict[int, int]] = {}

    def _take_token(self, region: str, backlog: int, window_ms: int) -> bool:
        now = self.clock()
        with self._lock:
            ends, taken = self._tokens.get(region, (0.0, 0))
            if now >= ends:
                ends, taken = now + window_ms / 1e3, 0
            self._tokens[region] = (ends, taken + 1)
            return taken + 1 <= backlog

    def record_anomaly_start(self, region: str, enqueued_ts: float, started_ts: float) -> None:
        with self._lock:
            counts = _wait_counts(enqueued_ts, started_ts)
            self._starts[region] = merge_counts(self._starts.get(region, {}), counts)

    def anomaly_start_histogram(self, region: str) -> dict[int, int]:
        with self._lock:
            return dict(self._starts.get(region, {}))
