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

#: Demand within this of a whole number of slots is that number (float noise).
_FLOAT_SLACK_SLOTS = 1e-6


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
    #: Busy fraction aimed at while the forecast is unsure (0.97 leaves 3 % headroom);
    #: a confident forecast narrows the headroom (see headroom_per_forecast_error).
    target_utilization: float = 0.97
    #: Time a new slot takes to become useful; the backlog keeps growing meanwhile.
    slot_startup_s: float = 1.0
    #: Holt smoothing weights per second for the arrival forecast. Gentler than
    #: the forecaster's own defaults: per-second arrival noise held for a whole
    #: window is idle capacity, and the measured rate already covers steps.
    forecast_alpha: float = 0.1
    forecast_beta: float = 0.02
    #: Headroom is this many RMS one-second forecast errors (relative), capped at
    #: 1 - target_utilization: a steady load with 1 % noise needs 1 %, not 3 %.
    headroom_per_forecast_error: float = 1.0
    #: Demand this far past a whole number of slots is rounded down, not up. At
    #: night a region needs 5–8 slots, so a whole slot for a fraction is 10 %
    #: idle; instead the fraction queues, last in queue order (standard work,
    #: whose budget is seconds; premium goes first), and the backlog term buys
    #: the extra slot once that queue is worth one, then lets it go when drained.
    fractional_slot_tolerance: float = 0.5
    #: A queue under this many seconds of one slot's work (0.1 s: about one
    #: 5,000-reading batch) counts as drained. Until then a slot bought for the
    #: backlog is kept, so the queue empties each cycle instead of hovering just
    #: under the buy threshold, and slots start (idle, paid for) less often.
    drained_backlog_s: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.min_slots <= self.max_slots:
            raise ConfigError(f"need 0 <= min_slots <= max_slots, got {self}")
        if not 0 < self.target_utilization <= 1:
            raise ConfigError(f"target_utilization must be in (0, 1], got {self}")
        if not 0 <= self.fractional_slot_tolerance < 1:
            raise ConfigError(f"fractional_slot_tolerance must be in [0, 1), got {self}")
        if min(self.headroom_per_forecast_error, self.drained_backlog_s) < 0:
            raise ConfigError(f"headroom and drained backlog cannot be negative, got {self}")
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
    #: Slots this observation asks for: measured or forecast arrivals plus backlog.
    demand_slots: int
    #: The same from the smoothed rate; the window holds these, so a one-second
    #: noise peak is served at once but does not keep slots for a whole window.
    settled_slots: int
    #: The largest settled demand within the stabilization window.
    held_slots: int
    measured_rps: float
    level_rps: float
    forecast_rps: float
    #: The rise the daily curve expects over the look-ahead; None until learned.
    profile_rise_rps: float | None
    backlog_slots: float
    reason: str
    #: Busy fraction aimed at for this decision: 1 minus the headroom the
    #: forecast's recent error asks for, never below target_utilization.
    utilization: float = 1.0


