"""Worker launch profiles: which queues, in which order, for a region and role.

Capacity classes are realised by *which* queues a worker consumes, because a
Celery worker on Redis takes its ``-Q`` list strictly in order (one BRPOP over
all of them, ``queue_order_strategy: priority``). A region's slots are split by
the capacity ledger (scheduler/capacity.py) into roles:

- ``premium``: the premium lane, premium's guaranteed slot. ``-Q premium,
  screen_premium`` and nothing else: tasks are not preemptible by premium, so a
  lane slot holding a standard batch, a coalesced screening copy (up to 20,000
  readings) or an anomaly workflow would make premium wait for its end. Premium
  work alone is bounded by premium's own load, so the wait for the lane is at most
  one premium task. The lane is not work-conserving on purpose: when premium is
  idle it idles too, which costs a process's memory, not CPU. Every region runs
  one by default beside its data worker(s) (``DEFAULT_ROLES``).
- ``standard``: the standard minimum share. ``-Q anomaly, standard, screen,
  screen_premium, premium``: standard before screening and premium, so standard
  never starves under sustained premium load; anomaly first because a routine
  task that yields to anomaly work must find it first when it frees its slot
  (anomaly work is rare, folded before it grows, and budgeted).
- ``data``: the anomaly burst, the screening minimum and the rest, taken by
  demand in the order ``-Q anomaly, screen_premium, premium, screen,
  standard``: screening of non-premium readings ranks below premium, so under
  overload it waits rather than premium (scheduler.model.DATA_QUEUE_KINDS).
- ``maintenance``: reserved slots, ``-Q maintenance`` only.

Prefetch is 1 everywhere, so a worker never holds a message it is not running.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

from scheduler.capacity import CapacityBudget, CapacityLedger, consumer_share
from scheduler.model import (
    DATA_QUEUE_KINDS,
    QUEUE_ORDER,
    SCREEN_PREMIUM_KIND,
    WorkClass,
    queue_name,
)

A, S, P, D = WorkClass.ANOMALY, WorkClass.SCREEN, WorkClass.PREMIUM, WorkClass.STANDARD

_SP = SCREEN_PREMIUM_KIND

#: Queue kinds of each role in ``-Q`` order; "data" is DATA_QUEUE_KINDS.
ROLE_QUEUES: dict[str, tuple[str, ...]] = {
    "data": DATA_QUEUE_KINDS,
    "premium": (P.value, _SP),
    "standard": (A.value, D.value, S.value, _SP, P.value),
    "maintenance": (WorkClass.MAINTENANCE.value,),
}
ROLES = tuple(ROLE_QUEUES)
#: What every region runs by default: its data worker(s) and a premium lane
#: (``iotsched worker --region R`` and ``--role premium``, compose, supervise, benches).
DEFAULT_ROLES = ("data", "premium")
#: The role that serves the slots a class is granted first (consumer_share's groups).
CLASS_ROLE: dict[WorkClass, str] = {
    A: "data",
    S: "data",
    P: "premium",
    D: "standard",
    WorkClass.MAINTENANCE: "maintenance",
}


class ClassWorker(NamedTuple):
    """One worker process of a region: its node name, ``-Q`` list and pool size."""

    name: str
    queues: list[str]
    concurrency: int


def region_queues(region: str, role: str = "data") -> list[str]:
    """The ``-Q`` list of a role; a data worker drains anomaly, screen_premium, premium,
    screen, standard."""
    if role not in ROLE_QUEUES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return [queue_name(region, kind) for kind in ROLE_QUEUES[role]]


def class_slots(budget: CapacityBudget, maintenance_reserved_slots: int = 0) -> dict[str, int]:
    """Slots per role: the ledger's grants under full demand, grouped by consumer_share.

    Full demand is the load the guarantees exist for: every class wants every
    slot. The grants are then exactly the guarantees and minimums, and the
    rest goes to the first class in queue order (anomaly), i.e. to ``data``
    slots that fall back to every other queue in order.
    """
    demand = {c: budget.total_slots for c in QUEUE_ORDER}
    grants = CapacityLedger(budget).allocate(demand, maintenance_reserved_slots)
    slots: dict[str, int] = {}
    for group in consumer_share(grants):
        role = CLASS_ROLE[group.queues[0]]
        slots[role] = slots.get(role, 0) + group.slots
    return slots


def class_workers(
    region: str, budget: CapacityBudget, maintenance_reserved_slots: int = 0
) -> list[ClassWorker]:
    """The region's worker processes: one per role with slots, sized by the ledger."""
    slots = class_slots(budget, maintenance_reserved_slots)
    return [
        ClassWorker(f"{role}-{region}", region_queues(region, role), slots[role])
        for role in ROLES
        if slots.get(role, 0) > 0
    ]


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
