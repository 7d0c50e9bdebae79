"""Preemption: when routine work gives its slot up to waiting anomaly work.

Routine tasks process their batch in chunks and ask between chunks whether to
yield. Yielding defers the unprocessed remainder back to its queue, so nothing
is dropped; the chunk plan tells the task exactly which slice that is.

Who yields: anomaly tasks that cannot start (backlog beyond the free slots)
are covered first by standard work, then by premium work, never by anomaly or
screening work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.defaults import ROUTINE_CHUNK_READINGS
from scheduler.errors import ConfigError
from scheduler.model import WorkClass

#: Classes that may be asked to yield, in the order they are asked.
YIELD_ORDER: tuple[WorkClass, ...] = (WorkClass.STANDARD, WorkClass.PREMIUM)


@dataclass(frozen=True)
class PreemptionConfig:
    #: Readings per chunk between preemption checks.
    chunk_readings: int = ROUTINE_CHUNK_READINGS
    #: A chunk should take no longer than this, so a check comes at least this often.
    max_check_interval_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.chunk_readings < 1 or self.max_check_interval_ms <= 0:
            raise ConfigError(f"need chunk_readings >= 1 and max_check_interval_ms > 0: {self}")


@dataclass(frozen=True)
class YieldDecision:
    """One preemption check and its answer, for reports and logs."""

    task_class: WorkClass
    yield_now: bool
    anomaly_backlog: int
    free_slots: int
    standard_running: int
    reason: str


class PreemptionPolicy:
    """Pure preemption rules; the adapter supplies the cheap signal's figures."""

    def __init__(self, config: PreemptionConfig | None = None) -> None:
        self.config = config or PreemptionConfig()

    def decide(
        self,
        anomaly_backlog: int,
        free_slots: int,
        task_class: WorkClass,
        standard_running: int = 0,
    ) -> YieldDecision:
        """Whether a running ``task_class`` task should yield at its next chunk boundary.

        ``standard_running`` is how many standard tasks still hold slots:
        premium yields only for the anomaly tasks those cannot cover.
        """
        unmet = max(0, anomaly_backlog - max(0, free_slots))

        def answer(yield_now: bool, reason: str) -> YieldDecision:
            return YieldDecision(
                task_class, yield_now, anomaly_backlog, free_slots, standard_running, reason
            )

        if task_class not in YIELD_ORDER:
            return answer(False, f"{task_class.value} work never yields")
        if unmet == 0:
            return answer(False, "no anomaly work is waiting for a slot")
        if task_class is WorkClass.STANDARD:
            return answer(True, f"{unmet} anomaly tasks wait for a slot: standard yields first")
        if standard_running >= unmet:
            return answer(False, f"{standard_running} standard tasks yield for {unmet} first")
        return answer(True, f"{unmet} anomaly tasks wait, {standard_running} standard left")

    def should_yield(
        self,
        anomaly_backlog: int,
        free_slots: int,
        task_class: WorkClass,
        standard_running: int = 0,
    ) -> bool:
        return self.decide(anomaly_backlog, free_slots, task_class, standard_running).yield_now

    def yield_quota(
        self, anomaly_backlog: int, free_slots: int, running: Mapping[WorkClass, int]
    ) -> dict[WorkClass, int]:
        """How many tasks of each class should yield so every waiting anomaly task starts.

        An adapter can hand these out as tokens so only as many routine tasks
        yield as are needed, standard ones before premium ones.
        """
        unmet = max(0, anomaly_backlog - max(0, free_slots))
        quota = {c: 0 for c in YIELD_ORDER}
        for work in YIELD_ORDER:
            take = min(unmet, max(0, running.get(work, 0)))
            quota[work] = take
            unmet -= take
        return quota

    def chunk_size(self, service_rps_per_slot: float | None = None) -> int:
        """Readings per chunk: as configured, fewer if a chunk would outlast the interval."""
        size = self.config.chunk_readings
        if service_rps_per_slot is not None and service_rps_per_slot > 0:
            per_interval = math.floor(
                service_rps_per_slot * self.config.max_check_interval_ms / 1e3
            )
            size = min(size, max(1, per_interval))
        return size

    def plan_chunks(
        self, n_readings: int, service_rps_per_slot: float | None = None
    ) -> list[slice]:
        """Consecutive slices covering ``[0, n_readings)`` exactly once."""
        size = self.chunk_size(service_rps_per_slot)
        return [slice(i, min(i + size, n_readings)) for i in range(0, max(0, n_readings), size)]

    def remainder(
        self, n_readings: int, done_chunks: int, service_rps_per_slot: float | None = None
    ) -> slice:
        """The readings still to do after ``done_chunks`` chunks of the same plan: defer these."""
        size = self.chunk_size(service_rps_per_slot)
        start = min(max(0, done_chunks) * size, max(0, n_readings))
        return slice(start, max(0, n_readings))
