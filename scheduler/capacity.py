"""The capacity ledger: one region's slot budget split across work classes.

Order of claims, each taking only what its class has demand for:

1. maintenance reservations, off the top (maintenance never waits);
2. the premium guarantee (premium latency bound under any load);
3. the anomaly burst (anomaly workflows start at once);
4. the screening minimum;
5. the standard minimum share (standard never starves);
6. the rest by unmet demand in queue order: anomaly, screen, premium, standard.

Invariants (tested with hypothesis in tests/core/test_capacity.py):

- maintenance gets exactly its reservation;
- the data classes' grants sum to at most ``total - maintenance``;
- no class gets more than it asked for (grants are work-conserving: a slot is
  left idle only when no class has demand for it);
- premium gets at least ``min(demand, premium_guarantee)``;
- standard gets at least ``min(demand, standard_min)`` whenever maintenance,
  the premium guarantee, the anomaly burst and the screening minimum leave room.

A guarantee that premium does not use is lent to the others for this
allocation only: the next allocation, made as premium demand shows up, gives it
back (the adapter reclaims it by preempting routine work, see preemption.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.errors import ConfigError
from scheduler.model import QUEUE_ORDER, WorkClass


@dataclass(frozen=True)
class CapacityBudget:
    """A region's slots and the shares held for classes, all in worker slots."""

    #: The region budget (the cloud resource limit).
    total_slots: int
    premium_guarantee_slots: int = 0
    standard_min_slots: int = 0
    anomaly_burst_slots: int = 0
    screen_min_slots: int = 0

    def __post_init__(self) -> None:
        shares = (
            self.premium_guarantee_slots,
            self.standard_min_slots,
            self.anomaly_burst_slots,
            self.screen_min_slots,
        )
        if self.total_slots < 0 or min(shares) < 0:
            raise ConfigError(f"slot counts cannot be negative: {self}")
        if sum(shares) > self.total_slots:
            raise ConfigError(f"guarantees and minimums {sum(shares)} exceed the budget: {self}")


@dataclass(frozen=True)
class ConsumerGroup:
    """Worker slots that consume ``queues`` in this order (one ``-Q`` list)."""

    queues: tuple[WorkClass, ...]
    slots: int


class CapacityLedger:
    """Splits a region's budget across work classes; pure, one call per control tick."""

    def __init__(self, budget: CapacityBudget) -> None:
        self.budget = budget

    def max_maintenance_slots(self) -> int:
        """The most maintenance may reserve: everything but the premium guarantee."""
        return self.budget.total_slots - self.budget.premium_guarantee_slots

    def allocate(
        self, demand: Mapping[WorkClass, int], maintenance_reserved_slots: int
    ) -> dict[WorkClass, int]:
        """Slots granted per class (every class present) for this demand in slots.

        Raises ConfigError when the maintenance reservation would eat into the
        premium guarantee or is negative, or when a demand is negative.
        """
        b = self.budget
        if not 0 <= maintenance_reserved_slots <= self.max_maintenance_slots():
            raise ConfigError(
                f"maintenance reservation {maintenance_reserved_slots} outside "
                f"[0, {self.max_maintenance_slots()}] (total minus premium guarantee)"
            )
        if any(v < 0 for v in demand.values()):
            raise ConfigError(f"negative demand: {dict(demand)}")
        grants = {c: 0 for c in WorkClass}
        grants[WorkClass.MAINTENANCE] = maintenance_reserved_slots
        free = b.total_slots - maintenance_reserved_slots

        def claim(work: WorkClass, cap: int) -> None:
            nonlocal free
            want = demand.get(work, 0) - grants[work]
            take = max(0, min(want, cap, free))
            grants[work] += take
            free -= take

        claim(WorkClass.PREMIUM, b.premium_guarantee_slots)
        claim(WorkClass.ANOMALY, b.anomaly_burst_slots)
        claim(WorkClass.SCREEN, b.screen_min_slots)
        claim(WorkClass.STANDARD, b.standard_min_slots)
        for work in QUEUE_ORDER:
            claim(work, free)
        return grants


def consumer_share(grants: Mapping[WorkClass, int]) -> list[ConsumerGroup]:
    """How a region's processes should consume queues so each class gets its grant.

    A Celery worker takes its queues in ``-Q`` order, so a class's granted
    slots go to processes that list that class first; they fall back to the
    other queues in the usual order when their own is empty, which keeps them
    busy (work-conserving). Maintenance slots consume maintenance only.
    """
    groups: list[ConsumerGroup] = []
    maintenance = grants.get(WorkClass.MAINTENANCE, 0)
    if maintenance > 0:
        groups.append(ConsumerGroup((WorkClass.MAINTENANCE,), maintenance))
    for work in QUEUE_ORDER:
        slots = grants.get(work, 0)
        if slots > 0:
            rest = tuple(w for w in QUEUE_ORDER if w is not work)
            groups.append(ConsumerGroup((work, *rest), slots))
    return groups
