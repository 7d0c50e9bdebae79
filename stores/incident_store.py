"""A region's correlator state (msgpack), updated atomically, once per screened batch.

``fold`` runs a step on the current state and saves what it returns together with the
batch's anomaly claim in one MULTI/EXEC, under a WATCH of the state: two anomaly workers
of one region never fold over the same old state (the later EXEC finds the state changed,
applies nothing, and folds again over the new one), and a redelivered batch of alerts
finds its claim and is skipped. Optimistic rather than a lock, since a region's folds
rarely meet (one data slot per region) and each fold is two round trips (WATCH, claim
and state in one; MULTI/EXEC in the other) where lock acquire, claim check, load, write
and lock release were five: at 2x capacity the fold's trips were half of an anomaly
workflow's time in its task. ``want_tick`` books the next timer run (group wait, group
interval, resolve timeout) so only one is scheduled at a time, in one scripted trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgpack
import redis

from scheduler import defaults
from scheduler.errors import TransientError
from stores import resp
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

    def want_accelerate_many(
        self, region: str, incident_ids: Sequence[str], interval_s: float
    ) -> list[bool]:
        """``want_accelerate`` of each incident, in one round trip."""


#: How long a fold waits before looking again while a worker from before optimistic
#: folds holds the region's lock (its folds take milliseconds).
LEGACY_LOCK_POLL_S = 0.005


#: Books a timer run unless one is booked between now and the due time (``want_tick``):
#: KEYS[1] the tick key; ARGV due_ts, now_ts, TTL (ms). Returns 1 when the caller books.
_WANT_TICK = """
local current = tonumber(redis.call('GET', KEYS[1]) or '')
local due, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if current ~= nil and now <= current and current <= due + 1e-3 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


class RedisIncidentStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        claim_ttl_s: int = defaults.BATCH_CLAIM_TTL_S,
        max_attempts: int = 20,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.claim_ttl_s = claim_ttl_s
        #: Folds of one region meeting this many times in a row give up as a transient
        #: failure (the task retries later) rather than spin.
        self.max_attempts = max_attempts
        self._want_tick = client.register_script(_WANT_TICK)

    def fold(self, region: str, batch_id: str | None, step: Step[T]) -> T | None:
        k = self.keys
        state_key = k.incidents(region)
        claim = k.anomaly_claim(batch_id) if batch_id is not None else None
        # Workers from before optimistic folds fold under this lock and watch nothing:
        # while one holds it, a fold here could be overwritten by its write, so a fold
        # waits for it, and one taken meanwhile (a watched key) aborts the EXEC. Mixed
        # versions then fold one at a time during a rolling upgrade.
        legacy_lock = k.incidents_lock(region)
        reads = [
            resp.command(b"WATCH", state_key, legacy_lock),
            resp.command(b"EXISTS", legacy_lock),
            resp.command(b"GET", state_key),
        ]
        if claim is not None:
            reads.append(resp.command(b"EXISTS", claim))
        # No retry on a lost connection: a reconnect drops the WATCH (the Session
        # disconnects on any error, so no WATCH is left on a pooled connection).
        with resp.Session(self.client) as session:
            for _ in range(self.max_attempts):
                replies = session.run(reads)
                if claim is not None and int(replies[3]):
                    session.run([resp.command(b"UNWATCH")])
                    return None
                if int(replies[1]):
                    session.run([resp.command(b"UNWATCH")])
                    time.sleep(LEGACY_LOCK_POLL_S)
                    continue
                raw = replies[2]
                state = None if raw is None else _unpacked(raw)
                new_state, result = step(state)
                packed = msgpack.packb(new_state, use_bin_type=True)
                writes = [resp.command(b"SET", state_key, packed)]
                if claim is not None:
                    writes.append(resp.command(b"SET", claim, b"1", b"EX", self.claim_ttl_s))
                if session.transaction(writes) is not None:
                    return result
        raise TransientError(f"incident state of {region} kept changing under a fold")

    def load(self, region: str) -> State | None:
        raw: Any = self.client.get(self.keys.incidents(region))
        return None if raw is None else _unpacked(raw)

    def want_tick(self, region: str, due_ts: float, now_ts: float) -> bool:
        ttl_ms = max(1, int((due_ts - now_ts + 1.0) * 1000))
        key = self.keys.incidents_tick(region)
        return bool(self._want_tick(keys=[key], args=[repr(due_ts), repr(now_ts), ttl_ms]))

    def want_accelerate(self, region: str, incident_id: str, interval_s: float) -> bool:
        return self.want_accelerate_many(region, [incident_id], interval_s)[0]

    def want_accelerate_many(
        self, region: str, incident_ids: Sequence[str], interval_s: float
    ) -> list[bool]:
        if not incident_ids:
            return []
        px = max(1, int(interval_s * 1000))
        gates = [
            resp.command(b"SET", self.keys.accelerate_gate(region, i), b"1", b"NX", b"PX", px)
            for i in incident_ids
        ]
        with resp.Session(self.client) as session:
            # Safe to send again after a reconnect: a gate set on the lost try reads as
            # taken, so that incident waits one interval, never accelerates twice.
            return [reply is not None for reply in session.run(gates, retry=True)]


def _unpacked(raw: bytes) -> State:
    state: State = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return state


class MemoryIncidentStore:
    """The in-memory twin; one lock serialises folds, as the Redis store's WATCH does."""

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
        return None if raw is None else _unpacked(raw)

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
        return self.want_accelerate_many(region, [incident_id], interval_s)[0]

    def want_accelerate_many(
        self, region: str, incident_ids: Sequence[str], interval_s: float
    ) -> list[bool]:
        now = time.monotonic()
        wanted = []
        with self._lock:
            for incident_id in incident_ids:
                last = self._accelerated.get((region, incident_id))
                if last is not None and now - last < interval_s:
                    wanted.append(False)
                    continue
                self._accelerated[(region, incident_id)] = now
                wanted.append(True)
        return wanted
