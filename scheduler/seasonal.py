"""Seasonal profile of one (device, metric): hour-of-day bins and day-of-week offsets.

The profile is 31 floats inside the detector's state vector: 24 hourly values,
linearly interpolated between bin centres so a smooth daily cycle is predicted
smoothly, and 7 daily offsets applied as steps, as a weekend starts at midnight.
Both learn online from ``value - slow mean`` with time-based rates (``dt / tau``),
so a 1 s sensor and an hourly meter remember the same number of days.
Times are UTC epoch seconds; a device elsewhere simply learns a shifted profile.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from scheduler.detector_state import PROFILE_DAYS, PROFILE_HOURS
from scheduler.jit import compiled, minimum

F64 = npt.NDArray[np.float64]
#: Where a reading falls in the profile (``position``): two hour bins, the second's
#: weight, a day.
Position = tuple[int, int, float, int]

_DAY_S = 86_400.0
_HOUR_S = 3_600.0
#: 1970-01-01 was a Thursday; shift so that offset 0 is Monday.
_EPOCH_WEEKDAY = 3
#: No single reading moves a bin more than half-way, however long the gap before it.
_MAX_RATE = 0.5


@compiled
def position(ts: float) -> Position:
    """Where a reading at ``ts`` falls in the profile."""
    hours = (ts % _DAY_S) / _HOUR_S - 0.5
    below = math.floor(hours)
    hour_a = int(below % PROFILE_HOURS)
    day = int((math.floor(ts / _DAY_S) + _EPOCH_WEEKDAY) % PROFILE_DAYS)
    return hour_a, (hour_a + 1) % PROFILE_HOURS, hours - below, day


@compiled
def daily(st: F64, base: int, at: Position) -> float:
    hour_a, hour_b, weight_next, _ = at
    a = st[base + hour_a]
    return float(a + weight_next * (st[base + hour_b] - a))


@compiled
def week(st: F64, base: int, at: Position) -> float:
    return float(st[base + PROFILE_HOURS + at[3]])


@compiled
def learn(
    st: F64,
    base: int,
    at: Position,
    offset: float,
    dt_s: float,
    day_tau_s: float,
    week_tau_s: float,
) -> None:
    """Move the profile in ``st`` (one state vector) towards ``offset`` (value minus slow mean).

    ``dt_s`` is the time the reading stands for; 0 leaves the profile alone.
    """
    hour_a, hour_b, weight_next, day = at
    now_daily = daily(st, base, at)
    now_week = week(st, base, at)
    rate_h = minimum(_MAX_RATE, PROFILE_HOURS * dt_s / day_tau_s)
    rate_d = minimum(_MAX_RATE, PROFILE_DAYS * dt_s / week_tau_s)
    err_h = rate_h * (offset - now_week - now_daily)
    st[base + hour_a] += (1.0 - weight_next) * err_h
    st[base + hour_b] += weight_next * err_h
    st[base + PROFILE_HOURS + day] = now_week + rate_d * (offset - now_daily - now_week)
