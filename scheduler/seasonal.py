"""Seasonal profile of one (device, metric): hour-of-day bins and day-of-week offsets.

The profile is 31 floats inside the detector's state vector: 24 hourly values,
linearly interpolated between bin centres so a smooth daily cycle is predicted
smoothly, and 7 daily offsets applied as steps, as a weekend starts at midnight.
Both learn online from ``value - slow mean`` with time-based rates (``dt / tau``),
so a 1 s sensor and an hourly meter remember the same number of days.
Times are UTC epoch seconds; a device elsewhere simply learns a shifted profile.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
IDX = npt.NDArray[np.intp]

HOURS = 24
DAYS = 7
PROFILE_FIELDS: tuple[str, ...] = (
    *(f"hour_{h:02d}" for h in range(HOURS)),
    *(f"weekday_{d}" for d in range(DAYS)),
)
_DAY_S = 86_400.0
_HOUR_S = 3_600.0
#: 1970-01-01 was a Thursday; shift so that offset 0 is Monday.
_EPOCH_WEEKDAY = 3
#: No single reading moves a bin more than half-way, however long the gap before it.
_MAX_RATE = 0.5


class Position:
    """Where readings at ``ts`` fall in the profile: two hour bins with weights, one day."""

    def __init__(self, ts: F64) -> None:
        hours = np.mod(ts, _DAY_S) / _HOUR_S - 0.5
        below = np.floor(hours)
        self.weight_next = hours - below
        self.hour_a: IDX = np.mod(below, HOURS).astype(np.intp)
        self.hour_b: IDX = np.mod(self.hour_a + 1, HOURS)
        self.day: IDX = np.mod(np.floor(ts / _DAY_S) + _EPOCH_WEEKDAY, DAYS).astype(np.intp)
        self.rows: IDX = np.arange(ts.size)

    def daily(self, st: F64, base: int) -> F64:
        a = st[self.rows, base + self.hour_a]
        b = st[self.rows, base + self.hour_b]
        return a + self.weight_next * (b - a)

    def week(self, st: F64, base: int) -> F64:
        return st[self.rows, base + HOURS + self.day]

    def value(self, st: F64, base: int) -> F64:
        return self.daily(st, base) + self.week(st, base)

    def learn(
        self, st: F64, base: int, offset: F64, dt_s: F64, day_tau_s: float, week_tau_s: float
    ) -> None:
        """Move the profile towards ``offset`` (value minus slow mean), in place.

        ``dt_s`` is the time each reading stands for; 0 leaves a row's profile alone.
        """
        daily = self.daily(st, base)
        weekly = self.week(st, base)
        rate_h = np.minimum(_MAX_RATE, HOURS * dt_s / day_tau_s)
        rate_d = np.minimum(_MAX_RATE, DAYS * dt_s / week_tau_s)
        err_h = rate_h * (offset - weekly - daily)
        st[self.rows, base + self.hour_a] += (1.0 - self.weight_next) * err_h
        st[self.rows, base + self.hour_b] += self.weight_next * err_h
        st[self.rows, base + HOURS + self.day] = weekly + rate_d * (offset - daily - weekly)
