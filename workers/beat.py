"""Celery beat for iotsched: the schedule, and the control worker that runs it.

``celery -A workers.beat:app beat`` sends ``iotsched.maintenance.tick`` every
second to the control queue; ``control_worker_argv()`` is one process that
both runs beat (``-B``, in-memory schedule: nothing to persist, every entry is
a fixed interval) and consumes that queue. Run exactly one beat per
deployment: two would tick twice (harmless — ticks are idempotent — but
wasteful).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from scheduler import defaults
from scheduler.model import WorkClass, queue_name
from scheduler.wire import CONTROL_QUEUE, DROPOUT_TASK, MAINTENANCE_TICK_TASK
from tasks.all import app


def beat_schedule(
    interval_s: float = defaults.MAINTENANCE_TICK_INTERVAL_S, regions: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "maintenance-tick": {
            "task": MAINTENANCE_TICK_TASK,
            "schedule": interval_s,
            # A tick that waited longer than two intervals is stale: the next one is due.
            "options": {"queue": CONTROL_QUEUE, "expires": 2 * interval_s},
        }
    }
    for region in regions:
        # Silent devices are found by sweeping detector states (tasks/dropout.py).
        schedule[f"dropout-sweep-{region}"] = {
            "task": DROPOUT_TASK,
            "schedule": defaults.DROPOUT_SWEEP_INTERVAL_S,
            "args": ({"region": region},),
            "options": {
                "queue": queue_name(region, WorkClass.SCREEN.value),
                "expires": 2 * defaults.DROPOUT_SWEEP_INTERVAL_S,
            },
        }
    return schedule


app.conf.beat_schedule = beat_schedule(regions=app.runtime.settings.regions)

__all__ = ["app", "beat_schedule", "control_worker_argv"]


def control_worker_argv(loglevel: str = "WARNING") -> list[str]:
    """``celery worker`` running beat and consuming the control queue, one process."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.beat:app",
        "worker",
        "-B",
        "--scheduler",
        "celery.beat:Scheduler",
        "-Q",
        CONTROL_QUEUE,
        "-n",
        "control@%h",
        "--pool",
        "solo",
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
    ]
