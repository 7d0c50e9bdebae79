"""The sizing policy assembled: one region's queues → slots per work class.

One scaler sizes the region's data pools as a whole (every data queue summed):
one pool serves them in queue order, and a scaler per class would round each
class's trickle up to a whole slot. That total is apportioned to the classes
by their load and put through the capacity ledger, which applies the region
budget, the maintenance pre-drain level and the per-class guarantees; the
region's slots are what the ledger grants.

This is the one assembly: the deployed autoscaler (scheduler.pool_sizing,
driven by workers.autoscaler) and the simulator (simulation.engine) both call
``RegionSizer.size``, so what a simulated scenario shows holds for the
deployed policy. Depth, arrivals and the service rate only need one unit
between them: the autoscaler counts tasks (messages), the simulator readings.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from scheduler.capacity import CapacityBudget, CapacityLedger
from scheduler.model import SCREEN_PREMIUM_KIND, WorkClass
from scheduler.scaling import ScalingObservation, ScalingPolicy


class Scaler(Protocol):
    """Anything that answers a pool size for an observation (ScalingPolicy or a baseline)."""

    def desired_slots(self, obs: ScalingObservation) -> int: ...


@functools.cache
def work_class(queue: str) -> WorkClass:
    """``eu-west.premium`` → PREMIUM; a queue outside the naming scheme counts as standard.

    Cached: a region has a handful of queues, and the simulator sizes every region
    every simulated second.
    """
    kind = queue.rpartition(".")[2]
    if kind == SCREEN_PREMIUM_KIND:
        return WorkClass.SCREEN
    try:
        return WorkClass(kind)
    except ValueError:
        return WorkClass.STANDARD


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` slots by weight, largest remainders first; sums to ``total``."""
    keys = list(weights)
    if not keys:
        return {}
    weight_sum = sum(max(0.0, weights[k]) for k in keys)
    if weight_sum <= 0:
        return {k: (total if i == len(keys) - 1 else 0) for i, k in enumerate(keys)}
    exact = {k: total * max(0.0, weights[k]) / weight_sum for k in keys}
    out = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: exact[k] - out[k], reverse=True)
    for k in by_remainder[: total - sum(out.values())]:
        out[k] += 1
    return out


def maintenance_hold(ledger: CapacityLedger, level: int, demand_slots: int = 0) -> int:
    """Slots held for maintenance at pre-drain ``level`` (or a maintenance queue's demand),
    as the ledger can hold them: a level published for a larger budget is clipped,
    never into the premium guarantee."""
    return min(max(0, demand_slots, level), ledger.max_maintenance_slots())


def data_cap_slots(ledger: CapacityLedger, level: int) -> int:
    """Slots a region's data pools may hold while maintenance holds the pre-drain ``level``."""
    return ledger.budget.total_slots - maintenance_hold(ledger, level)


@functools.cache
def _classes_of(queues: tuple[str, ...]) -> frozenset[WorkClass]:
    """The classes ``queues`` serve; two queues of one class (both screening queues)
    share its grant, so it is credited once."""
    return frozenset(work_class(q) for q in queues)


@dataclass(frozen=True)
class RegionObservation:
    """One region's queues at ``now_ts`` (epoch seconds), per queue name.

    Depth, arrivals and ``service_rps_per_slot`` count the same unit of work.
    """

    now_ts: float
    #: Work waiting per queue (``{region}.{kind}``).
    depth: Mapping[str, float]
    #: Work arriving per second per queue, measured over the last interval.
    arrival_rps: Mapping[str, float]
    service_rps_per_slot: float
    #: Slots busy now (over the region's pools, as far as the caller sees them).
    busy_slots: int
    #: Slots the region's pools hold now.
    current_slots: int
    #: The region's maintenance pre-drain level (scheduler.maintenance.drain_slots).
    maintenance_reserved_slots: int = 0


@dataclass(frozen=True)
class RegionSizing:
    """What the region's data pools should hold, and why."""

    #: What the scaler asked for, before the ledger.
    wanted_slots: int
    #: The ledger's grants per class (every class present, maintenance included).
    by_class: Mapping[WorkClass, int]
    #: Slots the region's consumers of the sized queues should hold in total.
    region_slots: int
    #: Slots held back for maintenance: the pre-drain level as the ledger can hold it.
    maintenance_slots: int
    #: What the data pools may hold while maintenance holds its slots.
    data_cap_slots: int
    reason: str


class RegionSizer:
    """Sizes one region's data pools from its queues; one instance (and scaler) per region."""

    def __init__(self, scaler: Scaler, budget: CapacityBudget, drain_target_s: float) -> None:
        self.scaler = scaler
        self.budget = budget
        self.ledger = CapacityLedger(budget)
        #: Backlog is weighed against arrivals at the rate that clears it in this long.
        self.drain_target_s = drain_target_s

    def data_cap_slots(self, level: int) -> int:
        """Slots the data pools may hold while maintenance holds the pre-drain ``level``."""
        return data_cap_slots(self.ledger, level)

    def size(self, obs: RegionObservation, active: Iterable[str] | None = None) -> RegionSizing:
        """Slots for the ``active`` queues (default: every queue observed).

        The scaler sees every observation, active queues or none, so its window
        stays current; queues not active count for nothing.
        """
        queues = tuple(obs.depth) if active is None else tuple(active)
        # One pass (the simulator sizes every region every simulated second): totals
        # for the scaler, and each queue's load (arrivals plus backlog over the drain
        # target) to split its answer by.
        depth_total: float = 0
        arrival_total = 0.0
        weights: dict[str, float] = {}
        for q in queues:
            depth, arrival = obs.depth.get(q, 0), obs.arrival_rps.get(q, 0.0)
            depth_total += depth
            arrival_total += arrival
            weights[q] = arrival + depth / self.drain_target_s
        wanted = self.scaler.desired_slots(
            ScalingObservation(
                now_ts=obs.now_ts,
                queue_depth=int(depth_total),
                arrival_rps=arrival_total,
                service_rps_per_slot=obs.service_rps_per_slot,
                busy_slots=obs.busy_slots,
                current_slots=obs.current_slots,
            )
        )
        demand: dict[WorkClass, int] = {}
        for queue, slots in apportion(wanted, weights).items():
            cls = work_class(queue)
            demand[cls] = demand.get(cls, 0) + slots
        maintenance = maintenance_hold(
            self.ledger, obs.maintenance_reserved_slots, demand.pop(WorkClass.MAINTENANCE, 0)
        )
        by_class = self.ledger.allocate(demand, maintenance)
        region_slots = sum(by_class[c] for c in _classes_of(queues))
        reason = self._scaler_reason(wanted)
        if region_slots < wanted:
            reason += f"; ledger grants {region_slots} (budget {self.budget.total_slots})"
        return RegionSizing(
            wanted_slots=wanted,
            by_class=by_class,
            region_slots=region_slots,
            maintenance_slots=maintenance,
            data_cap_slots=self.budget.total_slots - maintenance,
            reason=reason,
        )

    def _scaler_reason(self, wanted: int) -> str:
        if isinstance(self.scaler, ScalingPolicy):
            decision = self.scaler.last_decision
            return decision.reason if decision is not None else "no decision"
        return f"{type(self.scaler).__name__} wants {wanted}"
