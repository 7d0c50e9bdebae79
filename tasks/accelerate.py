"""Accelerated processing: an incident's devices get their pending routine data processed now.

When the anomaly workflow opens or grows an incident it books one
``iotsched.accelerate`` task on ``{region}.anomaly`` (at most one per incident per
``Settings.accelerate_min_interval_s``, see ``IncidentStore.want_accelerate``). The task reads the
routine batches waiting in the region's premium and standard broker lists
(``stores.queue_scan``, bounded), finds the chunks holding the incident's devices
and applies them with ``tasks.routine.apply_chunks`` under the claim ids the
routine task would use. The queued messages stay where they are; when a routine
worker reaches them it finds those chunks claimed and skips them (counted in
``duplicate_deliveries``), so each reading is still applied exactly once.

Accelerated processing runs ahead of premium, so it spends from the region's budget of
work above premium (``scheduler.work_budget``: a share of a slot's time and a burst):
each pass is charged its measured time plus its delivery (``WorkBudget.run_cost_s``);
past it the task does nothing but count ``accelerate_skipped_budget``; the routine
workers still process those readings in order, so nothing is lost, only not hurried.

Only whole chunks are applied: the other devices of a chunk that holds an
affected device are processed early too. That is the price of reusing the
routine task's claim ids, which is what makes the later skip free and safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.runtime import Runtime
from scheduler.errors import InvalidBatch
from scheduler.wire import ACCELERATE_TASK
from tasks.app import app
from tasks.base import WorkTask
from tasks.limits import work_options
from tasks.routine import apply_chunks, chunks_holding

LOGGER = logging.getLogger(__name__)


@dataclass
class Accelerated:
    """What one accelerated pass did."""

    readings: int = 0
    chunks: int = 0
    scanned_messages: int = 0
    truncated: bool = False
    #: Stopped at the run's time limit with chunks still to apply (left to the routine workers).
    stopped: bool = False


def accelerate(
    rt: Runtime,
    region: str,
    device_ids: Iterable[int],
    deadline_ts: float | None = None,
    clock: Callable[[], float] | None = None,
) -> Accelerated:
    """Apply now every queued routine chunk of ``region`` holding one of ``device_ids``,
    until ``deadline_ts``: premium waits behind the run, so a run stops at its deadline
    (after at least one chunk) and leaves the rest to the routine workers, in order."""
    now = clock or rt.clock
    devices = np.fromiter(device_ids, dtype=np.uint64)
    found = rt.stores.queue_scan.routine_payloads(region)
    done = Accelerated(scanned_messages=found.scanned_messages, truncated=found.truncated)
    for payload in found.payloads:
        try:
            chunks = chunks_holding(payload, devices)
        except InvalidBatch:
            continue  # the routine task dead-letters it when it gets there
        for chunk in chunks:
            if done.chunks and deadline_ts is not None and now() >= deadline_ts:
                done.stopped = True
                return done
            applied = apply_chunks(rt, payload, [chunk])
            if applied:
                done.readings += applied
                done.chunks += 1
    return done


def handle_accelerate(rt: Runtime, payload: dict[str, Any]) -> int:
    """Returns the readings applied now (0 when the chunks were applied before)."""
    region = str(payload["region"])
    devices = np.frombuffer(payload["device_id"], dtype="<u8")
    budget = rt.stores.work_budget
    started = rt.clock()
    # Every pass is charged its delivery too (``WorkBudget.run_cost_s``), a skipped one
    # only that: the budget holds the whole slot time above premium to its share, not
    # just the time inside this function.
    if not budget.admits(region, started):
        budget.charge(region, started, budget.budget.run_cost_s(0.0))
        rt.stores.state.incr_counters({"accelerate_skipped_budget": 1})
        return 0
    # One run spends at most the budget's burst: the budget is checked only when a run
    # starts, and a storm can queue a whole backlog of chunks holding affected devices.
    deadline = started + budget.budget.burst_s
    try:
        done = accelerate(rt, region, devices.tolist(), deadline_ts=deadline)
    finally:
        ended = rt.clock()
        budget.charge(region, ended, budget.budget.run_cost_s(ended - started))
    counts = {"accelerated_readings": done.readings, "accelerated_chunks": done.chunks}
    if done.truncated:
        counts["accelerate_scans_truncated"] = 1
    if done.stopped:
        counts["accelerate_stopped_at_burst"] = 1
    rt.stores.state.incr_counters(counts)
    return done.readings


@app.task(base=WorkTask, bind=True, **work_options(ACCELERATE_TASK))
def process_accelerate(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the readings applied now; past its retries nothing is lost (the routine
    workers process the queued batches anyway)."""
    return int(self.work(handle_accelerate, payload))
