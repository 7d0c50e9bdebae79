"""Routine workers give way on the CPU: a worker consuming standard work lowers its priority.

Tasks are not preemptible by premium, and on a saturated host a premium task that
has its slot (the premium lane, workers/profiles.py) still competes for a core with
the routine workers' batches. A worker whose queues include ``{region}.standard``
(the data and standard roles) adds ``IOTSCHED_ROUTINE_WORKER_NICE`` (default
``scheduler.defaults.ROUTINE_WORKER_NICE``) to its niceness at start,
before its pool forks, so its pool processes and threads inherit it; the kernel then
runs the premium lane, the producer and Redis first. Nothing is starved: an idle
core still runs routine work at full speed, and CFS gives a niced process a smaller
share, never none. The premium lane, maintenance and control workers keep their
priority. The role comes from the queues consumed, as the heartbeat's region does,
so plain ``celery worker -Q ...`` commands behave the same as ``iotsched worker``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from celery import bootsteps

from scheduler import defaults
from scheduler.model import WorkClass
from scheduler.settings import Settings

log = logging.getLogger(__name__)


def consumes_routine_standard(queue_names: Iterable[str]) -> bool:
    """Whether any of ``queue_names`` is a region's standard queue (``{region}.standard``)."""
    return any(q.rpartition(".")[2] == WorkClass.STANDARD.value for q in queue_names)


def lower_priority(queue_names: Iterable[str], nice: int = defaults.ROUTINE_WORKER_NICE) -> int:
    """Add ``nice`` to this process's niceness if it consumes standard work; the niceness now."""
    if nice > 0 and consumes_routine_standard(queue_names):
        return os.nice(nice)
    return os.nice(0)


class RoutinePriority(bootsteps.Step):  # type: ignore[misc]
    """Worker bootstep: lower the priority when applied, before the pool starts (and forks)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        queues = list(parent.app.amqp.queues.consume_from or {})
        niceness = lower_priority(queues, Settings.from_env().routine_worker_nice)
        if niceness:
            log.info("consuming standard work: niceness %d", niceness)
