"""The in-flight ledger: every routine batch (and screening copy) from publish until done.

kombu's Redis transport pops a message with BRPOP and only then records it as
unacked; a worker killed between the two loses the message for good (kombu
issue #305; seen here once in four SIGKILL tests). The producer therefore
records each routine batch here before publishing it, the routine task clears
it once every chunk is applied or dead-lettered, and a reaper publishes again
any batch still here after the grace period. Chunk claims make the extra copy
harmless, so a reading is processed, queued, in this ledger, or dead-lettered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from stores import resp
from stores.keys import Keys


@dataclass(frozen=True)
class InflightBatch:
    batch_id: str
    queue: str
    payload: dict[str, Any]
    #: The Celery task that takes the payload.
    task: str


#: (batch id, queue, payload, task) of one batch about to be published.
Entry = tuple[str, str, dict[str, Any], str]
#: Given the queues of overdue batches, names those to leave alone this time.
SkipQueues = Callable[[set[str]], set[str]]


class InflightLedgerStore(Protocol):
    """Batches from publish until done; overdue ones are published again by the reaper."""

    def record_many(self, batches: Sequence[Entry], now_ts: float) -> None:
        """Record batches about to be published (a batch id recorded again is replaced)."""

    def done(self, batch_id: str) -> None:
        """The batch is applied, screened or dead-lettered: nobody need send it again."""

    def payload(self, batch_id: str) -> dict[str, Any] | None:
        """The payload recorded for ``batch_id``; None once it is done (or never was)."""

    def overdue(
        self,
        now_ts: float,
        grace_s: float,
        limit: int = 100,
        skip_queues: SkipQueues | None = None,
    ) -> list[InflightBatch]:
        """Batches recorded more than ``grace_s`` ago and not done; their clock restarts."""

    def size(self) -> int: ...

    def try_lead(self, holder: str, ttl_s: float) -> bool:
        """One reaper at a time across the deployment: a lease renewed by its holder."""


class RedisInflightLedger:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def record(
        self, batch_id: str, queue: str, payload: dict[str, Any], task: str, now_ts: float
    ) -> None:
        self.record_many([(batch_id, queue, payload, task)], now_ts)

    def record_many(self, batches: Sequence[Entry], now_ts: float) -> None:
        """(batch id, queue, payload, task) of batches about to be published, one round trip."""
        if not batches:
            return
        pipe = self.client.pipeline(transaction=True)
        for command in self.record_commands(batches, now_ts):
            pipe.execute_command(*command)
        pipe.execute()

    def record_commands(self, batches: Sequence[Entry], now_ts: float) -> list[tuple[Any, ...]]:
        """The commands ``record_many`` sends (full key names), for a caller sending them in
        a round trip of its own: the payload first, then when it was recorded (a record
        cut short leaves a payload the reaper never sends, never a time with nothing)."""
        entries: list[Any] = []
        since: list[Any] = []
        for bid, q, p, t in batches:
            entries += (bid, msgpack.packb({"q": q, "p": p, "t": t}, use_bin_type=True))
            since += (now_ts, bid)
        return [("HSET", self.keys.inflight, *entries), ("ZADD", self.keys.inflight_since, *since)]

    def payload(self, batch_id: str) -> dict[str, Any] | None:
        blob = self.client.hget(self.keys.inflight, batch_id)
        if blob is None:
            return None
        entry = msgpack.unpackb(blob, raw=False)
        payload: dict[str, Any] = entry["p"]
        return payload

    def done(self, batch_id: str) -> None:
        # Packed: every routine and screening task ends here, and redis-py's pipeline
        # machinery cost more than the two commands.
        with resp.Session(self.client) as session:
            session.transaction(
                [
                    resp.command(b"HDEL", self.keys.inflight, batch_id),
                    resp.command(b"ZREM", self.keys.inflight_since, batch_id),
                ],
                retry=True,  # removing twice is harmless
            )

    def overdue(
        self,
        now_ts: float,
        grace_s: float,
        limit: int = 100,
        skip_queues: SkipQueues | None = None,
    ) -> list[InflightBatch]:
        """Batches published more than ``grace_s`` ago and not yet done; their clock restarts.

        ``skip_queues(queues)`` names queues whose batches are left alone this time.
        """
        ids = self.client.zrangebyscore(
            self.keys.inflight_since, "-inf", now_ts - grace_s, start=0, num=limit
        )
        if not ids:
            return []
        blobs = self.client.hmget(self.keys.inflight, ids)
        pipe = self.client.pipeline(transaction=False)
        candidates: list[InflightBatch] = []
        for raw_id, blob in zip(ids, blobs, strict=True):
            if blob is None:  # done meanwhile
                pipe.zrem(self.keys.inflight_since, raw_id)
                continue
            entry = msgpack.unpackb(blob, raw=False)
            candidates.append(InflightBatch(raw_id.decode(), entry["q"], entry["p"], entry["t"]))
        skipped = skip_queues({c.queue for c in candidates}) if skip_queues else set()
        found = [c for c in candidates if c.queue not in skipped]
        for c in found:
            pipe.zadd(self.keys.inflight_since, {c.batch_id: now_ts})
        pipe.execute()
        return found

    def size(self) -> int:
        return int(self.client.hlen(self.keys.inflight))

    def try_lead(self, holder: str, ttl_s: float) -> bool:
        """One reaper at a time across the deployment: a lease renewed by its holder."""
        lock = self.keys.inflight_reaper_lock
        if self.client.set(lock, holder, nx=True, px=int(ttl_s * 1000)):
            return True
        current = self.client.get(lock)
        if current is not None and current.decode() == holder:
            self.client.pexpire(lock, int(ttl_s * 1000))
            return True
        return False


#: The name other modules have always imported; the Redis ledger.
InflightLedger = RedisInflightLedger


class MemoryInflightLedger:
    """The ledger of one process (the embedded run): same contract, a lock instead of Redis."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, InflightBatch] = {}
        self._since: dict[str, float] = {}
        self._lease: tuple[str, float] | None = None
        self._clock = clock

    def record(
        self, batch_id: str, queue: str, payload: dict[str, Any], task: str, now_ts: float
    ) -> None:
        self.record_many([(batch_id, queue, payload, task)], now_ts)

    def record_many(self, batches: Sequence[Entry], now_ts: float) -> None:
        with self._lock:
            for bid, queue, payload, task in batches:
                self._entries[bid] = InflightBatch(bid, queue, payload, task)
                self._since[bid] = now_ts

    def payload(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(batch_id)
        return None if entry is None else entry.payload

    def done(self, batch_id: str) -> None:
        with self._lock:
            self._entries.pop(batch_id, None)
            self._since.pop(batch_id, None)

    def overdue(
        self,
        now_ts: float,
        grace_s: float,
        limit: int = 100,
        skip_queues: SkipQueues | None = None,
    ) -> list[InflightBatch]:
        with self._lock:
            due = sorted((ts, bid) for bid, ts in self._since.items() if ts <= now_ts - grace_s)
            candidates = [self._entries[bid] for _, bid in due[:limit]]
        skipped = skip_queues({c.queue for c in candidates}) if skip_queues else set()
        found = [c for c in candidates if c.queue not in skipped]
        with self._lock:
            for c in found:
                if c.batch_id in self._since:
                    self._since[c.batch_id] = now_ts
        return found

    def size(self) -> int:
        with self._lock:
            return len(self._entries)

    def try_lead(self, holder: str, ttl_s: float) -> bool:
        now = (self._clock or time.monotonic)()
        with self._lock:
            if self._lease is None or self._lease[0] == holder or self._lease[1] <= now:
                self._lease = (holder, now + ttl_s)
                return True
            return False
