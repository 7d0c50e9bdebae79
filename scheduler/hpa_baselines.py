"""Kubernetes baselines to compare the policy against: an HPA on CPU, and KEDA driving one.

Same interface as ``scheduler.scaling_baselines``: ``desired_slots(obs) -> int`` and
``settings()``. Each follows the controller's documented defaults (sync period,
tolerance, scale-down stabilization, scale-up rate limits), as its users run it.
"""

from __future__ import annotations

import math
from collections import deque

from scheduler.errors import ConfigError
from scheduler.scaling import ScalingObservation
from scheduler.scaling_baselines import check_bounds

#: KEDA's default ``pollingInterval``: how often the scaler reads the metric.
KEDA_POLLING_S = 30.0


class HpaRule:
    """A Kubernetes HorizontalPodAutoscaler on CPU (busy slots), simulated.

    - Every ``period_s`` (the controller's sync period): the metric is
      ``busy / current`` and the recommendation ``ceil(current × metric ÷
      target)``, skipped when the ratio is within the tolerance of 1.
    - CPU use cannot pass 100 %, so at a target near 1 the default 10 %
      tolerance would never let it grow; ``scale_up_tolerance`` is the
      per-HPA ``behavior.scaleUp.tolerance`` (Kubernetes 1.33+, alpha feature gate
      HPAConfigurableTolerance) a user sets then.
    - Scale-down stabilization: it shrinks only to the largest recommendation
      of the last ``scale_down_window_s``; scale-up has no window by default.
    - Default scale-up rate limit (autoscaling/v2 ``behavior`` defaults): per
      period, at most +100 % or +4 pods, whichever is more.
    - Between sync periods the size does not change.
    """

    def __init__(
        self,
        min_slots: int,
        max_slots: int,
        period_s: float = 15.0,
        target_utilization: float = 0.8,
        scale_down_window_s: float = 300.0,
        tolerance: float = 0.1,
        scale_up_percent: float = 100.0,
        scale_up_pods: int = 4,
        scale_up_tolerance: float | None = None,
    ) -> None:
        check_bounds(min_slots, max_slots)
        if period_s <= 0 or not 0 < target_utilization <= 1 or tolerance < 0:
            raise ConfigError("need period_s > 0, 0 < target_utilization <= 1, tolerance >= 0")
        if scale_up_tolerance is not None and scale_up_tolerance < 0:
            raise ConfigError(f"scale_up_tolerance cannot be negative, got {scale_up_tolerance}")
        self.min_slots = min_slots
        self.max_slots = max_slots
        self.period_s = period_s
        self.target_utilization = target_utilization
        self.scale_down_window_s = scale_down_window_s
        self.tolerance = tolerance
        self.scale_up_tolerance = tolerance if scale_up_tolerance is None else scale_up_tolerance
        self.scale_up_percent = scale_up_percent
        self.scale_up_pods = scale_up_pods
        self._next_sync_ts: float | None = None
        self._recommendations: deque[tuple[float, int]] = deque()
        self._applied: int | None = None

    def settings(self) -> str:
        return (
            f"CPU target {self.target_utilization:.0%}, sync {self.period_s:g} s, tolerance "
            f"up {self.scale_up_tolerance:g} / down {self.tolerance:g}, "
            f"scale-down window {self.scale_down_window_s:g} s, "
            f"up max(+{self.scale_up_percent:g} %, +{self.scale_up_pods})"
        )

    def _within_tolerance(self, ratio: float) -> bool:
        allowed = self.scale_up_tolerance if ratio > 1.0 else self.tolerance
        return abs(ratio - 1.0) <= allowed

    def recommend(self, obs: ScalingObservation) -> int:
        """One sync's raw recommendation, before stabilization and rate limits."""
        current = obs.current_slots
        if current <= 0:
            return max(self.min_slots, 1)
        metric = obs.busy_slots / current
        ratio = metric / self.target_utilization
        if self._within_tolerance(ratio):
            return current
        return math.ceil(current * ratio)

    def desired_slots(self, obs: ScalingObservation) -> int:
        if self._next_sync_ts is not None and obs.now_ts < self._next_sync_ts:
            return self._applied if self._applied is not None else obs.current_slots
        self._next_sync_ts = obs.now_ts + self.period_s
        current = obs.current_slots
        if not self._recommendations:
            # As the controller does on its first look at a target: the
            # current size counts as a recommendation made now.
            self._recommendations.append((obs.now_ts, current))
        recommendation = min(self.max_slots, max(self.min_slots, self.recommend(obs)))
        self._recommendations.append((obs.now_ts, recommendation))
        while self._recommendations[0][0] < obs.now_ts - self.scale_down_window_s:
            self._recommendations.popleft()
        # The controller's stabilization: up to this sync's recommendation at
        # once (no up-scale window), down only to the window's largest one.
        down_to = max(r for _, r in self._recommendations)
        applied = current
        if recommendation > current:
            limit = max(
                math.floor(current * (1 + self.scale_up_percent / 100)),
                current + self.scale_up_pods,
            )
            applied = min(recommendation, limit)
        elif down_to < current:
            applied = down_to
        self._applied = min(self.max_slots, max(self.min_slots, applied))
        return self._applied


