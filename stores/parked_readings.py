"""Parked readings: non-premium readings ingest pushed back, kept durably until it takes them.

The MQTT bridge acknowledges a message only once every reading in it is safe. A reading
ingest pushes back (its region's backlog is past its budget) used to keep its message
unacknowledged, and held messages filled the session's receive window, so the broker
stopped sending: premium messages waited behind standard ones at the broker. Parked in
Redis instead (one write per bridge cycle), the message can be acknowledged at once.

Per region, a list of columnar batches, oldest at the head. A consumer (a bridge)
claims the oldest batches of a region (moved atomically into its own claim list), offers
them to ingest, and marks them done once ingest's publish of them went out; what ingest
pushes back again goes back to the head, so the order is kept. A consumer holds a lease
while alive: the claims of one whose lease ran out (killed, partitioned) go back to the
head of their region's list for any other consumer, and a consumer restarted under its
name takes its own claims back at once. A batch is offered at least once; one claimed
by a consumer that died after publishing it but before marking it done is offered again.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import numpy as np
import numpy.typing as npt

from stores.keys import Keys


@dataclass(frozen=True)
class ParkedBatch:
    """Readings of one region as columns: ids (n,), event times (n,), values (n, metrics),
    and when each was first offered to ingest (latency runs from it)."""

    region: str
    device_id: npt.NDArray[np.uint64]
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    offered_ts: npt.NDArray[np.float64]
    #: Its stored form (set by ``claim``): names the claim in ``done``/``unclaim``.
    entry: bytes = field(default=b"", compare=False)

    def __len__(self) -> int:
        return int(self.device_id.size)

    def encode(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "id": uuid.uuid4().hex,  # two equal batches stay two entries
                "r": self.region,
                "m": int(self.values.shape[1]) if self.values.ndim == 2 else 1,
                "d": np.ascontiguousarray(self.device_id, dtype=np.uint64).tobytes(),
                "t": np.ascontiguousarray(self.ts, dtype=np.float64).tobytes(),
                "v": np.ascontiguousarray(self.values, dtype=np.float64).tobytes(),
                "o": np.ascontiguousarray(self.offered_ts, dtype=np.float64).tobytes(),
            }
        )

    @classmethod
    def decode(cls, entry: bytes) -> ParkedBatch:
        raw = msgpack.unpackb(entry)
        ids = np.frombuffer(raw["d"], dtype=np.uint64)
        values = np.frombuffer(raw["v"], dtype=np.float64).reshape(ids.size, raw["m"])
        return cls(
            raw["r"],
            ids,
            np.frombuffer(raw["t"], dtype=np.float64),
            values,
            np.frombuffer(raw["o"], dtype=np.float64),
            entry,
        )


class ParkedReadingsStore(Protocol):
    """Pushed-back readings per region, oldest first, claimed by one consumer at a time."""

    def park(self, batches: Sequence[ParkedBatch]) -> None:
        """Append batches at the tail of their regions' lists, in one round trip."""

    def claim(self, consumer: str, regions: Sequence[str], per_region: int) -> list[ParkedBatch]:
        """Up to ``per_region`` of the oldest batches of each region, now ``consumer``'s."""

    def done(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        """Claimed batches ingest took: gone for good."""

    def unclaim(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        """Claimed batches ingest did not take: back at the head of their lists, in order.
        A batch with no ``entry`` (the rest of one ingest took in part, which the caller
        marks done once that part is published) is parked at the head."""

    def waiting(self, regions: Sequence[str]) -> dict[str, int]:
        """Batches parked (not claimed) per region."""

    def keep_alive(self, consumer: str, lease_s: float) -> None:
        """``consumer`` is alive for ``lease_s`` more seconds."""

    def rescue(self, consumer: str, regions: Sequence[str], own: bool = False) -> int:
        """Put back the claims of consumers (other than ``consumer``) whose lease ran out;
        with ``own``, ``consumer``'s too (it restarted under the same name and holds none
        of them). Returns how many batches went back."""


class RedisParkedReadings:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def park(self, batches: Sequence[ParkedBatch]) -> None:
        if not batches:
            return
        pipe = self.client.pipeline(transaction=False)
        for b in batches:
            pipe.rpush(self.keys.parked(b.region), b.encode())
        pipe.execute()

    def claim(self, consumer: str, regions: Sequence[str], per_region: int) -> list[ParkedBatch]:
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(k.parked_consumers, consumer)
        for r in regions:
            for _ in range(per_region):
                pipe.lmove(k.parked(r), k.parked_claimed(r, consumer), "LEFT", "RIGHT")
        moved = pipe.execute()[1:]
        return [ParkedBatch.decode(entry) for entry in moved if entry is not None]

    def done(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        if not batches:
            return
        pipe = self.client.pipeline(transaction=False)
        for b in batches:
            pipe.lrem(self.keys.parked_claimed(b.region, consumer), 1, b.entry)
        pipe.execute()

    def unclaim(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        if not batches:
            return
        pipe = self.client.pipeline(transaction=True)
        # Pushed at the head newest first, so the oldest ends up first.
        for b in reversed(batches):
            pipe.lpush(self.keys.parked(b.region), b.entry or b.encode())
        for b in batches:
            if b.entry:
                pipe.lrem(self.keys.parked_claimed(b.region, consumer), 1, b.entry)
        pipe.execute()

    def waiting(self, regions: Sequence[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for r in regions:
            pipe.llen(self.keys.parked(r))
        return dict(zip(regions, map(int, pipe.execute()), strict=True))

    def keep_alive(self, consumer: str, lease_s: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.keys.parked_consumers, consumer)
        pipe.set(self.keys.parked_lease(consumer), 1, px=max(1, int(lease_s * 1000)))
        pipe.execute()

    def rescue(self, consumer: str, regions: Sequence[str], own: bool = False) -> int:
        k = self.keys
        names = [m.decode() for m in self.client.smembers(k.parked_consumers)]
        others = [c for c in names if c != consumer]
        pipe = self.client.pipeline(transaction=False)
        for c in others:
            pipe.exists(k.parked_lease(c))
        dead = [c for c, alive in zip(others, pipe.execute(), strict=True) if not alive]
        moved = 0
        for c in [consumer, *dead] if own else dead:
            for r in regions:
                # Tail of the claims to the head of the list, one by one: the claims keep
                # their order ahead of what was parked since, and each move is atomic, so
                # two consumers rescuing the same claims never put one back twice.
                while self.client.lmove(k.parked_claimed(r, c), k.parked(r), "RIGHT", "LEFT"):
                    moved += 1
            if c != consumer:
                self.client.srem(k.parked_consumers, c)
        return moved


class MemoryParkedReadings:
    """One process's parked readings (the embedded run, tests), same behaviour."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._parked: dict[str, collections.deque[bytes]] = collections.defaultdict(
            collections.deque
        )
        self._claimed: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)
        self._leases: dict[str, float] = {}

    def park(self, batches: Sequence[ParkedBatch]) -> None:
        for b in batches:
            self._parked[b.region].append(b.encode())

    def claim(self, consumer: str, regions: Sequence[str], per_region: int) -> list[ParkedBatch]:
        self._leases.setdefault(consumer, float("-inf"))
        out = []
        for r in regions:
            for _ in range(per_region):
                if not self._parked[r]:
                    break
                entry = self._parked[r].popleft()
                self._claimed[r, consumer].append(entry)
                out.append(ParkedBatch.decode(entry))
        return out

    def done(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        for b in batches:
            self._unclaimed(b, consumer)

    def _unclaimed(self, b: ParkedBatch, consumer: str) -> None:
        """Drop a claim; one already gone (rescued after a lapsed lease) is no error,
        as LREM finds nothing in Redis."""
        claims = self._claimed[b.region, consumer]
        if b.entry in claims:
            claims.remove(b.entry)

    def unclaim(self, consumer: str, batches: Sequence[ParkedBatch]) -> None:
        for b in reversed(batches):
            self._parked[b.region].appendleft(b.entry or b.encode())
        for b in batches:
            if b.entry:
                self._unclaimed(b, consumer)

    def waiting(self, regions: Sequence[str]) -> dict[str, int]:
        return {r: len(self._parked[r]) for r in regions}

    def keep_alive(self, consumer: str, lease_s: float) -> None:
        self._leases[consumer] = self.clock() + lease_s

    def rescue(self, consumer: str, regions: Sequence[str], own: bool = False) -> int:
        now = self.clock()
        dead = [c for c, until in self._leases.items() if c != consumer and until <= now]
        moved = 0
        for c in [consumer, *dead] if own else dead:
            for r in regions:
                claims = self._claimed.pop((r, c), [])
                self._parked[r].extendleft(reversed(claims))
                moved += len(claims)
            if c != consumer:
                del self._leases[c]
        return moved
