"""Routine processing: a batch becomes per-device, per-minute rollups, chunk by chunk, once.

Chunks and claims — why a reading is never lost and never applied twice
-----------------------------------------------------------------------
(The chunk plan, its cursor and claim ids are ``scheduler.chunks``.)
A batch of ``n`` readings is cut into fixed chunks of ``chunk_readings``
(``PreemptionPolicy.plan_chunks`` on the original ``n``). Chunk ``i`` is
applied by one atomic ``apply_batch`` under the claim id ``f"{batch_id}#{i}"``:
the store claims the id and applies the chunk's effects together, or does
nothing when the id was claimed before.

Between chunks (after at least one, so every delivery makes progress) the task
asks the preemption signal whether anomaly work is waiting for its slot. If so
it publishes the unprocessed remainder to the batch's own queue as a new
message that keeps the *original* ``batch_id`` and carries ``chunk0`` (the
index of its first chunk in the original plan) and ``chunk_readings``, then
returns, which frees the slot. The remainder's chunks keep their original
indexes, hence their original claim ids. So:

- the original message delivered again (its worker killed after the remainder
  went out, or a visibility timeout) walks the same claim ids: chunks applied
  by anyone are skipped, and a chunk both it and the remainder reach is
  applied by whichever claims it first;
- a remainder delivered twice, or retried, is the same story;
- a retry after a transient failure carries the remainder from the failing
  chunk; ``SoftTimeLimitExceeded`` defers the remainder like a preemption;
- work given up on (retries exhausted, no progress within the soft limit
  ``MAX_STALLS`` times, hard time limit, pool process lost past the retry
  budget, an unexpected error) is dead-lettered chunk by chunk, each chunk's
  claim, stream entry and count in one transaction (``ClaimStore``): a
  chunk is counted as applied or as dead-lettered, never both;
- when Redis refuses the writes (``maxmemory``, an outage) nothing is recorded
  and the batch stays in the in-flight ledger, whose reaper publishes it again.

Workers re-validate what they apply: readings that are not finite or come from
devices the registry does not know (which ingest would have refused) are
dead-lettered with their reason under the claim ``f"{chunk claim}!{reason}"``,
and a payload whose columns disagree with its ``n`` is dead-lettered whole,
counted by its columns, never by the ``n`` it claims.

The chunk size of an original message is ``defaults.ROUTINE_CHUNK_READINGS``,
a constant of the wire format: changing it while batches of the old size are
still queued would give a redelivered original different claim ids.

Accelerated processing (anomaly workflows) reuses the scheme: ``apply_chunks``
applies chosen chunks of a queued routine payload now, under the same claim
ids, so when the routine task reaches them later it skips them (counted in
``duplicate_deliveries``) — the redundant routine work is skipped for free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import redis
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_failure

from runtime.runtime import Runtime

# Re-exported: tests, benches and the accelerate task name them here.
from scheduler.chunks import ChunkCursor as ChunkCursor
from scheduler.chunks import chunks_holding as chunks_holding
from scheduler.chunks import claim_id as claim_id
from scheduler.chunks import invalid_rows
from scheduler.codec import encode_batch
from scheduler.errors import ConfigError, InvalidBatch
from scheduler.model import Batch, DeadLetter, WorkClass
from scheduler.registry import Registry
from scheduler.routine import routine_effects
from scheduler.screen_cost import routine_readings, routine_us
from scheduler.validation import REASONS
from scheduler.wire import LEDGER_REF_FIELD
from scheduler.wire import PROBE_TASK as PROBE_TASK
from scheduler.wire import ROUTINE_TASK as ROUTINE_TASK
from tasks.app import app
from tasks.base import STORE_ERRORS, GiveUp, RetryLater, WorkTask, record_service
from tasks.deadletter import dead_letter_payload
from tasks.limits import TRANSIENT_ERRORS, work_options

#: Soft time limits hit without finishing a single chunk before the rest is dead-lettered.
MAX_STALLS = 3

LOGGER = logging.getLogger(__name__)


def _dead_letter_invalid(rt: Runtime, chunk: Batch, reason: npt.NDArray[np.uint8]) -> None:
    letters = []
    for code in np.unique(reason[reason > 0]).tolist():
        rows = chunk.take(np.flatnonzero(reason == code), chunk.batch_id)
        raw = msgpack.packb(encode_batch(rows), use_bin_type=True)
        name = REASONS[code]
        detail = "re-validated by the worker"
        letter = DeadLetter(name, detail, raw, ROUTINE_TASK, rt.clock(), len(rows))
        letters.append((f"{chunk.batch_id}!{name}", letter))
    rt.stores.claims.dead_letter_claimed(letters)


def apply_chunk(rt: Runtime, cursor: ChunkCursor, started_ts: float | None = None) -> bool:
    """Apply the cursor's next chunk; False when it had been applied before.

    ``started_ts``: when the task applying it started (the "started" latency stage)."""
    chunk = cursor.chunk(cursor.done)
    reason = invalid_rows(chunk, _registry(rt))
    if reason.any():
        _dead_letter_invalid(rt, chunk, reason)
        cursor.invalid_readings += int(np.count_nonzero(reason))
        chunk = chunk.take(np.flatnonzero(reason == 0), chunk.batch_id)
        if len(chunk) == 0:
            cursor.done += 1
            return False
    effects = routine_effects(chunk, processed_ts=rt.clock(), started_ts=started_ts)
    applied = rt.stores.state.apply_batch(
        chunk.batch_id, chunk.tier, effects.delta, effects.latency, effects.readings
    )
    if applied:
        cursor.applied_readings += len(chunk)
    else:
        cursor.skipped_readings += len(chunk)
    cursor.done += 1
    return applied


def apply_chunks(
    rt: Runtime, payload: dict[str, Any], chunk_indexes: Iterable[int] | None = None
) -> int:
    """Apply chosen chunks (original-plan indexes) of a routine payload now; readings applied.

    For accelerated processing: an anomaly workflow that finds a queued routine
    batch holding affected devices applies the chunks holding them here; the
    routine task skips those chunks when it gets to the message.
    """
    started_ts = rt.clock()
    cursor = ChunkCursor.from_payload(payload)
    wanted = None if chunk_indexes is None else set(chunk_indexes)
    applied = 0
    for k in range(cursor.n_chunks):
        cursor.done = k
        if wanted is None or cursor.chunk0 + k in wanted:
            before = cursor.applied_readings
            apply_chunk(rt, cursor, started_ts)
            applied += cursor.applied_readings - before
    return applied


def _registry(rt: Runtime) -> Registry | None:
    """The device registry, or None where none is stored (task tests without a fleet)."""
    try:
        return rt.registry.get()
    except ConfigError:
        return None


def store_refused(exc: BaseException) -> bool:
    """Redis refused a write: ``maxmemory`` reached (OOM), or the whole transaction aborted."""
    # redis-py's parser turns an "OOM ..." reply into OutOfMemoryError without the prefix.
    refusals = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)
    return isinstance(exc, refusals) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")
    )


def work_class(tier: str) -> WorkClass:
    """Premium batches are premium work; any other tier is standard work."""
    return WorkClass.PREMIUM if tier == WorkClass.PREMIUM.value else WorkClass.STANDARD


def _defer(rt: Runtime, cursor: ChunkCursor, reason: str, stalled: bool = False) -> None:
    payload = cursor.rest_payload(stalled)
    rt.publisher.send_remainder(payload)
    rt.stores.state.incr_counters(
        {"deferred_readings": int(payload["n"]), f"deferrals:{reason}": 1}
    )


def dead_letter_rest(rt: Runtime, cursor: ChunkCursor, reason: str, detail: str) -> int:
    """Dead-letter the chunks not applied, each claimed with its entry and count in one
    transaction; returns readings dead-lettered. A Redis error leaves everything as it
    was (the batch stays in the in-flight ledger)."""
    plan = cursor.plan
    claimed: list[tuple[str, DeadLetter]] = []
    for k, (cid, size) in enumerate(cursor.rest_claim_ids(), start=cursor.done):
        chunk = cursor.batch.take(plan[k], cid)
        raw = msgpack.packb(encode_batch(chunk), use_bin_type=True)
        claimed.append((cid, DeadLetter(reason, detail, raw, ROUTINE_TASK, rt.clock(), size)))
    won = rt.stores.claims.dead_letter_claimed(claimed)
    rt.stores.inflight.done(cursor.batch.batch_id)
    return sum(dl.readings for (_, dl), ok in zip(claimed, won, strict=True) if ok)


def _give_up(rt: Runtime, cursor: ChunkCursor, reason: str, detail: str) -> None:
    """Dead-letter the rest, or, when Redis refuses even that, leave it to the ledger."""
    try:
        dead_letter_rest(rt, cursor, reason, detail)
    except STORE_ERRORS as exc:
        LOGGER.warning(
            "batch %s left to the in-flight ledger: dead-lettering failed: %r",
            cursor.batch.batch_id,
            exc,
        )


def handle_routine(rt: Runtime, payload: dict[str, Any]) -> int:
    """Apply a routine message chunk by chunk; returns the readings this delivery applied.

    Raises ``RetryLater`` with the unfinished chunks on a transient failure.
    """
    started_ts = rt.clock()
    if is_reference(payload):
        try:
            recorded = rt.stores.inflight.payload(str(payload.get("id")))
        except TRANSIENT_ERRORS as exc:
            raise RetryLater(exc, (payload,), _left_to_ledger(payload)) from exc
        if recorded is None:
            # Settled: applied (or dead-lettered) by an earlier delivery of this message.
            rt.stores.state.incr_counters({"routine_ref_settled": 1})
            return 0
        payload = recorded
    try:
        cursor = ChunkCursor.from_payload(payload)
    except InvalidBatch as exc:
        dead_letter_payload(rt.stores.state, payload, "invalid_batch", str(exc), ROUTINE_TASK)
        _settle_if_named(rt, payload)
        return 0
    batch = cursor.batch
    signal = rt.stores.preemption
    work = work_class(batch.tier)
    service_from = time.perf_counter()
    try:
        while not cursor.finished:
            if cursor.done > 0 and signal.should_yield(batch.region, work):
                _defer(rt, cursor, "preempted")
                return cursor.applied_readings
            apply_chunk(rt, cursor, started_ts)
        rt.stores.inflight.done(batch.batch_id)
        if work is not WorkClass.PREMIUM:
            # Premium tasks skip the extra round trip: held screening is sized against
            # non-premium processing only.
            tier = batch.tier
            record_service(
                rt, routine_us(tier), routine_readings(tier), service_from, cursor.applied_readings
            )
    except SoftTimeLimitExceeded:
        stalled = cursor.done == 0
        if stalled and cursor.stalls + 1 >= MAX_STALLS:
            _give_up(rt, cursor, "soft_time_limit", f"no chunk finished {MAX_STALLS} times")
        else:
            _defer(rt, cursor, "soft_time_limit", stalled)
    except redis.ResponseError as exc:
        if not store_refused(exc):
            LOGGER.exception("routine batch %s failed", batch.batch_id)
            _give_up(rt, cursor, "task_error", repr(exc))
        else:
            # maxmemory: ingest pauses before this; what got through waits in the
            # in-flight ledger until the reaper finds Redis taking writes again.
            LOGGER.warning("batch %s left to the in-flight ledger: %s", batch.batch_id, exc)
    except TRANSIENT_ERRORS as exc:

        def give_up(rt: Runtime, last: BaseException) -> int:
            _give_up(rt, cursor, "retries_exhausted", repr(last))
            return cursor.applied_readings

        raise RetryLater(exc, (cursor.rest_payload(),), give_up) from exc
    except Exception as exc:  # a bug or bad data: keep the readings, with the reason
        LOGGER.exception("routine batch %s failed", batch.batch_id)
        _give_up(rt, cursor, "task_error", repr(exc))
    return cursor.applied_readings


def is_reference(payload: Any) -> bool:
    """Whether a routine message is a claim check (``Publisher.send_routine``): its columns
    are in the in-flight ledger entry of its batch id."""
    return isinstance(payload, dict) and payload.get(LEDGER_REF_FIELD) is True


def _left_to_ledger(payload: dict[str, Any]) -> GiveUp:
    """Past the retry budget, a claim check whose columns could not be fetched stays in the
    ledger: its reaper sends the whole batch again (dead-lettering the reference would
    settle readings nobody applied)."""

    def give_up(rt: Runtime, last: BaseException) -> int:
        LOGGER.warning("batch %s left to the in-flight ledger: %r", payload.get("id"), last)
        return 0

    return give_up


def _settle_if_named(rt: Runtime, payload: Any) -> None:
    """An undecodable payload that still names its batch leaves the in-flight ledger."""
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        rt.stores.inflight.done(payload["id"])


@app.task(
    base=WorkTask,
    bind=True,
    # Hard time limit: ack, and the failure handler dead-letters what is left.
    acks_on_timeout=True,
    # A pool process lost mid-batch (OOM, kill) retries, up to the retry budget, soon
    # (Celery's default delay for that retry is three minutes).
    retry_on_worker_lost=True,
    default_retry_delay=1,
    **work_options(ROUTINE_TASK),
)
def process_routine(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of readings applied by this delivery."""
    return int(self.work(handle_routine, payload))