class KedaListLengthRule(HpaRule):
    """KEDA's Redis ``listLength`` trigger with the HPA it drives, simulated.

    - KEDA reads the list length every ``polling_s`` (``pollingInterval``,
      with ``useCachedMetrics``) and serves that value to the HPA as an
      ``AverageValue`` external metric with target ``list_length`` per replica.
    - The HPA (every ``period_s``, default behaviour: no up-scale window,
      +100 % or +4 pods per period, 300 s scale-down stabilization, 10 %
      tolerance) recommends ``ceil(tasks ÷ list_length)``, skipped when
      ``tasks ÷ (current × list_length)`` is within the tolerance of 1.
    - A region's queues are summed into one length (one trigger per queue
      would take the largest: never more than the sum). ``queue_depth``
      counts readings; ``readings_per_task`` turns it into list entries.

    At steady state about ``list_length`` tasks wait per replica, so its
    queueing delay is ``list_length`` batches of one slot's work: choose
    ``list_length`` from the delay wanted (``list_length_for_delay``).
    """

    def __init__(
        self,
        min_slots: int,
        max_slots: int,
        list_length: int,
        readings_per_task: int = 1,
        polling_s: float = KEDA_POLLING_S,
        period_s: float = 15.0,
        scale_down_window_s: float = 300.0,
    ) -> None:
        super().__init__(
            min_slots, max_slots, period_s=period_s, scale_down_window_s=scale_down_window_s
        )
        if list_length < 1 or readings_per_task < 1 or polling_s <= 0:
            raise ConfigError(
                f"need list_length >= 1, readings_per_task >= 1 and polling_s > 0, got "
                f"{list_length}, {readings_per_task}, {polling_s}"
            )
        self.list_length = list_length
        self.readings_per_task = readings_per_task
        self.polling_s = polling_s
        self._next_poll_ts: float | None = None
        self._polled_tasks = 0

    def settings(self) -> str:
        return (
            f"listLength {self.list_length} per replica, polling {self.polling_s:g} s; HPA sync "
            f"{self.period_s:g} s, tolerance {self.tolerance:g}, scale-down window "
            f"{self.scale_down_window_s:g} s, up max(+{self.scale_up_percent:g} %, "
            f"+{self.scale_up_pods})"
        )

    def polled_tasks(self, obs: ScalingObservation) -> int:
        """The list length KEDA last read, refreshed once per polling interval."""
        if self._next_poll_ts is None or obs.now_ts >= self._next_poll_ts:
            self._next_poll_ts = obs.now_ts + self.polling_s
            self._polled_tasks = math.ceil(obs.queue_depth / self.readings_per_task)
        return self._polled_tasks

    def recommend(self, obs: ScalingObservation) -> int:
        tasks = self.polled_tasks(obs)
        current = obs.current_slots
        if current > 0 and self._within_tolerance(tasks / (current * self.list_length)):
            return current
        return math.ceil(tasks / self.list_length)


def list_length_for_delay(
    delay_s: float, readings_per_task: int, service_rps_per_slot: float
) -> int:
    """KEDA's ``listLength`` whose steady queue (that many tasks per replica) waits ``delay_s``."""
    if delay_s < 0 or readings_per_task < 1 or service_rps_per_slot <= 0:
        raise ConfigError("need delay_s >= 0, readings_per_task >= 1, service_rps_per_slot > 0")
    return max(1, round(delay_s * service_rps_per_slot / readings_per_task))
