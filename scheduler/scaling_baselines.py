"""Baseline scaling rules to compare the policy against, same interface.

Both read a :class:`ScalingObservation` and answer ``desired_slots(obs) -> int``
so the simulator can drive them exactly as it drives :class:`ScalingPolicy`.
"""

from __future__ import annotations

import math
from collections import deque

from scheduler.errors import ConfigError
from scheduler.scaling import ScalingObservation

#: Celery's ``AUTOSCALE_KEEPALIVE``: seconds without a new task before it shrinks.
CELERY_KEEPALIVE_S = 30.0


def _check_bounds(min_slots: int, max_slots: int) -> None:
    if not 0 <= min_slots <= max_slots:
        raise ConfigError(f"need 0 <= min_slots <= max_slots, got {min_slots}, {max_slots}")


class CeleryStockRule:
    """Celery 5.7's stock ``Autoscaler`` (celery/worker/autoscale.py), simulated.

    What it mimics, with the source it comes from:

    - It looks only at ``qty = len(state.reserved_requests)``: the tasks the
      worker itself holds (running plus prefetched), never the broker.
    - The worker cannot hold more than its prefetch limit, which under
      ``--autoscale`` is set from *max* concurrency (components.py:
      ``max_concurrency × prefetch_multiplier``; ``worker_disable_prefetch``
      caps it at max concurrency too), on top of what is already running.
    - Up: ``min(qty, max)`` when above the current pool, at once.
    - Down: to ``max(qty, min)``, all excess in one step, but only once
      ``keepalive_s`` has passed since the later of the last scale-up and the
      last task received. Under steady traffic a task arrives every moment, so
      it keeps the pool at its high-water mark until traffic stops entirely.

    ``queue_depth`` counts readings; ``readings_per_task`` turns it into tasks
    (a micro-batch is one task). A task counts as received in an observation
    when any were waiting or arriving.
    """

    def __init__(
        self,
        min_slots: int,
        max_slots: int,
        keepalive_s: float = CELERY_KEEPALIVE_S,
        prefetch_multiplier: int = 1,
        readings_per_task: int = 1,
    ) -> None:
        _check_bounds(min_slots, max_slots)
        if keepalive_s <= 0:
            raise ConfigError("cannot scale down too fast: keepalive_s must be positive")
        if prefetch_multiplier < 1 or readings_per_task < 1:
            raise ConfigError("prefetch_multiplier and readings_per_task must be >= 1")
        self.min_slots = min_slots
        self.max_slots = max_slots
        self.keepalive_s = keepalive_s
        self.prefetch_multiplier = prefetch_multiplier
        self.readings_per_task = readings_per_task
        self._last_scale_up_ts: float | None = None
        self._last_received_ts: float | None = None

    def reserved_requests(self, obs: ScalingObservation) -> int:
        """``qty``: tasks running in the worker plus those it has prefetched."""
        waiting_tasks = math.ceil(obs.queue_depth / self.readings_per_task)
        prefetched = min(waiting_tasks, self.max_slots * self.prefetch_multiplier)
        return obs.busy_slots + prefetched

    def desired_slots(self, obs: ScalingObservation) -> int:
        procs = obs.current_slots
        if obs.queue_depth > 0 or obs.arrival_rps > 0:
            self._last_received_ts = obs.now_ts
        qty = self.reserved_requests(obs)
        target = procs
        grow_to = min(qty, self.max_slots)
        shrink_to = max(qty, self.min_slots)
        if grow_to > procs:
            self._last_scale_up_ts = obs.now_ts
            target = grow_to
        elif shrink_to < procs:
            marks = [t for t in (self._last_scale_up_ts, self._last_received_ts) if t is not None]
            # Reserved requests include the running ones, so shrinking to
            # ``qty`` only ever removes idle processes, as billiard requires.
            if marks and obs.now_ts - max(marks) > self.keepalive_s:
                target = shrink_to
        # The pool starts at min and ``autoscale(max, min)`` re-bounds it at once.
        return min(max(target, self.min_slots), self.max_slots)


class HpaRule:
    """A Kubernetes HorizontalPodAutoscaler on slot utilization, simulated.

    - Every ``period_s`` (the controller's sync period): the metric is
      ``busy / current`` and the recommendation ``ceil(current × metric ÷
      target)``, skipped when the ratio is within ``tolerance`` of 1.
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
    ) -> None:
        _check_bounds(min_slots, max_slots)
        if period_s <= 0 or not 0 < target_utilization <= 1 or tolerance < 0:
            raise ConfigError("need period_s > 0, 0 < target_utilization <= 1, tolerance >= 0")
        self.min_slots = min_slots
        self.max_slots = max_slots
        self.period_s = period_s
        self.target_utilization = target_utilization
        self.scale_down_window_s = scale_down_window_s
        self.tolerance = tolerance
        self.scale_up_percent = scale_up_percent
        self.scale_up_pods = scale_up_pods
        self._next_sync_ts: float | None = None
        self._recommendations: deque[tuple[float, int]] = deque()
        self._applied: int | None = None

    def recommend(self, obs: ScalingObservation) -> int:
        """One sync's raw recommendation, before stabilization and rate limits."""
        current = obs.current_slots
        if current <= 0:
            return max(self.min_slots, 1)
        metric = obs.busy_slots / current
        ratio = metric / self.target_utilization
        if abs(ratio - 1.0) <= self.tolerance:
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
