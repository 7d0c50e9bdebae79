"""A region's correlator state (msgpack), updated under a lock, once per screened batch.

``fold`` runs a step on the current state and saves what it returns together with the
batch's anomaly claim in one MULTI/EXEC, while holding a Redis lock on the region: two
anomaly workers of one region never fold over the same old state, and a redelivered
batch of alerts finds its claim and is skipped. ``want_tick`` books the next timer run
(group wait, group interval, resolve timeout) so only one is scheduled at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import msgpack
import redis
from redis.exceptions import LockError

from scheduler import defaults
from scheduler.errors import TransientError
from stores.keys import Keys

T = TypeVar("T")
State = dict[str, Any]
#: Given the stored state (None when there is none) returns the state to save and a result.
Step = Callable[[State | None], tuple[State, T]]


class IncidentStore(Protocol):
    def fold(self, region: str, batch_id: str | None, step: Step[T]) -> T | None:
        """Apply ``step`` to the region's state atomically; None if ``batch_id`` was folded."""

    def want_tick(self, region: str, due_ts: float, now_ts: float) -> bool:
        """True when no timer run is booked between now and ``due_ts``: the caller books one."""

    def load(self, region: str) -> State | None: ...

    def want_accelerate(self, region: str, incident_id: str, interval_s: float) -> bool:
        """True at most once per ``interval_s`` per incident: the caller accelerates it."""


class RedisIncidentStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        lock_timeout_s: float = 10.0,
        lock_wait_s: float = 5.0,
        claim_ttl_s: int = defaults.BATCH_CLAIM_TTL_S,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.lock_timeout_s = lock_timeout_s
        self.lock_wait_s = lock_wait_s
        self.claim_ttl_s = claim_ttl_s

    def fold(self, region: str, batch_id: str | None, step: Step[T]) -> T | None:
        k = self.keys
        # The lock expires on its own, so a worker killed while holding it blocks others
        # for at most lock_timeout_s; a fold takes milliseconds.
        lock = self.client.lock(
            k.incidents_lock(region),
            timeout=self.lock_timeout_s,
            blocking_timeout=self.lock_wait_s,
        )
        if not lock.acquire():
            raise TransientError(f"incident state of {region} is locked")
        try:
            if batch_id is not None and self.client.exists(k.anomaly_claim(batch_id)):
                return None
            new_state, result = step(self.load(region))
            pipe = self.client.pipeline(transaction=True)
            pipe.set(k.incidents(region), msgpack.packb(new_state, use_bin_type=True))
            if batch_id is not None:
                pipe.set(k.anomaly_claim(batch_id), 1, ex=self.claim_ttl_s)
            pipe.execute()
            return result
        finally:
            # An expired lock was taken over; the fold above already committed or raised.
            with contextlib.suppress(LockError):
                lock.release()

    def load(self, region: str) -> State | None:
        raw: Any = self.client.get(self.keys.incidents(region))
        if raw is None:
            return None
        state: State = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        return state

    def want_tick(self, region: str, due_ts: float, now_ts: float) -> bool:
        key = self.keys.incidents_tick(region)
        current: Any = self.client.get(key)
        if current is not None and now_ts <= float(current) <= due_ts + 1e-3:
            return False
        self.client.set(key, repr(due_ts), px=max(1, int((due_ts - now_ts + 1.0) * 1000)))
        return True

    def want_accelerate(self, region: str, incident_id: str, interval_s: float) -> bool:
        gate = self.keys.accelerate_gate(region, incident_id)
        return bool(self.client.set(gate, 1, nx=True, px=max(1, int(interval_s * 1000))))


class MemoryIncidentStore:
    """The in-memory twin; one lock serialises folds like the Redis lock does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, bytes] = {}
        self._claims: set[str] = set()
        self._ticks: dict[str, float] = {}
        self._accelerated: dict[tuple[str, str], float] = {}

    def fold(self, region: str, batch_id: str | None, step: Step[T]) -> T | None:
        with self._lock:
            if batch_id is not None and batch_id in self._claims:
                return None
            new_state, result = step(self._load(region))
            self._states[region] = msgpack.packb(new_state, use_bin_type=True)
            if batch_id is not None:
                self._claims.add(batch_id)
            return result

    def _load(self, region: str) -> State | None:
        raw = self._states.get(region)
        if raw is None:
            return None
        state: State = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        return state

    def load(self, region: str) -> State | None:
        with self._lock:
            return self._load(region)

    def want_tick(self, region: str, due_ts: float, now_ts: float) -> bool:
        with self._lock:
            current = self._ticks.get(region)
            if current is not None and now_ts <= current <= due_ts + 1e-3:
                return False
            self._ticks[region] = due_ts
            return True

    def want_accelerate(self, region: str, incident_id: str, interval_s: float) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._accelerated.get((region, incident_id))
            if last is not None and now - last < interval_s:
                return False
            self._accelerated[(region, incident_id)] = now
            return True
