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
from typing import Any

from tasks.all import app
from tasks.maintenance import CONTROL_QUEUE, TICK_INTERVAL_S, TICK_TASK


def beat_schedule(interval_s: float = TICK_INTERVAL_S) -> dict[str, dict[str, Any]]:
    return {
        "maintenance-tick": {
            "task": TICK_TASK,
            "schedule": interval_s,
            # A tick that waited longer than two intervals is stale: the next one is due.
            "options": {"queue": CONTROL_QUEUE, "expires": 2 * interval_s},
        }
    }


app.conf.beat_schedule = beat_schedule()

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
