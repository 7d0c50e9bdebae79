"""Accelerated processing: an incident's devices get their pending routine data processed now.

When the anomaly workflow opens or grows an incident it books one
``iotsched.accelerate`` task on ``{region}.anomaly`` (at most one per incident per
``MIN_INTERVAL_S``, see ``IncidentStore.want_accelerate``). The task reads the
routine batches waiting in the region's premium and standard broker lists
(``stores.queue_scan``, bounded), finds the chunks holding the incident's devices
and applies them with ``tasks.routine.apply_chunks`` under the claim ids the
routine task would use. The queued messages stay where they are; when a routine
worker reaches them it finds those chunks claimed and skips them (counted in
``duplicate_deliveries``), so each reading is still applied exactly once.

Accelerated processing runs ahead of premium, so it spends from the region's budget of
work above premium (``scheduler.work_budget``: a share of a slot's time and a burst):
past it the task does nothing but count ``accelerate_skipped_budget``; the routine
workers still process those readings in order, so nothing is lost, only not hurried.

Only whole chunks are applied: the other devices of a chunk that holds an
affected device are processed early too. That is the price of reusing the
routine task's claim ids, which is what makes the later skip free and safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from celery import Task

from scheduler.errors import InvalidBatch
from scheduler.model import WorkClass, queue_name
from scheduler.wire import ACCELERATE_TASK
from stores.queue_scan import QueueScan
from stores.work_budget_store import RedisWorkBudgetStore
from tasks import context
from tasks.app import app
from tasks.limits import TRANSIENT_ERRORS
from tasks.routine import apply_chunks, chunks_holding

#: At most one accelerated scan per incident per this many seconds.
MIN_INTERVAL_S = 1.0
MAX_RETRIES = 3

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
    scan: QueueScan,
    region: str,
    device_ids: Iterable[int],
    apply: Callable[[dict[str, Any], list[int]], int] = apply_chunks,
    deadline_ts: float | None = None,
    clock: Callable[[], float] = time.time,
) -> Accelerated:
    """Apply now every queued routine chunk of ``region`` holding one of ``device_ids``,
    until ``deadline_ts``: premium waits behind the run, so a run stops at its deadline
    (after at least one chunk) and leaves the rest to the routine workers, in order."""
    devices = np.fromiter(device_ids, dtype=np.uint64)
    found = scan.routine_payloads(region)
    done = Accelerated(scanned_messages=found.scanned_messages, truncated=found.truncated)
    for payload in found.payloads:
        try:
            chunks = chunks_holding(payload, devices)
        except InvalidBatch:
            continue  # the routine task dead-letters it when it gets there
        for chunk in chunks:
            if done.chunks and deadline_ts is not None and clock() >= deadline_ts:
                done.stopped = True
                return done
            applied = apply(payload, [chunk])
            if applied:
                done.readings += applied
                done.chunks += 1
    return done


def _build_scan() -> QueueScan:
    cfg = context.settings()
    state = context.store()
    client = getattr(state, "client", None)
    keys = getattr(state, "keys", None)
    if keys is None:
        raise RuntimeError("accelerated processing needs the Redis state store")
    broker_url = cfg.effective_broker_url
    if client is None or broker_url != cfg.redis_url:
        client = redis.Redis.from_url(broker_url)
    return QueueScan(client, keys)


_scan: context.PerProcess[QueueScan] = context.PerProcess(_build_scan)
queue_scan = _scan.get


def _build_budget() -> RedisWorkBudgetStore:
    state = context.store()
    client = getattr(state, "client", None)
    keys = getattr(state, "keys", None)
    if client is None or keys is None:
        raise RuntimeError("accelerated processing needs the Redis state store")
    return RedisWorkBudgetStore(client, keys)


_budget: context.PerProcess[RedisWorkBudgetStore] = context.PerProcess(_build_budget)
work_budget = _budget.get


def encode_request(
    region: str, incident_id: str, device_ids: npt.NDArray[np.uint64]
) -> dict[str, Any]:
    return {
        "region": region,
        "incident_id": incident_id,
        "device_id": np.ascontiguousarray(device_ids, dtype="<u8").tobytes(),
    }


def send_accelerate(region: str, incident_id: str, device_ids: npt.NDArray[np.uint64]) -> None:
    app.send_task(
        ACCELERATE_TASK,
        args=(encode_request(region, incident_id, device_ids),),
        queue=queue_name(region, WorkClass.ANOMALY.value),
        serializer="msgpack",
    )


@app.task(name=ACCELERATE_TASK, bind=True, acks_late=True, max_retries=MAX_RETRIES, time_limit=60)
def process_accelerate(self: Task, payload: dict[str, Any]) -> int:
    """Returns the readings applied now (0 when the chunks were applied before)."""
    region = str(payload["region"])
    devices = np.frombuffer(payload["device_id"], dtype="<u8")
    try:
        budget = work_budget()
        started = time.time()
        if not budget.admits(region, started):
            context.store().incr_counters({"accelerate_skipped_budget": 1})
            return 0
        # One run spends at most the budget's burst: the budget is checked only when a run
        # starts, and a storm can queue a whole backlog of chunks holding affected devices.
        deadline = started + budget.budget.burst_s
        try:
            done = accelerate(queue_scan(), region, devices.tolist(), deadline_ts=deadline)
        finally:
            budget.charge(region, time.time(), time.time() - started)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= MAX_RETRIES:
            # Nothing is lost: the routine workers process the queued batches anyway.
            LOGGER.warning("accelerated processing of %s gave up: %r", payload["incident_id"], exc)
            return 0
        raise self.retry(exc=exc, countdown=0.2 * 2**self.request.retries) from exc
    counts = {"accelerated_readings": done.readings, "accelerated_chunks": done.chunks}
    if done.truncated:
        counts["accelerate_scans_truncated"] = 1
    if done.stopped:
        counts["accelerate_stopped_at_burst"] = 1
    context.store().incr_counters(counts)
    return done.readings