@task_failure.connect(sender=process_routine)
def _given_up(exception: BaseException | None = None, args: Any = None, **_: Any) -> None:
    """Hard time limit or pool process lost past the retry budget: dead-letter the rest.

    Runs in the worker's main process, which acked (or dropped) the message. A
    ``Reject`` is Celery's answer to a retry it could not publish (the broker away):
    the data is fine, so the batch is left in the in-flight ledger, whose reaper
    publishes it again, instead of being dead-lettered.
    """
    if not args or isinstance(exception, SoftTimeLimitExceeded):
        return
    rt: Runtime = app.runtime
    if isinstance(exception, Reject):
        LOGGER.warning("routine retry not published (%r): left to the in-flight ledger", exception)
        return
    payload = args[0]
    if is_reference(payload):
        try:
            payload = rt.stores.inflight.payload(str(payload.get("id")))
        except STORE_ERRORS as exc:
            LOGGER.warning("batch %s left to the in-flight ledger: %r", args[0].get("id"), exc)
            return
        if payload is None:
            return  # settled meanwhile
    try:
        cursor = ChunkCursor.from_payload(payload)
    except InvalidBatch:
        detail = repr(exception)
        dead_letter_payload(rt.stores.state, payload, "invalid_batch", detail, ROUTINE_TASK)
        return
    _give_up(rt, cursor, type(exception).__name__, repr(exception))


def handle_probe(rt: Runtime, args: tuple[str, float, float]) -> None:
    """Record an anomaly task's wait (enqueued → started), then hold its slot."""
    region, enqueued_ts, hold_ms = args
    rt.stores.preemption.record_anomaly_start(region, enqueued_ts, rt.clock())
    if hold_ms > 0:
        time.sleep(hold_ms / 1e3)


@app.task(base=WorkTask, bind=True, **work_options(PROBE_TASK))
def anomaly_probe(self: WorkTask, region: str, enqueued_ts: float, hold_ms: float = 0.0) -> None:
    """A stand-in anomaly task: records its wait (enqueued → started), then holds its slot.

    Sent to ``{region}.anomaly`` by the overload benchmark and the integration
    tests, so it takes exactly the path real anomaly work takes.
    """
    handle_probe(self.runtime, (region, enqueued_ts, hold_ms))
