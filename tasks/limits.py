"""Time limits and retry budgets per kind of task, declared in one place.

Each kind of work gets a soft limit (the task is interrupted with
``SoftTimeLimitExceeded`` and hands its unfinished work back), a hard limit
(the pool process is killed; a backstop for a task that ignores the soft one),
and a retry budget for transient failures (Redis connection errors and
timeouts, ``TransientError``) with exponential backoff and jitter. Past the
budget the work goes to the dead-letter stream with its reason: nothing loops
for ever.

Tasks take their options with ``@app.task(**task_options("routine"), ...)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler.errors import TransientError

#: Failures worth trying again: the store or broker hiccuped, the input is fine.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TransientError,
)


@dataclass(frozen=True)
class TaskLimits:
    """Limits of one kind of task; every duration in seconds."""

    soft_s: float
    hard_s: float
    #: Transient failures retried this many times, then the work is dead-lettered.
    max_retries: int
    #: First retry waits about this long; each further one twice as long …
    backoff_base_s: float
    #: … but never longer than this.
    backoff_cap_s: float

    def backoff_s(self, retries: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``retries + 1``: exponential, with "equal jitter".

        Half the exponential delay is fixed and half random, so retries of many
        batches failing together spread out yet none retries at once.
        """
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, retries))
        return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))

    def exhausted(self, retries: int) -> bool:
        return retries >= self.max_retries


#: Routine batches are chunked and yield on the soft limit, so it can be short.
ROUTINE = TaskLimits(soft_s=30, hard_s=60, max_retries=5, backoff_base_s=0.2, backoff_cap_s=10)
#: Screening is on the detection-latency path: retry soon and often.
SCREEN = TaskLimits(soft_s=30, hard_s=60, max_retries=5, backoff_base_s=0.05, backoff_cap_s=1)
#: Anomaly workflows (correlation, accelerated processing of affected devices).
ANOMALY = TaskLimits(soft_s=60, hard_s=90, max_retries=5, backoff_base_s=0.05, backoff_cap_s=2)
#: Maintenance operations run long by nature; their windows bound them further.
MAINTENANCE = TaskLimits(
    soft_s=1_800, hard_s=1_900, max_retries=3, backoff_base_s=5, backoff_cap_s=120
)

LIMITS: dict[str, TaskLimits] = {
    "routine": ROUTINE,
    "screen": SCREEN,
    "anomaly": ANOMALY,
    "maintenance": MAINTENANCE,
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
