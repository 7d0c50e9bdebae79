"""A pool's measured service rate: tasks one busy slot finishes per second."""

from __future__ import annotations

#: A service rate is trusted over the prior after this many task-seconds of
#: timed work, or this many tasks (short tasks reach the count first).
SERVICE_EVIDENCE_SLOT_S = 0.5
SERVICE_EVIDENCE_TASKS = 50
#: Weight of a new service-rate measurement against the running estimate.
SERVICE_SMOOTHING = 0.5


class ServiceMeter:
    """Tasks one busy slot finishes per second: finished tasks over task-seconds run."""

    def __init__(self, prior_rps: float) -> None:
        self.rate_rps = prior_rps
        self.measured = False
        self._last: tuple[int, float] | None = None
        self._done = 0
        self._busy_slot_s = 0.0

    def update(self, finished_total: int, busy_s_total: float) -> float:
        """Fold in the cumulative finished tasks and task-seconds; returns the rate."""
        last, self._last = self._last, (finished_total, busy_s_total)
        if last is None:
            return self.rate_rps
        # max(0, …): a restarted meter reads as no progress, never as negative time.
        self._done += max(0, finished_total - last[0])
        self._busy_slot_s += max(0.0, busy_s_total - last[1])
        enough = (
            self._busy_slot_s >= SERVICE_EVIDENCE_SLOT_S or self._done >= SERVICE_EVIDENCE_TASKS
        )
        if enough and self._done > 0 and self._busy_slot_s > 0:
            measured = self._done / self._busy_slot_s
            weight = SERVICE_SMOOTHING if self.measured else 1.0
            self.rate_rps += weight * (measured - self.rate_rps)
            self.measured = True
            self._done, self._busy_slot_s = 0, 0.0
        return self.rate_rps
