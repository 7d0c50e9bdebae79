"""Screening's cost per held reading over routine processing's, measured at run time.

The held-screening budget (``scheduler.held_screening``) gives screening of held
readings a share of a region's non-premium slot time; how many readings that share
buys depends on what a held reading costs to screen against what an admitted one costs
to process. That ratio depends on the fleet: held copies coalesce a device's readings so
they share one fetch and store of its detector state, which is most of screening's
cost, and a fleet whose devices report rarely gets little of that sharing
(``bench/screen_cost.py``: 2x routine's cost with one reading per device per copy).
So the workers record the service each spends (task-microseconds and readings, as
cumulative counters), and the producer's admission gate folds them into this meter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Counters the workers add to (the deployment's counters hash): task-microseconds spent
#: screening held copies, and the readings they screened.
SCREEN_HELD_US = "service_us:screen_held"
SCREEN_HELD_READINGS = "service_readings:screen_held"
#: Prefix every service counter shares: the gate reads only these.
SERVICE_PREFIX = "service_"
#: Task-seconds each side needs before a ratio is taken from them (a few tasks: one
#: routine task of 5,000 readings takes 20-150 ms here).
EVIDENCE_S = 0.5
#: Weight of a new measurement against the running ratio.
SMOOTHING = 0.5
#: The ratio is kept within these: a few odd tasks (a cold detector state, a stalled
#: slot) must not zero the budget or unbound it.
MIN_RATIO, MAX_RATIO = 0.25, 4.0


def routine_us(tier: str) -> str:
    """The counter of task-microseconds routine tasks of ``tier`` spent."""
    return f"service_us:routine:{tier}"


def routine_readings(tier: str) -> str:
    """The counter of readings routine tasks of ``tier`` applied."""
    return f"service_readings:routine:{tier}"


@dataclass
class ScreenCostMeter:
    """Screening's cost per held reading over routine's for ``tiers`` (the non-premium
    tiers, whose slot time held screening shares), from cumulative service counters.

    Each side's cost per reading is measured on its own, once it has ``EVIDENCE_S`` of
    task time since its last measurement, and smoothed: a run that screens nothing while
    held for minutes still has a fresh routine cost when held copies start."""

    tiers: tuple[str, ...]
    #: Microseconds per reading: held screening's, routine's (None until measured).
    screen_us_per_reading: float | None = None
    routine_us_per_reading: float | None = None
    _last: tuple[int, int, int, int] | None = None
    _acc: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    @property
    def ratio(self) -> float | None:
        """Screening's cost per held reading over routine's; None until both measured."""
        if self.screen_us_per_reading is None or not self.routine_us_per_reading:
            return None
        return min(
            MAX_RATIO, max(MIN_RATIO, self.screen_us_per_reading / self.routine_us_per_reading)
        )

    def update(self, counters: Mapping[str, int]) -> float | None:
        """Fold in the cumulative service counters; returns the ratio (None before)."""
        now = (
            counters.get(SCREEN_HELD_US, 0),
            counters.get(SCREEN_HELD_READINGS, 0),
            sum(counters.get(routine_us(t), 0) for t in self.tiers),
            sum(counters.get(routine_readings(t), 0) for t in self.tiers),
        )
        last, self._last = self._last, now
        if last is None:
            return self.ratio
        for i, (a, b) in enumerate(zip(now, last, strict=True)):
            # max(0, …): counters reset (a new deployment) read as no progress.
            self._acc[i] += max(0, a - b)
        self.screen_us_per_reading = self._fold(0, self.screen_us_per_reading)
        self.routine_us_per_reading = self._fold(2, self.routine_us_per_reading)
        return self.ratio

    def _fold(self, at: int, cost: float | None) -> float | None:
        us, readings = self._acc[at], self._acc[at + 1]
        if us < EVIDENCE_S * 1e6 or readings <= 0:
            return cost
        self._acc[at] = self._acc[at + 1] = 0
        measured = us / readings
        return measured if cost is None else cost + SMOOTHING * (measured - cost)
