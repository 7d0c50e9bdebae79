"""In-memory twins of what is read from the broker: queue depth and the routine queue scan.

The embedded run's broker is kombu's in-memory transport in this process; the
runtime hands these a reader of its queues (``runtime.memory_broker``), tests a
plain dict. With them the embedded run gets preemption and acceleration for real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from scheduler.model import queue_name
from stores.queue_scan import DATA_KINDS, MAX_MESSAGES, ScanResult

#: Messages waiting in one queue.
DepthOf = Callable[[str], int]
#: Routine payloads waiting in one queue, newest first (as the Redis scan reads them).
PayloadsOf = Callable[[str], list[dict[str, Any]]]


class MemoryQueueDepth:
    """``QueueDepthRead`` over a reader of queue sizes, or over depths set by hand."""

    def __init__(self, depth_of: DepthOf | None = None) -> None:
        self._set: dict[str, int] = {}
        self._lock = threading.Lock()
        self._depth_of = depth_of

    def set(self, queue: str, depth: int) -> None:
        with self._lock:
            self._set[queue] = depth

    def depths(self, queues: Sequence[str]) -> dict[str, int]:
        with self._lock:
            known = dict(self._set)
        read = self._depth_of
        return {q: known[q] if q in known else (read(q) if read else 0) for q in queues}


class MemoryQueueScan:
    """The routine queue scan over an in-process broker: the same bounds, no transfer cost."""

    def __init__(
        self,
        payloads_of: PayloadsOf,
        max_messages: int = MAX_MESSAGES,
        kinds: Sequence[str] = DATA_KINDS,
    ) -> None:
        self.payloads_of = payloads_of
        self.max_messages = max_messages
        self.kinds = tuple(kinds)

    def routine_payloads(self, region: str) -> ScanResult:
        found: list[dict[str, Any]] = []
        truncated = False
        for kind in self.kinds:
            for payload in self.payloads_of(queue_name(region, kind)):
                if len(found) >= self.max_messages:
                    truncated = True
                    break
                found.append(payload)
        return ScanResult(found, len(found), 0, 0, truncated)
