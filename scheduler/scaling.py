"""The elastic scaling policy: how many worker slots a region's pool should have.

Demand is sized from what is arriving (measured, trend-forecast and, once
learned, the daily curve looked ahead) plus what is already waiting, so the
pool grows on the very observation that shows a step and sheds capacity only
after a stabilization window. Pure: the clock comes in with each observation.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from scheduler.errors import ConfigError
from scheduler.forecast import DailyProfile, HoltForecaster

#: Fraction of a slot forgiven when rounding demand up: a forecast a hair above
#: an exact fit should not buy a whole idle slot (target_utilization has headroom).
SLOT_ROUNDING_TOLERANCE = 0.02


@dataclass(frozen=True)
class ScalingConfig:
    """Targets and limits for one pool; every time is in seconds."""

    #: A backlog should be cleared within this long by the capacity added for it.
    drain_target_s: float = 2.0
    #: Never fewer slots than this (a class's guarantee).
    min_slots: int = 1
    #: Never more slots than this (the region budget, the cloud resource limit).
    max_slots: int = 64
    #: Scale down only to the largest demand seen within this window.
    scale_down_window_s: float = 60.0
    #: How far ahead the trend forecast and the daily curve are read.
    forecast_horizon_s: float = 10.0
    #: Busy fraction aimed at; 0.97 leaves 3 % headroom (the target is < 5 % idle).
    target_utilization: float = 0.97
    #: Time a new slot takes to become useful; the backlog keeps growing meanwhile.
    slot_startup_s: float = 1.0
    #: Holt smoothing weights per second for the arrival forecast.
    forecast_alpha: float = 0.5
    forecast_beta: float = 0.3

    def __post_init__(self) -> None:
        if not 0 <= self.min_slots <= self.max_slots:
            raise ConfigError(f"need 0 <= min_slots <= max_slots, got {self}")
        if not 0 < self.target_utilization <= 1:
            raise ConfigError(f"target_utilization must be in (0, 1], got {self}")
        if self.drain_target_s <= 0:
            raise ConfigError(f"drain_target_s must be positive, got {self}")
        if min(self.scale_down_window_s, self.forecast_horizon_s, self.slot_startup_s) < 0:
            raise ConfigError(f"windows and horizons cannot be negative, got {self}")


@dataclass(frozen=True)
class ScalingObservation:
    """What the pool looked like at ``now_ts`` (epoch seconds)."""

    now_ts: float
    #: Readings waiting, summed over each queue's priority lists.
    queue_depth: int
    #: Readings arriving per second, measured over the last interval.
    arrival_rps: float
    #: Readings one busy slot processes per second, measured.
    service_rps_per_slot: float
    busy_slots: int
    current_slots: int


@dataclass(frozen=True)
class ScalingDecision:
    """Why ``desired_slots`` answered what it did, for reports and logs."""

    now_ts: float
    desired_slots: int
    #: Slots this observation alone asks for, before the window and the clamp.
    demand_slots: int
    measured_rps: float
    forecast_rps: float
    #: Measured rate plus the rise the daily curve expects ahead; None until learned.
    profile_rps: float | None
    #: The arrival rate the pool was sized for (the largest of the three).
    sizing_rps: float
    arrival_slots: float
    backlog_slots: float
    reason: str


class ScalingPolicy:
    """Queue-depth and forecast driven pool sizing; one instance per pool."""

    def __init__(self, config: ScalingConfig, profile: DailyProfile | None = None) -> None:
        self.config = config
        self.forecaster = HoltForecaster(config.forecast_alpha, config.forecast_beta)
        #: The daily curve, learned from every observation and read ahead to
        #: pre-scale before predictable peaks; pass one trained on past days to
        #: have it useful from the start, or None to switch look-ahead off.
        self.profile = profile
        self._recent: deque[tuple[float, int]] = deque()
        self.last_decision: ScalingDecision | None = None

    def _sizing_rates(self, obs: ScalingObservation) -> tuple[float, float | None]:
        cfg = self.config
        forecast_rps = self.forecaster.predict(cfg.forecast_horizon_s)
        profile_rps: float | None = None
        if self.profile is not None:
            now_rps = self.profile.expected(obs.now_ts)
            ahead_rps = self.profile.expected(
                obs.now_ts + cfg.forecast_horizon_s + cfg.slot_startup_s
            )
            if now_rps is not None and ahead_rps is not None:
                # Only the curve's expected *rise* is added to today's measured
                # rate: a quieter-than-usual day is not sized to the usual level.
                profile_rps = obs.arrival_rps + max(0.0, ahead_rps - now_rps)
        return forecast_rps, profile_rps

    def _demand(self, obs: ScalingObservation) -> ScalingDecision:
        cfg = self.config
        forecast_rps, profile_rps = self._sizing_rates(obs)
        sizing_rps = max(obs.arrival_rps, forecast_rps, profile_rps or 0.0)
        per_slot = obs.service_rps_per_slot
        if per_slot <= 0:
            held = obs.current_slots
            return ScalingDecision(
                obs.now_ts, held, held, obs.arrival_rps, forecast_rps, profile_rps,
                sizing_rps, 0.0, 0.0, "no service-rate measurement yet: holding",
            )  # fmt: skip
        arrival_slots = sizing_rps / (per_slot * cfg.target_utilization)
        # While new slots start up, the current pool's deficit adds to the backlog.
        deficit_rps = max(0.0, obs.arrival_rps - obs.current_slots * per_slot)
        backlog = obs.queue_depth + deficit_rps * cfg.slot_startup_s
        backlog_slots = backlog / (per_slot * cfg.drain_target_s)
        demand = max(0, math.ceil(arrival_slots + backlog_slots - SLOT_ROUNDING_TOLERANCE))
        return ScalingDecision(
            obs.now_ts, demand, demand, obs.arrival_rps, forecast_rps, profile_rps,
            sizing_rps, arrival_slots, backlog_slots, "",
        )  # fmt: skip

    def desired_slots(self, obs: ScalingObservation) -> int:
        """The pool size to aim for now; also records ``last_decision``."""
        cfg = self.config
        self.forecaster.update(obs.now_ts, obs.arrival_rps)
        raw = self._demand(obs)
        if self.profile is not None:
            self.profile.observe(obs.now_ts, obs.arrival_rps)
        self._recent.append((obs.now_ts, raw.demand_slots))
        while self._recent and self._recent[0][0] < obs.now_ts - cfg.scale_down_window_s:
            self._recent.popleft()
        windowed = max(slots for _, slots in self._recent)
        desired = min(cfg.max_slots, max(cfg.min_slots, windowed))
        if raw.reason:
            reason = raw.reason
        elif desired == cfg.max_slots and windowed > cfg.max_slots:
            reason = f"demand {windowed} capped at the region budget {cfg.max_slots}"
        elif desired == cfg.min_slots and windowed < cfg.min_slots:
            reason = f"demand {windowed} raised to the guaranteed minimum {cfg.min_slots}"
        elif windowed > raw.demand_slots:
            reason = (
                f"demand {raw.demand_slots}, holding {windowed} "
                f"(largest within {cfg.scale_down_window_s:g} s)"
            )
        elif desired > obs.current_slots:
            reason = f"scale up at once to demand {desired}"
        else:
            reason = f"demand {desired}"
        decision = ScalingDecision(
            raw.now_ts, desired, raw.demand_slots, raw.measured_rps, raw.forecast_rps,
            raw.profile_rps, raw.sizing_rps, raw.arrival_slots, raw.backlog_slots, reason,
        )  # fmt: skip
        self.last_decision = decision
        return desired
