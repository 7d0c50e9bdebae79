"""Detector states read page by page for the dropout sweep, and its marks written back.

A silent device sends nothing, so no screening task ever looks at its state: the
sweep (``tasks.dropout``) walks every state with SCAN, a bounded page at a time.
Each region keeps its own SCAN cursor in Redis, so successive sweeps (on any worker)
continue where the last one stopped and a full pass over a million states is spread
over many short tasks. SCAN may return a key twice within a pass; the marks in the
state (``find_dropouts``) make a second look harmless.

``mark`` writes back only the states the sweep marked, and only if nobody changed
them since the page was read (WATCH, then one MULTI/MSET): a screening commit of the
same device in between wins, and the device is looked at again on the next pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis

from stores.detector_store import MemoryDetectorStore, RedisDetectorStore
from stores.keys import Keys

U64 = npt.NDArray[np.uint64]
BOOL = npt.NDArray[np.bool_]


@dataclass
class StatePage:
    """One page of detector states: device ids and their blobs as stored."""

    device_ids: U64
    blobs: list[bytes]
    #: True when this page finished a full pass (the cursor went back to 0).
    wrapped: bool


class DropoutStore(Protocol):
    def page(self, region: str, page_size: int) -> StatePage:
        """The next page of ``region``'s pass over every detector state."""

    def mark(self, device_ids: U64, seen: list[bytes], marked: list[bytes]) -> BOOL:
        """Replace ``seen`` by ``marked`` where unchanged meanwhile; which were written."""

    def frontier(self, region: str) -> dict[str, float]:
        """Per screening stream (tier name) of ``region``, the newest event ts screened."""


class RedisDropoutStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client: Any = client  # redis-py's reply unions: see RedisStateStore
        self.keys = keys or Keys()

    def frontier(self, region: str) -> dict[str, float]:
        return RedisDetectorStore(self.client, self.keys).frontier(region)

    def page(self, region: str, page_size: int) -> StatePage:
        """The next page of ``region``'s pass: one SCAN step (COUNT ``page_size``), one MGET."""
        k = self.keys
        raw_cursor = self.client.get(k.dropout_cursor(region))
        cursor = int(raw_cursor or 0)
        cursor, names = self.client.scan(cursor, match=k.detector_state_pattern(), count=page_size)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(k.dropout_cursor(region), int(cursor))
        if names:
            pipe.mget(names)
        replies = pipe.execute()
        blobs: list[bytes | None] = replies[1] if names else []
        ids: list[int] = []
        kept: list[bytes] = []
        for name, blob in zip(names, blobs, strict=True):
            device = k.detector_device_id(name.decode() if isinstance(name, bytes) else name)
            if device is not None and blob is not None:  # deleted between SCAN and MGET
                ids.append(device)
                kept.append(blob)
        return StatePage(np.array(ids, dtype=np.uint64), kept, int(cursor) == 0)

    def mark(self, device_ids: U64, seen: list[bytes], marked: list[bytes]) -> BOOL:
        """Replace ``seen`` by ``marked`` where the state is still ``seen``; which were written.

        Nothing is written when another client changes one of these states meanwhile.
        """
        written = np.zeros(device_ids.size, dtype=bool)
        if not device_ids.size:
            return written
        names = [self.keys.detector_state(d) for d in device_ids.tolist()]
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*names)
                now: list[bytes | None] = pipe.mget(names)
                written = np.array([a == b for a, b in zip(now, seen, strict=True)], dtype=bool)
                pipe.multi()
                if written.any():
                    pipe.mset({n: m for n, m, w in zip(names, marked, written, strict=True) if w})
                pipe.execute()
            except redis.WatchError:
                written[:] = False
        return written


class MemoryDropoutStore:
    """The sweep over the in-memory detector states; a cursor per region, as in Redis."""

    def __init__(self, detector: MemoryDetectorStore) -> None:
        self.detector = detector
        self._lock = threading.Lock()
        self._cursor: dict[str, int] = {}

    def page(self, region: str, page_size: int) -> StatePage:
        with self._lock:
            start = self._cursor.get(region, 0)
            ids, blobs, nxt = self.detector.state_page(start, page_size)
            self._cursor[region] = nxt
        return StatePage(np.array(ids, dtype=np.uint64), blobs, nxt == 0)

    def frontier(self, region: str) -> dict[str, float]:
        return self.detector.frontier(region)

    def mark(self, device_ids: U64, seen: list[bytes], marked: list[bytes]) -> BOOL:
        done = self.detector.replace_states(device_ids.tolist(), seen, marked)
        return np.array(done, dtype=bool)
