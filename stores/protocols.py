"""The state store interface: a Redis implementation and an in-memory one share it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from scheduler.maintenance_plan import BookState, OpOutcome
from scheduler.model import DeadLetter
from scheduler.registry import Registry
from scheduler.rollup import Rollup, RollupDelta
from scheduler.work_budget import WorkBudget

if TYPE_CHECKING:  # the Redis modules defining these records import this one
    from stores.health_store import RegionSnapshot
    from stores.pool_heartbeats import PoolBeat
    from stores.queue_scan import ScanResult

T = TypeVar("T")


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

    def dead_letter_claimed(self, claimed: Sequence[tuple[str, DeadLetter]]) -> list[bool]:
        """See ``ClaimStore``: a state store owns the claims its ``apply_batch`` checks."""

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


class ClaimStore(Protocol):
    """Claims shared with ``StateStore.apply_batch``: a chunk is applied or given up, once."""

    def dead_letter_claimed(self, claimed: Sequence[tuple[str, DeadLetter]]) -> list[bool]:
        """Per (claim id, letter): claim it and dead-letter it unless it was claimed before;
        the claims, entries and counts together or not at all. True where this call did."""


class QueueDepthRead(Protocol):
    """The read side of broker queue depth (messages waiting, all priority steps)."""

    def depths(self, queues: Sequence[str]) -> dict[str, int]: ...


class WorkBudgetStore(Protocol):
    """A region's budget of work ranked above premium (``scheduler.work_budget``)."""

    budget: WorkBudget

    def admits(self, region: str, now_ts: float) -> bool: ...

    def charge(self, region: str, now_ts: float, cost_s: float) -> None: ...


class RegionHeartbeatStore(Protocol):
    """Region heartbeats per role ("data", "premium" lane): written by workers, read by
    placement and status."""

    def beat(self, regions: Sequence[str], now_ts: float, role: str = "data") -> None: ...

    def heartbeats(self, role: str = "data") -> dict[str, float]: ...


class RegionHealthStore(Protocol):
    """What placement reads about regions, and where workers write their heartbeat."""

    def beat(self, regions: Sequence[str], now_ts: float, role: str = "data") -> None: ...

    def heartbeats(self, role: str = "data") -> dict[str, float]: ...

    def queued_messages(self) -> dict[str, int]: ...

    def snapshot(self) -> RegionSnapshot: ...


class ReservationsStore(Protocol):
    """The maintenance reservation book and its runs, changed atomically by ``update``."""

    def load(self) -> BookState: ...

    def update(self, change: Callable[[BookState], T]) -> T:
        """Apply ``change`` atomically; it may run more than once (no sends in it)."""

    def drain_levels(self) -> dict[str, int]: ...

    def events(self, count: int = 1_000) -> list[dict[str, str]]: ...


class PoolHeartbeatStore(Protocol):
    """Worker pool beats: each autoscaler publishes its pool and learns its peers'."""

    def exchange(self, beat: PoolBeat) -> dict[str, PoolBeat]: ...

    def read(self) -> dict[str, PoolBeat]: ...

    def forget(self, node: str) -> None: ...


class RoutineQueueScan(Protocol):
    """Bounded reads of the routine batches waiting in a region's queues, without taking them."""

    def routine_payloads(self, region: str) -> ScanResult: ...


class MaintenanceOps(Protocol):
    """The platform's maintenance operations (``stores.maintenance_ops.OPERATIONS``) on this
    deployment's stores: each idempotent, resumable from ``cursor``, stopped at the deadline."""

    def run(self, name: str, cursor: str, deadline_ts: float) -> OpOutcome: ...
