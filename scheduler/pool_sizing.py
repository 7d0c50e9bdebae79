"""One worker's pool target: the region's sizing (scheduler.region_sizing) and this worker's
share of it, within the pool's bounds.

No Celery and no Redis here: the autoscaler's background thread feeds it figures
it has already read, and the event loop only reads the ``PoolFigures`` it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.capacity import CapacityBudget
from scheduler.rate_meter import QueueRates
from scheduler.region_sizing import RegionObservation, RegionSizer, work_class
from scheduler.scaling import ScalingConfig, ScalingPolicy
from scheduler.settings import Settings


def region_budget(cfg: Settings) -> CapacityBudget:
    """A region's budget from ``IOTSCHED_REGION_BUDGET_SLOTS`` and the class shares."""
    return CapacityBudget(
        total_slots=cfg.region_budget_slots,
        premium_guarantee_slots=cfg.premium_guarantee_slots,
        standard_min_slots=cfg.standard_min_slots,
        anomaly_burst_slots=cfg.anomaly_burst_slots,
        screen_min_slots=cfg.screen_min_slots,
    )


def scaling_config(cfg: Settings) -> ScalingConfig:
    """The deployed scaling policy's configuration: no minimum, the region budget at most."""
    return ScalingConfig(
        drain_target_s=cfg.drain_target_s,
        min_slots=0,
        max_slots=cfg.region_budget_slots,
        scale_down_window_s=cfg.scale_down_window_s,
        forecast_alpha=cfg.forecast_alpha,
    )


def region_sizer(cfg: Settings) -> RegionSizer:
    """The region's sizing as deployed: a ScalingPolicy under the settings' budget."""
    return RegionSizer(ScalingPolicy(scaling_config(cfg)), region_budget(cfg), cfg.drain_target_s)


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


def even_share(slots: int, share: tuple[int, int]) -> int:
    """Worker ``rank`` of ``workers``'s even share of ``slots``: the first ``slots % workers``
    take one more. An even split by rank converges at once; "region minus what the
    others hold" would make two workers chase each other's last figures."""
    rank, workers = share
    return slots // workers + (1 if rank < slots % workers else 0)


class PoolSizer:
    """Sizes one worker's pool over the queues it consumes; one instance per worker."""

    def __init__(self, queues: Sequence[str], cfg: Settings) -> None:
        self.queues = tuple(queues)
        self.region = region_sizer(cfg)

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
        slots. ``consuming`` lists the queues still consumed (None: all); with
        none left the worker is draining. ``region_current_slots`` is what the
        region's pools hold now (default: the busy slots seen here).
        ``maintenance_reserved_slots`` is the region's pre-drain level
        (``Keys.maintenance_drain``): slots held back for windows active now or
        about to start. Data classes share what is left of the budget, and that
        cap wins over the pool's minimum, so the slots are free when the window
        starts (maintenance never waits for data processing).
        """
        active = (
            self.queues if consuming is None else tuple(q for q in self.queues if q in consuming)
        )
        depth = {q: rates.depth.get(q, 0) + local.waiting.get(q, 0) for q in self.queues}
        arrival = {q: rates.arrival_rps.get(q, 0.0) for q in self.queues}
        busy = sum(local.busy.values())
        sizing = self.region.size(
            RegionObservation(
                now_ts=rates.at_ts,
                depth=depth,
                arrival_rps=arrival,
                service_rps_per_slot=service_rps_per_slot,
                busy_slots=busy,
                current_slots=busy if region_current_slots is None else region_current_slots,
                maintenance_reserved_slots=maintenance_reserved_slots,
            ),
            active,
        )
        low, high = bounds
        workers = share[1]
        if not active:
            # Draining: keep slots for what this worker still holds, add none.
            held = busy + sum(local.waiting.values())
            target, why = min(high, max(low, held)), "not consuming (draining)"
        else:
            target = min(high, max(low, even_share(sizing.region_slots, share)))
            why = sizing.reason
            if workers > 1:
                why += f"; share {share[0] + 1} of {workers} workers"
        maintenance = sizing.maintenance_slots
        if maintenance > 0:
            # Over the pool's minimum too: the reserved slots must be free at the start.
            target = min(target, even_share(sizing.data_cap_slots, share))
            why += (
                f"; maintenance holds {maintenance}, data pools capped at {sizing.data_cap_slots}"
            )
        return PoolFigures(
            at_ts=rates.at_ts,
            target_slots=target,
            region_slots=sizing.region_slots,
            grants={q: sizing.by_class[work_class(q)] if q in active else 0 for q in self.queues},
            service_rps_per_slot=service_rps_per_slot,
            depth=depth,
            arrival_rps=arrival,
            reason=why,
            maintenance_slots=maintenance,
        )
