"""Limits, retry budgets and what happens past them, per kind of work: one table.

Each kind of work gets a soft time limit (the task is interrupted with
``SoftTimeLimitExceeded``; routine work hands its unfinished chunks back), a hard
limit (the pool process is killed: a backstop for a task that ignores the soft
one), a retry budget for transient failures (``TRANSIENT_ERRORS``: the store or
broker hiccuped, the input is fine) with one backoff function, and what is done
with the work past that budget: dead-lettered with a reason, or dropped where the
work is redone anyway (an accelerated pass, a sweep). Nothing loops for ever.

``tasks.base.WorkTask`` applies a row to every task: ``@app.task(**work_options(kind))``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler import wire
from scheduler.errors import TransientError

#: Failures worth trying again: the store or broker hiccuped, the input is fine.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TransientError,
)


@dataclass(frozen=True)
class TaskLimits:
    """Limits of one kind of task; every duration in seconds, None where there is none."""

    soft_s: float | None
    hard_s: float | None
    #: Transient failures retried this many times; then ``exhausted_reason`` applies.
    max_retries: int
    #: First retry waits about this long; each further one twice as long …
    backoff_base_s: float
    #: … but never longer than this.
    backoff_cap_s: float
    #: Past the retry budget the payload is dead-lettered with this reason; None gives the
    #: work up quietly (it is done anyway: the routine workers, the next sweep).
    exhausted_reason: str | None = None

    def backoff_s(self, retries: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``retries + 1``: exponential, with "equal jitter".

        Half the exponential delay is fixed and half random, so retries of many
        batches failing together spread out yet none retries at once.
        """
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, retries))
        return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))

    def exhausted(self, retries: int) -> bool:
        return retries >= self.max_retries


#: Routine batches are chunked and yield on the soft limit, so it can be short; past
#: the budget the routine task dead-letters its unapplied chunks itself.
ROUTINE = TaskLimits(soft_s=30, hard_s=60, max_retries=5, backoff_base_s=0.2, backoff_cap_s=10)
#: Screening is on the detection-latency path: retry soon and often.
SCREEN = TaskLimits(
    soft_s=30,
    hard_s=60,
    max_retries=5,
    backoff_base_s=0.05,
    backoff_cap_s=1,
    exhausted_reason="screen_retries_exhausted",
)
#: Anomaly workflows (alerts folded into incidents, the correlator's timers).
ANOMALY = TaskLimits(
    soft_s=None,
    hard_s=60,
    max_retries=5,
    backoff_base_s=0.05,
    backoff_cap_s=1,
    exhausted_reason="retries_exhausted",
)
#: Accelerated processing: given up quietly, the routine workers process those readings.
ACCELERATE = TaskLimits(
    soft_s=None, hard_s=60, max_retries=3, backoff_base_s=0.2, backoff_cap_s=1.6
)
#: A dropout sweep: given up quietly, the next scheduled sweep carries on from its cursor.
SWEEP = TaskLimits(soft_s=None, hard_s=60, max_retries=2, backoff_base_s=0.5, backoff_cap_s=0.5)
#: The stand-in anomaly task of benches and tests.
PROBE = TaskLimits(soft_s=5, hard_s=10, max_retries=0, backoff_base_s=0, backoff_cap_s=0)
#: Maintenance: a try runs until its window's cutoff and its retries are the run's own
#: (``scheduler.maintenance.RetryPolicy``), so Celery neither limits nor retries it.
MAINTENANCE = TaskLimits(soft_s=None, hard_s=None, max_retries=0, backoff_base_s=0, backoff_cap_s=0)

LIMITS: dict[str, TaskLimits] = {
    "routine": ROUTINE,
    "screen": SCREEN,
    "anomaly": ANOMALY,
    "accelerate": ACCELERATE,
    "sweep": SWEEP,
    "probe": PROBE,
    "maintenance": MAINTENANCE,
}

#: The kind of work of every task.
KIND_OF_TASK: dict[str, str] = {
    wire.ROUTINE_TASK: "routine",
    wire.SCREEN_TASK: "screen",
    wire.ANOMALY_TASK: "anomaly",
    wire.INCIDENT_TICK_TASK: "anomaly",
    wire.NOTIFY_TASK: "anomaly",
    wire.ACCELERATE_TASK: "accelerate",
    wire.DROPOUT_TASK: "sweep",
    wire.PROBE_TASK: "probe",
    wire.MAINTENANCE_TICK_TASK: "maintenance",
    wire.MAINTENANCE_RUN_TASK: "maintenance",
}


def task_options(kind: str) -> dict[str, Any]:
    """Celery task options for one kind of task (acks late: a crash redelivers, never drops)."""
    limits = LIMITS[kind]
    return {
        "acks_late": True,
        "soft_time_limit": limits.soft_s,
        "time_limit": limits.hard_s,
        "max_retries": limits.max_retries,
    }


def work_options(task: str) -> dict[str, Any]:
    """Everything ``@app.task`` needs for ``task``: its name, kind and limits."""
    kind = KIND_OF_TASK[task]
    return {"name": task, "kind": kind, **task_options(kind)}
