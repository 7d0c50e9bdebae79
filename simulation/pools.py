"""A region's worker pool on the virtual clock: ready slots, slots starting up, and its scaler.

The scaler is the runtime's own object (ScalingPolicy, or a baseline rule);
this module only turns its answers into slots that become useful after
``slot_startup_s`` and that vanish at once on scale-in (routine tasks yield
within one chunk, far below the control period).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Protocol

from scheduler.forecast import DailyProfile
from scheduler.scaling import ScalingConfig, ScalingObservation, ScalingPolicy
from scheduler.scaling_baselines import CeleryStockRule, HpaRule

SCALERS = ("policy", "celery", "hpa")


class Scaler(Protocol):
    def desired_slots(self, obs: ScalingObservation) -> int: ...


def make_scaler(
    kind: str,
    config: ScalingConfig,
    min_slots: int,
    max_slots: int,
    readings_per_task: int,
    profile: DailyProfile | None = None,
) -> Scaler:
    """The scaler named ``kind`` for one region's pool, bounded by [min_slots, max_slots]."""
    if kind == "policy":
        bounded = replace(config, min_slots=min_slots, max_slots=max_slots)
        return ScalingPolicy(bounded, profile=profile)
    if kind == "celery":
        return CeleryStockRule(min_slots, max_slots, readings_per_task=readings_per_task)
    if kind == "hpa":
        return HpaRule(min_slots, max_slots)
    raise ValueError(f"unknown scaler {kind!r}; known: {', '.join(SCALERS)}")


class Pool:
    """Slots of one region's data-processing pool."""

    def __init__(self, scaler: Scaler, initial_slots: int, slot_startup_s: float) -> None:
        self.scaler = scaler
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
