"""Seconds a worker's pool spent running tasks, summed across its processes.

The parent process cannot see how long a task ran: a prefork child reports
"accepted" and "done" in the same breath for a short task, so sampling the
parent's active requests sees an idle pool. Instead each pool process adds
its own task durations (``task_prerun`` → ``task_postrun``) to counters in
shared memory, created in the parent before it forks its children (prefork
children, including those the autoscaler grows later, inherit the mapping;
thread and solo pools share it trivially). The autoscaler reads the totals
to measure the service rate per busy slot; the bench reads them for
utilisation.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from celery.signals import task_postrun, task_prerun


class BusyTime:
    """Cumulative task-seconds and finished tasks across a pool's processes."""

    def __init__(self) -> None:
        # [busy seconds, tasks finished]; one lock so a reader sees a consistent pair.
        self._totals = multiprocessing.Array("d", 2)
        self._started: dict[str, float] = {}

    def started(self, task_id: str) -> None:
        self._started[task_id] = time.perf_counter()

    def finished(self, task_id: str) -> None:
        start = self._started.pop(task_id, None)
        if start is None:
            return
        with self._totals.get_lock():
            self._totals[0] += time.perf_counter() - start
            self._totals[1] += 1

    def totals(self) -> tuple[float, int]:
        """(busy task-seconds, tasks finished) since the worker started."""
        with self._totals.get_lock():
            return self._totals[0], int(self._totals[1])


#: The pool's meter, set by the autoscaler in the worker's parent process.
_meter: BusyTime | None = None


def install() -> BusyTime:
    """Create the shared meter (once per worker, before the pool forks)."""
    global _meter
    if _meter is None:
        _meter = BusyTime()
    return _meter


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if _meter is not None and task_id is not None:
        _meter.started(task_id)


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    if _meter is not None and task_id is not None:
        _meter.finished(task_id)


# weak=False: module functions live as long as the process anyway.
task_prerun.connect(_on_prerun, weak=False)
task_postrun.connect(_on_postrun, weak=False)
