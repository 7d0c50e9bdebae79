"""Worker launch profiles: which queues, in which order, for a region and role."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from scheduler.model import QUEUE_ORDER, WorkClass, queue_name

ROLES = ("data", "maintenance")


def region_queues(region: str, role: str = "data") -> list[str]:
    """A data worker drains anomaly, screen, premium, standard in that order."""
    if role == "maintenance":
        return [queue_name(region, WorkClass.MAINTENANCE.value)]
    if role != "data":
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return [queue_name(region, c.value) for c in QUEUE_ORDER]


def worker_argv(
    region: str,
    role: str = "data",
    concurrency: int = 1,
    pool: str = "prefork",
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``celery worker`` command line for one region and role."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.all:app",
        "worker",
        "-Q",
        ",".join(region_queues(region, role)),
        "-n",
        f"{role}-{region}@%h",
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
        *extra,
    ]
