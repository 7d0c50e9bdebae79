"""A region's worker pool on the virtual clock: ready slots, slots starting up, and its sizing.

The sizing is the runtime's own assembly (scheduler.region_sizing.RegionSizer
over ScalingPolicy, or over a baseline rule, and the capacity ledger); this
module only turns its answers into slots that become useful after
``slot_startup_s`` and that vanish at once on scale-in (routine tasks yield
within one chunk, far below the control period).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from scheduler.capacity import CapacityBudget
from scheduler.forecast import DailyProfile
from scheduler.hpa_baselines import HpaRule, KedaListLengthRule
from scheduler.region_sizing import RegionObservation, RegionSizer, Scaler
from scheduler.scaling import ScalingConfig, ScalingPolicy
from scheduler.scaling_baselines import CeleryStockRule, PredictiveFloor

#: Reactive rules; each also runs with ``+forecast`` (a predictive floor from yesterday's curve).
BASELINES = ("celery", "hpa", "keda")
SCALERS = ("policy", *(f"{b}{suffix}" for b in BASELINES for suffix in ("", "+forecast")))
FORECAST_SUFFIX = "+forecast"


def uses_forecast(kind: str) -> bool:
    """Whether ``kind`` reads a daily curve learned from the days before the run."""
    return kind == "policy" or kind.endswith(FORECAST_SUFFIX)


def make_scaler(
    kind: str,
    config: ScalingConfig,
    min_slots: int,
    max_slots: int,
    readings_per_task: int,
    profile: DailyProfile | None = None,
    keda_list_length: int = 1,
) -> Scaler:
    """The scaler named ``kind`` for one region's pool, bounded by [min_slots, max_slots].

    Every baseline aims at the policy's own ``target_utilization`` where it has
    such a setting, so the comparison is of rules, not of targets.
    """
    if kind == "policy":
        bounded = replace(config, min_slots=min_slots, max_slots=max_slots)
        return ScalingPolicy(bounded, profile=profile)
    base = kind.removesuffix(FORECAST_SUFFIX)
    rule: CeleryStockRule | HpaRule
    if base == "celery":
        rule = CeleryStockRule(min_slots, max_slots, readings_per_task=readings_per_task)
    elif base == "hpa":
        # CPU use cannot pass 100 %: at a 97 % target only a zero up-tolerance lets it grow.
        rule = HpaRule(
            min_slots, max_slots, target_utilization=config.target_utilization,
            scale_up_tolerance=0.0,
        )  # fmt: skip
    elif base == "keda":
        rule = KedaListLengthRule(min_slots, max_slots, keda_list_length, readings_per_task)
    else:
        raise ValueError(f"unknown scaler {kind!r}; known: {', '.join(SCALERS)}")
    if base == kind:
        return rule
    if profile is None:
        raise ValueError(f"scaler {kind!r} needs a daily curve learned from earlier days")
    return PredictiveFloor(rule, profile, min_slots, max_slots, config.target_utilization)


def make_sizer(
    kind: str,
    config: ScalingConfig,
    budget: CapacityBudget,
    min_slots: int,
    readings_per_task: int,
    profile: DailyProfile | None = None,
    keda_list_length: int = 1,
) -> RegionSizer:
    """One region's sizing: the scaler named ``kind`` (up to the whole budget) under the ledger."""
    scaler = make_scaler(
        kind, config, min_slots, budget.total_slots, readings_per_task, profile, keda_list_length
    )
    return RegionSizer(scaler, budget, config.drain_target_s)


def observe_region(
    queues: Sequence[str],
    now_ts: float,
    queued_work: Sequence[float],
    arrived_work: Sequence[float],
    period_s: float,
    service_rps_per_slot: float,
    busy_slot_s: float,
    current_slots: int,
    maintenance_level: int,
) -> RegionObservation:
    """A simulated region as the autoscaler observes a real one, per queue: work waiting
    now and work that arrived over the last control period (``period_s``), in the unit
    ``service_rps_per_slot`` counts; slots busy on average over the period, rounded up.
    """
    return RegionObservation(
        now_ts=now_ts,
        depth=dict(zip(queues, queued_work, strict=True)),
        arrival_rps={q: w / period_s for q, w in zip(queues, arrived_work, strict=True)},
        service_rps_per_slot=service_rps_per_slot,
        busy_slots=math.ceil(busy_slot_s / period_s - 1e-9),
        current_slots=current_slots,
        maintenance_reserved_slots=maintenance_level,
    )


def scaler_settings(scaler: Scaler) -> str:
    """How ``scaler`` is configured, in its users' terms, for the report."""
    if isinstance(scaler, ScalingPolicy):
        cfg = scaler.config
        forecast = "yesterday's curve + online trend" if scaler.profile else "online trend"
        return (
            f"target {cfg.target_utilization:.0%}, drain {cfg.drain_target_s:g} s, "
            f"scale-down window {cfg.scale_down_window_s:g} s, forecast: {forecast}"
        )
    settings = getattr(scaler, "settings", None)
    return str(settings()) if callable(settings) else type(scaler).__name__


class Pool:
    """Slots of one region's data-processing pool, sized by ``sizer``."""

    def __init__(self, sizer: RegionSizer, initial_slots: int, slot_startup_s: float) -> None:
        self.sizer = sizer
        self.ready = initial_slots
        self.slot_startup_s = slot_startup_s
        #: (ready_at_s, slots) in start order.
        self._starting: deque[tuple[float, int]] = deque()
        self.starting = 0

    @property
    def provisioned(self) -> int:
        """Slots paid for: ready plus starting."""
        return self.ready + self.starting

    def advance(self, t_s: float) -> None:
        """Slots whose start-up has finished by ``t_s`` become ready."""
        while self._starting and self._starting[0][0] <= t_s:
            n = self._starting.popleft()[1]
            self.ready += n
            self.starting -= n

    def resize(self, t_s: float, target: int) -> None:
        """Grow (slots ready after start-up) or shrink (starting slots cancelled first)."""
        excess = self.provisioned - target
        if excess < 0:
            self._starting.append((t_s + self.slot_startup_s, -excess))
            self.starting -= excess
            return
        while excess > 0 and self._starting:
            when, n = self._starting.pop()
            cut = min(n, excess)
            excess -= cut
            self.starting -= cut
            if n > cut:
                self._starting.append((when, n - cut))
        self.ready -= excess
