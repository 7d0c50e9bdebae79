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

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import redis

from scheduler.latency import bucket_counts
from scheduler.model import WorkClass, queue_name
from scheduler.preemption import YIELD_ORDER, PreemptionPolicy
from stores.keys import Keys
from stores.queue_depth import queue_depths


class PreemptionSignal(Protocol):
    def should_yield(self, region: str, work: WorkClass) -> bool:
        """Whether a running ``work`` task should yield its slot at this chunk boundary."""


class NeverYield:
    """For stores without a broker to look at (the embedded in-memory runner)."""

    def should_yield(self, region: str, work: WorkClass) -> bool:
        return False


class RedisPreemptionSignal:
    """Reads the anomaly backlog from the broker lists, cached; hands out yield tokens."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        policy: PreemptionPolicy | None = None,
        premium_grace_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
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
            backlog = queue_depths(self.client, self.keys, [queue])[queue]
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
        return self._take_token(region, backlog)

    def _take_token(self, region: str, backlog: int) -> bool:
        key = self.keys.preempt_tokens(region)
        window_ms = max(1, int(self.check_interval_s * 1e3))
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, 0, px=window_ms, nx=True)
        pipe.incr(key)
        _, taken = pipe.execute()
        return int(taken) <= backlog

    def record_anomaly_start(self, region: str, enqueued_ts: float, started_ts: float) -> None:
        """Add one anomaly task's wait (enqueued → started) to the region's histogram."""
        wait_ms = np.array([(started_ts - enqueued_ts) * 1e3])
        pipe = self.client.pipeline(transaction=False)
        for bucket, count in bucket_counts(wait_ms).items():
            pipe.hincrby(self.keys.anomaly_start_latency(region), str(bucket), count)
        pipe.execute()

    def anomaly_start_histogram(self, region: str) -> dict[int, int]:
        raw = self.client.hgetall(self.keys.anomaly_start_latency(region))
        return {int(k): int(v) for k, v in raw.items()}
