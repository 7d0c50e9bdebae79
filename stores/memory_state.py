"""In-memory state store for the embedded demo and for tests; same contract as Redis."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

from scheduler import defaults
from scheduler.latency import merge_counts
from scheduler.model import DeadLetter, readings_by_reason
from scheduler.registry import Registry
from scheduler.rollup import Rollup, RollupDelta, delta_row, merge


class MemoryStateStore:
    """Thread-safe; one lock makes apply_batch atomic like the Redis Lua script."""

    def __init__(self, dead_letter_maxlen: int = defaults.DEAD_LETTER_MAXLEN) -> None:
        self._lock = threading.Lock()
        self._claims: set[str] = set()
        self._rollups: dict[tuple[int, int], Rollup] = {}
        self._counters: dict[str, int] = {}
        self._latency: dict[tuple[str, str], dict[int, int]] = {}
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_maxlen)
        self._registry: Registry | None = None
        self._registry_version = 0

    def apply_batch(
        self,
        batch_id: str,
        tier: str,
        delta: RollupDelta,
        latency: Mapping[str, Mapping[int, int]],
        readings: int,
    ) -> bool:
        with self._lock:
            if batch_id in self._claims:
                self._bump("duplicate_deliveries", 1)
                return False
            self._claims.add(batch_id)
            for kind, hist in latency.items():
                key = (kind, tier)
                self._latency[key] = merge_counts(self._latency.get(key, {}), hist)
            self._bump(f"processed:{tier}", readings)
            self._bump(f"batches:{tier}", 1)
            for i in range(len(delta)):
                k = (int(delta.device_id[i]), int(delta.minute_ts[i]))
                self._rollups[k] = merge(self._rollups.get(k), delta_row(delta, i))
            return True

    def _bump(self, name: str, n: int) -> None:
        self._counters[name] = self._counters.get(name, 0) + n

    def rollup(self, device_id: int, minute_ts: int, n_metrics: int) -> Rollup | None:
        with self._lock:
            return self._rollups.get((device_id, minute_ts))

    def drop_rollups_before(self, minute_ts: float) -> tuple[int, int]:
        """Forget rollup minutes older than ``minute_ts``: (examined, deleted)."""
        with self._lock:
            old = [k for k in self._rollups if k[1] < minute_ts]
            for k in old:
                del self._rollups[k]
            return len(self._rollups) + len(old), len(old)

    def rollup_count_total(self) -> int:
        with self._lock:
            return sum(r.count for r in self._rollups.values())

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        with self._lock:
            self._dead.extend(letters)
            self._bump("dead_lettered", sum(dl.readings for dl in letters))
            for reason, readings in readings_by_reason(letters).items():
                self._bump(f"dead_lettered:{reason}", readings)

    def dead_letter_claimed(self, claimed: Sequence[tuple[str, DeadLetter]]) -> list[bool]:
        with self._lock:
            free = [cid not in self._claims for cid, _ in claimed]
            written = [dl for (cid, dl), ok in zip(claimed, free, strict=True) if ok]
            self._claims.update(cid for cid, _ in claimed)
        self.add_dead_letters(written)
        return free

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        with self._lock:
            return list(self._dead)[-count:]

    def incr_counters(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for name, n in counts.items():
                self._bump(name, n)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def latency_histogram(self, kind: str, tier: str) -> dict[int, int]:
        with self._lock:
            return dict(self._latency.get((kind, tier), {}))

    def save_registry(self, registry: Registry) -> int:
        with self._lock:
            self._registry_version += 1
            self._registry = registry.with_version(self._registry_version)
            return self._registry_version

    def registry_version(self) -> int:
        return self._registry_version

    def load_registry(self) -> Registry | None:
        return self._registry
