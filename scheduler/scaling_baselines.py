"""Baseline scaling rules to compare the policy against, same interface.

Here: Celery's stock autoscaler and the predictive floor over any rule; Kubernetes'
HPA and KEDA on it are in ``scheduler.hpa_baselines``.

Each reads a :class:`ScalingObservation` and answers ``desired_slots(obs) -> int``
so the simulator can drive it exactly as it drives :class:`ScalingPolicy`, and
``settings()`` says how it is configured, for the report to print beside it.
Each is set up as its users would set it up, not as a straw man.
"""

from __future__ import annotations

import math
from typing import Protocol

from scheduler.errors import ConfigError
from scheduler.forecast import DailyProfile
from scheduler.scaling import ScalingObservation

#: Celery's ``AUTOSCALE_KEEPALIVE``: seconds without a new task before it shrinks.
CELERY_KEEPALIVE_S = 30.0


class Scaler(Protocol):
    def desired_slots(self, obs: ScalingObservation) -> int: ...

    def settings(self) -> str: ...


def check_bounds(min_slots: int, max_slots: int) -> None:
    """Raises ConfigError unless 0 <= min_slots <= max_slots."""
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
        check_bounds(min_slots, max_slots)
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

    def settings(self) -> str:
        return (
            f"--autoscale={self.max_slots},{self.min_slots}, keepalive {self.keepalive_s:g} s, "
            f"prefetch x{self.prefetch_multiplier}"
        )

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


class PredictiveFloor:
    """A reactive rule plus a predictive step: never below what yesterday's curve expects.

    As AWS predictive scaling (raises the minimum capacity ahead of the
    forecast) or a KEDA cron trigger (the HPA takes the larger of its
    triggers) would add it: the floor is the learned daily curve's rate over
    the next ``lead_s`` at ``target_utilization``, and the inner rule decides
    everything above it. The curve keeps learning from what is observed.
    """

    def __init__(
        self,
        inner: Scaler,
        profile: DailyProfile,
        min_slots: int,
        max_slots: int,
        target_utilization: float,
        lead_s: float = 300.0,
    ) -> None:
        check_bounds(min_slots, max_slots)
        if not 0 < target_utilization <= 1 or lead_s < 0:
            raise ConfigError("need 0 < target_utilization <= 1 and lead_s >= 0")
        self.inner = inner
        self.profile = profile
        self.min_slots = min_slots
        self.max_slots = max_slots
        self.target_utilization = target_utilization
        self.lead_s = lead_s

    def settings(self) -> str:
        return (
            f"{self.inner.settings()}; + floor from yesterday's curve "
            f"{self.lead_s:g} s ahead at {self.target_utilization:.0%}"
        )

    def floor_slots(self, obs: ScalingObservation) -> int:
        """Slots the learned curve asks for over the coming ``lead_s``; 0 while unlearned."""
        if obs.service_rps_per_slot <= 0:
            return 0
        expected = [self.profile.expected(obs.now_ts + dt) for dt in (0.0, self.lead_s)]
        known = [e for e in expected if e is not None]
        if not known:
            return 0
        return math.ceil(max(known) / (obs.service_rps_per_slot * self.target_utilization))

    def desired_slots(self, obs: ScalingObservation) -> int:
        floor = self.floor_slots(obs)
        self.profile.observe(obs.now_ts, obs.arrival_rps)
        wanted = max(self.inner.desired_slots(obs), floor)
        return min(self.max_slots, max(self.min_slots, wanted))
