"""The state store interface: a Redis implementation and an in-memory one share it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from scheduler.model import DeadLetter
from scheduler.registry import Registry
from scheduler.rollup import Rollup, RollupDelta


class StateStore(Protocol):
    def apply_batch(
        self,
        batch_id: str,
        tier: str,
        delta: RollupDelta,
        latency: Mapping[str, Mapping[int, int]],
        readings: int,
    ) -> bool:
        """Apply a batch's effects atomically, once per batch id; False if already applied."""

    def rollup(self, device_id: int, minute_ts: int, n_metrics: int) -> Rollup | None: ...

    def rollup_count_total(self) -> int:
        """Sum of ``count`` over every stored rollup: an independent check of what was applied."""

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    def dead_letters(self, count: int = 100) -> list[DeadLetter]: ...

    def incr_counters(self, counts: Mapping[str, int]) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def latency_histogram(self, kind: str, tier: str) -> dict[int, int]: ...

    def save_registry(self, registry: Registry) -> int:
        """Store a snapshot; returns its new version."""

    def registry_version(self) -> int: ...

    def load_registry(self) -> Registry | None: ...


def processed_readings(counters: Mapping[str, int]) -> int:
    """Readings applied so far, all tiers: the sum of the ``processed:{tier}`` counters."""
    return sum(v for k, v in counters.items() if k.startswith("processed:"))