class ScalingPolicy:
    """Queue-depth and forecast driven pool sizing; one instance per pool.

    ``demand = arrival / (service_rps_per_slot × utilization)
    + backlog / (service_rps_per_slot × drain_target_s)``, where arrival is
    the largest of the measured rate, the trend forecast ``forecast_horizon_s``
    ahead and the rate plus the daily curve's expected rise; backlog is the
    queue plus what the current pool's deficit adds while new slots start;
    utilization is 1 minus a headroom sized to the forecast's recent error
    (at most ``1 - target_utilization``). Demand is rounded up to whole slots
    only past ``fractional_slot_tolerance``. Up at once to this demand; down
    only to the largest *settled* demand (the arrival part on the smoothed
    level: a drained queue needs no slots) of the last ``scale_down_window_s``.
    """

    def __init__(self, config: ScalingConfig, profile: DailyProfile | None = None) -> None:
        self.config = config
        self.forecaster = HoltForecaster(config.forecast_alpha, config.forecast_beta)
        #: The daily curve, learned from every observation and read ahead to
        #: pre-scale before predictable peaks; pass one trained on past days to
        #: have it useful from the start, or None to switch look-ahead off.
        self.profile = profile
        self._settled: deque[tuple[float, int]] = deque()
        self.last_decision: ScalingDecision | None = None

    def _profile_rise_rps(self, now_ts: float) -> float | None:
        if self.profile is None:
            return None
        cfg = self.config
        now_rps = self.profile.expected(now_ts)
        ahead_rps = self.profile.expected(now_ts + cfg.forecast_horizon_s + cfg.slot_startup_s)
        if now_rps is None or ahead_rps is None:
            return None
        # Only the curve's expected *rise* is used, added to today's rate: a
        # quieter-than-usual day is not sized to the usual level.
        return max(0.0, ahead_rps - now_rps)

    def _utilization(self) -> float:
        cfg = self.config
        headroom = cfg.headroom_per_forecast_error * self.forecaster.relative_error
        return max(cfg.target_utilization, 1.0 - headroom)

    def _slots(self, arrival_slots: float, backlog_slots: float, tolerance: float) -> int:
        return max(0, math.ceil(arrival_slots + backlog_slots - tolerance))

    def desired_slots(self, obs: ScalingObservation) -> int:
        """The pool size to aim for now; also records ``last_decision``."""
        cfg = self.config
        self.forecaster.update(obs.now_ts, obs.arrival_rps)
        level_rps = self.forecaster.level_rps
        forecast_rps = self.forecaster.predict(cfg.forecast_horizon_s)
        rise_rps = self._profile_rise_rps(obs.now_ts)
        if self.profile is not None:
            self.profile.observe(obs.now_ts, obs.arrival_rps)
        per_slot = obs.service_rps_per_slot
        backlog_slots = 0.0
        utilization = self._utilization()
        if per_slot > 0:
            # While new slots start up, the current pool's deficit adds to the backlog.
            deficit_rps = max(0.0, obs.arrival_rps - obs.current_slots * per_slot)
            backlog = obs.queue_depth + deficit_rps * cfg.slot_startup_s
            backlog_slots = backlog / (per_slot * cfg.drain_target_s)
            rise = rise_rps or 0.0
            per_busy_slot = per_slot * utilization
            arrival_slots = max(obs.arrival_rps + rise, forecast_rps) / per_busy_slot
            tolerance = cfg.fractional_slot_tolerance
            demand = self._slots(arrival_slots, backlog_slots, tolerance)
            if obs.queue_depth > per_slot * cfg.drained_backlog_s:
                # Still draining: keep the slots the whole demand needs, add none for it.
                whole = self._slots(arrival_slots, backlog_slots, _FLOAT_SLACK_SLOTS)
                demand = max(demand, min(obs.current_slots, whole))
            # The window holds arrivals only: a queue, once drained, needs no slots,
            # and holding its slot for a whole window is what rounding down saves.
            settled = self._slots(
                max(level_rps + rise, forecast_rps) / per_busy_slot, 0.0, tolerance
            )
        else:
            demand = settled = obs.current_slots
        self._settled.append((obs.now_ts, settled))
        while self._settled[0][0] < obs.now_ts - cfg.scale_down_window_s:
            self._settled.popleft()
        held = max(slots for _, slots in self._settled)
        wanted = max(demand, held)
        desired = min(cfg.max_slots, max(cfg.min_slots, wanted))
        if per_slot <= 0:
            reason = "no service-rate measurement yet: holding"
        elif wanted > cfg.max_slots:
            reason = f"demand {wanted} capped at the region budget {cfg.max_slots}"
        elif wanted < cfg.min_slots:
            reason = f"demand {wanted} raised to the guaranteed minimum {cfg.min_slots}"
        elif held > demand:
            reason = f"demand {demand}, holding {held} (within {cfg.scale_down_window_s:g} s)"
        elif desired > obs.current_slots:
            reason = f"scale up at once to demand {desired}"
        else:
            reason = f"demand {desired}"
        self.last_decision = ScalingDecision(
            obs.now_ts, desired, demand, settled, held, obs.arrival_rps, level_rps,
            forecast_rps, rise_rps, backlog_slots, reason, utilization,
        )  # fmt: skip
        return desired
