"""A worker pool's target size from queue figures: one scaling policy per work class,
the region's capacity ledger over them, and this worker's share of the result.

No Celery and no Redis here: the autoscaler's background thread feeds it figures
it has already read, and the event loop only reads the ``PoolFigures`` it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.capacity import CapacityBudget, CapacityLedger
from scheduler.model import SCREEN_PREMIUM_KIND, WorkClass
from scheduler.scaling import ScalingConfig, ScalingObservation, ScalingPolicy
from scheduler.settings import Settings
from stores.queue_depth import QueueRates

#: A service rate is trusted over the prior after this many task-seconds of
#: timed work, or this many tasks (short tasks reach the count first).
SERVICE_EVIDENCE_SLOT_S = 0.5
SERVICE_EVIDENCE_TASKS = 50
#: Weight of a new service-rate measurement against the running estimate.
SERVICE_SMOOTHING = 0.5


def work_class(queue: str) -> WorkClass:
    """``eu-west.premium`` → PREMIUM; a queue outside the naming scheme counts as standard."""
    kind = queue.rpartition(".")[2]
    if kind == SCREEN_PREMIUM_KIND:
        return WorkClass.SCREEN
    try:
        return WorkClass(kind)
    except ValueError:
        return WorkClass.STANDARD


@dataclass(frozen=True)
class LocalLoad:
    """What this worker holds: taken off the broker but not finished, per queue."""

    #: Messages prefetched (reserved) and not yet started.
    waiting: Mapping[str, int] = field(default_factory=dict)
    #: Messages being processed.
    busy: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolFigures:
    """The cached numbers the event loop acts on; ``at_ts`` in epoch seconds."""

    at_ts: float
    #: Slots this worker's pool should have (bounds and other workers applied).
    target_slots: int
    #: Slots the region's consumers of these queues should have in total.
    region_slots: int
    #: Slots the ledger granted per class (queue name → slots).
    grants: Mapping[str, int]
    service_rps_per_slot: float
    #: Messages waiting per queue, in the broker plus prefetched here.
    depth: Mapping[str, int]
    arrival_rps: Mapping[str, float]
    reason: str
    #: Slots held back for maintenance (the region's pre-drain level, as applied).
    maintenance_slots: int = 0


class ServiceMeter:
    """Tasks one busy slot finishes per second: finished tasks over task-seconds run."""

    def __init__(self, prior_rps: float) -> None:
        self.rate_rps = prior_rps
        self.measured = False
        self._last: tuple[int, float] | None = None
        self._done = 0
        self._busy_slot_s = 0.0

    def update(self, finished_total: int, busy_s_total: float) -> float:
        """Fold in the cumulative finished tasks and task-seconds; returns the rate."""
        last, self._last = self._last, (finished_total, busy_s_total)
        if last is None:
            return self.rate_rps
        # max(0, …): a restarted meter reads as no progress, never as negative time.
        self._done += max(0, finished_total - last[0])
        self._busy_slot_s += max(0.0, busy_s_total - last[1])
        enough = (
            self._busy_slot_s >= SERVICE_EVIDENCE_SLOT_S or self._done >= SERVICE_EVIDENCE_TASKS
        )
        if enough and self._done > 0 and self._busy_slot_s > 0:
            measured = self._done / self._busy_slot_s
            weight = SERVICE_SMOOTHING if self.measured else 1.0
            self.rate_rps += weight * (measured - self.rate_rps)
            self.measured = True
            self._done, self._busy_slot_s = 0, 0.0
        return self.rate_rps


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


class PoolSizer:
    """Sizes one worker's pool over the queues it consumes; one instance per worker.

    One scaling policy sizes the whole region (all the queues this pool
    consumes, summed): one pool serves them in queue order, and a policy per
    class would round each class's trickle up to a whole slot. That total is
    then apportioned to the classes by their load and put through the capacity
    ledger, which applies the region budget, the maintenance reservation and
    the per-class guarantees; the pool's target is what the ledger grants.
    """

    def __init__(self, queues: Sequence[str], cfg: Settings) -> None:
        self.queues = tuple(queues)
        self.drain_target_s = cfg.drain_target_s
        self.budget = CapacityBudget(
            total_slots=cfg.region_budget_slots,
            premium_guarantee_slots=cfg.premium_guarantee_slots,
            standard_min_slots=cfg.standard_min_slots,
            anomaly_burst_slots=cfg.anomaly_burst_slots,
            screen_min_slots=cfg.screen_min_slots,
        )
        self.ledger = CapacityLedger(self.budget)
        self.policy = ScalingPolicy(
            ScalingConfig(
                drain_target_s=cfg.drain_target_s,
                min_slots=0,
                max_slots=cfg.region_budget_slots,
                scale_down_window_s=cfg.scale_down_window_s,
                forecast_alpha=cfg.forecast_alpha,
            )
        )

    def size(
        self,
        rates: QueueRates,
        local: LocalLoad,
        service_rps_per_slot: float,
        bounds: tuple[int, int],
        share: tuple[int, int] = (0, 1),
        consuming: Sequence[str] | None = None,
        region_current_slots: int | None = None,
        maintenance_reserved_slots: int = 0,
    ) -> PoolFigures:
        """Target for this pool of ``bounds`` (min, max) slots.

        ``share`` is (this worker's rank, number of workers) among the region's
        workers consuming these queues: each takes an even share of the region's
        slots, the first ``region_slots % workers`` one more. An even split by rank
        converges at once; "region minus what the others hold" would make two
        workers chase each other's last figures. ``consuming`` lists the queues
        still consumed (None: all); with none left the worker is draining.
        ``region_current_slots`` is what the region's pools hold now (default:
        the busy slots seen here). ``maintenance_reserved_slots`` is the region's
        pre-drain level (``Keys.maintenance_drain``): slots held back for windows
        active now or about to start. Data classes share what is left of the
        budget, and that cap wins over the pool's minimum, so the slots are free
        when the window starts (maintenance never waits for data processing).
        """
        active = (
            self.queues if consuming is None else tuple(q for q in self.queues if q in consuming)
        )
        depth = {q: rates.depth.get(q, 0) + local.waiting.get(q, 0) for q in self.queues}
        arrival = {q: rates.arrival_rps.get(q, 0.0) for q in self.queues}
        busy = sum(local.busy.values())
        obs = ScalingObservation(
            now_ts=rates.at_ts,
            queue_depth=sum(depth[q] for q in active),
            arrival_rps=sum(arrival[q] for q in active),
            service_rps_per_slot=service_rps_per_slot,
            busy_slots=busy,
            current_slots=busy if region_current_slots is None else region_current_slots,
        )
        # The policy sees every sample, draining or not, so its window stays current.
        wanted = self.policy.desired_slots(obs)
        weights = {q: arrival[q] + depth[q] / self.drain_target_s for q in active}
        demand: dict[WorkClass, int] = {}
        for queue, slots in apportion(wanted, weights).items():
            cls = work_class(queue)
            demand[cls] = demand.get(cls, 0) + slots
        # A level published for a larger budget is clipped: the premium guarantee stays.
        maintenance = min(
            max(demand.pop(WorkClass.MAINTENANCE, 0), maintenance_reserved_slots),
            self.ledger.max_maintenance_slots(),
        )
        by_class = self.ledger.allocate(demand, maintenance)
        grants = {q: by_class[work_class(q)] if q in active else 0 for q in self.queues}
        # Two queues of one class (unusual) share its grant: credit it once.
        region_slots = sum(by_class[c] for c in {work_class(q) for q in active})
        low, high = bounds
        rank, workers = share
        decision = self.policy.last_decision
        data_cap = self.budget.total_slots - maintenance
        cap = data_cap // workers + (1 if rank < data_cap % workers else 0)
        if not active:
            # Draining: keep slots for what this worker still holds, add none.
            held = busy + sum(local.waiting.values())
            target, why = min(high, max(low, held)), "not consuming (draining)"
        else:
            mine = region_slots // workers + (1 if rank < region_slots % workers else 0)
            target = min(high, max(low, mine))
            why = decision.reason if decision is not None else "no decision"
            if region_slots < wanted:
                why += f"; ledger grants {region_slots} (budget {self.budget.total_slots})"
            if workers > 1:
                why += f"; share {rank + 1} of {workers} workers"
        if maintenance > 0:
            # Over the pool's minimum too: the reserved slots must be free at the start.
            target = min(target, cap)
            why += f"; maintenance holds {maintenance}, data pools capped at {data_cap}"
        return PoolFigures(
            at_ts=rates.at_ts,
            target_slots=target,
            region_slots=region_slots,
            grants=grants,
            service_rps_per_slot=service_rps_per_slot,
            depth=depth,
            arrival_rps=arrival,
            reason=why,
            maintenance_slots=maintenance,
        )
