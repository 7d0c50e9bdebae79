"""Load prediction: a short-horizon trend forecaster and a learned daily curve.

Both are fed arrival rates (readings per second) on whatever clock the caller
passes in; samples may arrive at irregular intervals.
"""

from __future__ import annotations

import math
import statistics

from scheduler.errors import ConfigError

#: Seconds in a day: the period of the seasonal profile unless told otherwise.
DAY_S = 86_400.0


def _check_weight(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], got {value}")


class HoltForecaster:
    """Holt's linear trend (level + slope) on irregularly spaced samples.

    ``alpha`` and ``beta`` are the smoothing weights per ``interval_s`` of
    elapsed time, not per sample: a sample after a 5 s gap moves the level as
    much as five 1 s samples would, so the forecast does not depend on how
    often the caller happens to sample.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.3,
        interval_s: float = 1.0,
        error_weight: float = 0.05,
    ) -> None:
        _check_weight("alpha", alpha)
        _check_weight("beta", beta)
        _check_weight("error_weight", error_weight)
        if interval_s <= 0:
            raise ConfigError(f"interval_s must be positive, got {interval_s}")
        self.alpha = alpha
        self.beta = beta
        self.interval_s = interval_s
        #: Weight per ``interval_s`` of the running mean of squared forecast errors.
        self.error_weight = error_weight
        self._last_ts: float | None = None
        self._level_rps = 0.0
        self._trend_rps_per_s = 0.0
        self._sq_relative_error: float | None = None

    @property
    def level_rps(self) -> float:
        return self._level_rps

    @property
    def trend_rps_per_s(self) -> float:
        return self._trend_rps_per_s

    @property
    def relative_error(self) -> float:
        """RMS error of the forecast one sample ahead, as a fraction of the rate.

        How far the forecast can be trusted: about the noise of a steady load,
        large just after a step. Infinite until a sample could be checked
        against a forecast.
        """
        if self._sq_relative_error is None:
            return math.inf
        return math.sqrt(self._sq_relative_error)

    def _weight(self, base: float, dt_s: float) -> float:
        return 1.0 - math.pow(1.0 - base, dt_s / self.interval_s)

    def update(self, now_ts: float, rate_rps: float) -> None:
        """Fold in the arrival rate measured at ``now_ts``."""
        if not math.isfinite(rate_rps):
            return
        if self._last_ts is None:
            self._last_ts = now_ts
            self._level_rps = rate_rps
            return
        dt_s = now_ts - self._last_ts
        if dt_s <= 0:
            # A second reading for the same instant (or a late one): refine the
            # level, but a zero time step says nothing about the slope.
            self._level_rps += self.alpha * (rate_rps - self._level_rps)
            return
        a = self._weight(self.alpha, dt_s)
        b = self._weight(self.beta, dt_s)
        projected = self._level_rps + self._trend_rps_per_s * dt_s
        self._fold_error(rate_rps, max(0.0, projected), dt_s)
        level = a * rate_rps + (1.0 - a) * projected
        slope = (level - self._level_rps) / dt_s
        self._trend_rps_per_s = b * slope + (1.0 - b) * self._trend_rps_per_s
        self._level_rps = level
        self._last_ts = now_ts

    def _fold_error(self, rate_rps: float, predicted_rps: float, dt_s: float) -> None:
        scale = max(rate_rps, predicted_rps)
        relative = (rate_rps - predicted_rps) / scale if scale > 0 else 0.0
        old = self._sq_relative_error
        w = self._weight(self.error_weight, dt_s)
        self._sq_relative_error = relative**2 if old is None else w * relative**2 + (1 - w) * old

    def predict(self, horizon_s: float) -> float:
        """Expected arrival rate ``horizon_s`` after the last sample; 0 before any sample."""
        if self._last_ts is None:
            return 0.0
        return max(0.0, self._level_rps + self._trend_rps_per_s * max(0.0, horizon_s))


class DailyProfile:
    """A learned seasonal curve: the typical arrival rate at each time of day.

    Each ``bucket_s`` slice of the period keeps the median rate seen in it
    (a median, so a short unpredictable spike does not teach tomorrow's curve
    to expect it) and blends successive periods with weight ``day_weight``.
    """

    def __init__(
        self, bucket_s: float = 300.0, period_s: float = DAY_S, day_weight: float = 0.5
    ) -> None:
        if bucket_s <= 0 or period_s <= 0 or bucket_s > period_s:
            raise ConfigError(f"need 0 < bucket_s <= period_s, got {bucket_s}, {period_s}")
        _check_weight("day_weight", day_weight)
        self.bucket_s = bucket_s
        self.period_s = period_s
        self.day_weight = day_weight
        self.n_buckets = max(1, round(period_s / bucket_s))
        self._learned_rps: list[float | None] = [None] * self.n_buckets
        self._open_slot: int | None = None
        self._open_samples: list[float] = []

    def _slot(self, ts: float) -> int:
        """The absolute bucket number (counts periods too, so a new day is a new slot)."""
        return math.floor(ts / self.bucket_s)

    def _close_open_bucket(self) -> None:
        if self._open_slot is None or not self._open_samples:
            return
        index = self._open_slot % self.n_buckets
        median = statistics.median(self._open_samples)
        old = self._learned_rps[index]
        self._learned_rps[index] = (
            median if old is None else self.day_weight * median + (1 - self.day_weight) * old
        )
        self._open_samples = []

    def observe(self, now_ts: float, rate_rps: float) -> None:
        """Record the arrival rate measured at ``now_ts``."""
        if not math.isfinite(rate_rps):
            return
        slot = self._slot(now_ts)
        if slot != self._open_slot:
            self._close_open_bucket()
            self._open_slot = slot
        self._open_samples.append(rate_rps)

    def learned_buckets(self) -> int:
        return sum(v is not None for v in self._learned_rps)

    def expected(self, ts: float) -> float | None:
        """The typical rate at ``ts``'s time of day; None while that part is not learned.

        Interpolates between bucket centres so a look-ahead sees a ramp coming
        rather than a step at the bucket edge.
        """
        position = ts / self.bucket_s - 0.5
        lower = math.floor(position)
        frac = position - lower
        here = self._learned_rps[lower % self.n_buckets]
        there = self._learned_rps[(lower + 1) % self.n_buckets]
        if here is None and there is None:
            return None
        if here is None:
            return there
        if there is None:
            return here
        return (1.0 - frac) * here + frac * there
