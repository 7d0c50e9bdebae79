"""Routine processing: a batch becomes per-device, per-minute rollups, chunk by chunk, once.

Chunks and claims — why a reading is never lost and never applied twice
-----------------------------------------------------------------------
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
  claim, stream entry and count in one transaction (tasks/deadletter.py): a
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
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_failure

from runtime.runtime import Runtime
from scheduler import defaults
from scheduler.codec import decode_batch, encode_batch
from scheduler.errors import ConfigError, InvalidBatch
from scheduler.model import Batch, DeadLetter, WorkClass
from scheduler.preemption import PreemptionConfig, PreemptionPolicy
from scheduler.registry import Registry
from scheduler.routine import routine_effects
from scheduler.validation import REASON_CODE, REASONS

# Re-exported: benches still name them here.
from scheduler.wire import PROBE_TASK as PROBE_TASK
from scheduler.wire import ROUTINE_TASK as ROUTINE_TASK
from tasks.app import app
from tasks.deadletter import dead_letter_payload
from tasks.limits import ROUTINE, TRANSIENT_ERRORS, task_options

#: What giving up may meet: the store gone, or refusing writes; the ledger keeps the batch.
_STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *TRANSIENT_ERRORS)
#: Soft time limits hit without finishing a single chunk before the rest is dead-lettered.
MAX_STALLS = 3

LOGGER = logging.getLogger(__name__)


def claim_id(batch_id: str, chunk_index: int) -> str:
    return f"{batch_id}#{chunk_index}"


@dataclass
class ChunkCursor:
    """A routine message's readings and how far through its chunks the task is."""

    batch: Batch
    #: Index of this message's first chunk in the original batch's plan.
    chunk0: int
    chunk_readings: int
    #: Soft time limits this batch hit without progress so far.
    stalls: int = 0
    #: Chunks of this message finished (applied now, or found claimed).
    done: int = 0
    applied_readings: int = 0
    skipped_readings: int = 0
    #: Readings of this message dead-lettered by re-validation.
    invalid_readings: int = 0

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ChunkCursor:
        batch = decode_batch(payload)
        try:
            chunk0 = int(payload.get("chunk0", 0))
            size = int(payload.get("chunk_readings", defaults.ROUTINE_CHUNK_READINGS))
            stalls = int(payload.get("stalls", 0))
        except (TypeError, ValueError) as exc:
            raise InvalidBatch(f"bad chunk fields: {exc}") from exc
        if chunk0 < 0 or size < 1:
            raise InvalidBatch(f"bad chunk fields: chunk0={chunk0} chunk_readings={size}")
        return cls(batch, chunk0, size, stalls)

    @cached_property
    def plan(self) -> list[slice]:
        return PreemptionPolicy(PreemptionConfig(chunk_readings=self.chunk_readings)).plan_chunks(
            len(self.batch)
        )

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self.batch) / self.chunk_readings)

    @property
    def finished(self) -> bool:
        return self.done >= self.n_chunks

    def chunk(self, k: int) -> Batch:
        """Chunk ``k`` of this message, under its claim id in the original plan."""
        return self.batch.take(self.plan[k], claim_id(self.batch.batch_id, self.chunk0 + k))

    def rest_payload(self, stalled: bool = False) -> dict[str, Any]:
        """The unfinished chunks as a message of their own (same batch id, original indexes)."""
        start = self.done * self.chunk_readings
        rest = self.batch.take(slice(start, len(self.batch)), self.batch.batch_id)
        rest.attempt = self.batch.attempt + 1
        payload = encode_batch(rest)
        payload.update(
            chunk0=self.chunk0 + self.done,
            chunk_readings=self.chunk_readings,
            stalls=self.stalls + 1 if stalled else 0,
        )
        return payload

    def rest_claim_ids(self) -> list[tuple[str, int]]:
        plan = self.plan
        return [
            (claim_id(self.batch.batch_id, self.chunk0 + k), plan[k].stop - plan[k].start)
            for k in range(self.done, self.n_chunks)
        ]


def invalid_rows(batch: Batch, registry: Registry | None) -> npt.NDArray[np.uint8]:
    """Reason code per row (0 = fine): not finite, or a device the registry does not know."""
    reason = np.zeros(len(batch), dtype=np.uint8)
    if registry is not None:
        reason[registry.lookup(batch.device_id) < 0] = REASON_CODE["unknown_device"]
    finite = np.isfinite(batch.ts) & np.isfinite(batch.values).all(axis=1)
    reason[~finite] = REASON_CODE["not_finite"]
    return reason


def _dead_letter_invalid(rt: Runtime, chunk: Batch, reason: npt.NDArray[np.uint8]) -> None:
    letters = []
    for code in np.unique(reason[reason > 0]).tolist():
        rows = chunk.take(np.flatnonzero(reason == code), chunk.batch_id)
        raw = msgpack.packb(encode_batch(rows), use_bin_type=True)
        name = REASONS[code]
        detail = "re-validated by the worker"
        letter = DeadLetter(name, detail, raw, ROUTINE_TASK, time.time(), len(rows))
        letters.append((f"{chunk.batch_id}!{name}", letter))
    rt.stores.claims.dead_letter_claimed(letters)


def apply_chunk(rt: Runtime, cursor: ChunkCursor) -> bool:
    """Apply the cursor's next chunk; False when it had been applied before."""
    chunk = cursor.chunk(cursor.done)
    reason = invalid_rows(chunk, _registry(rt))
    if reason.any():
        _dead_letter_invalid(rt, chunk, reason)
        cursor.invalid_readings += int(np.count_nonzero(reason))
        chunk = chunk.take(np.flatnonzero(reason == 0), chunk.batch_id)
        if len(chunk) == 0:
            cursor.done += 1
            return False
    effects = routine_effects(chunk, processed_ts=rt.clock())
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
    cursor = ChunkCursor.from_payload(payload)
    wanted = None if chunk_indexes is None else set(chunk_indexes)
    applied = 0
    for k in range(cursor.n_chunks):
        cursor.done = k
        if wanted is None or cursor.chunk0 + k in wanted:
            before = cursor.applied_readings
            apply_chunk(rt, cursor)
            applied += cursor.applied_readings - before
    return applied


def chunks_holding(payload: dict[str, Any], device_ids: Iterable[int]) -> list[int]:
    """Original-plan indexes of the payload's chunks that hold any of ``device_ids``."""
    cursor = ChunkCursor.from_payload(payload)
    wanted = np.fromiter(device_ids, dtype=np.uint64)
    hit = np.flatnonzero(np.isin(cursor.batch.device_id, wanted))
    return sorted({cursor.chunk0 + int(i) // cursor.chunk_readings for i in hit})


def _registry(rt: Runtime) -> Registry | None:
    """The device registry, or None where none is stored (task tests without a fleet)."""
    try:
        return rt.registry.get()
    except ConfigError:
        return None


def store_refused(exc: BaseException) -> bool:
    """Redis refused a write: ``maxmemory`` reached (OOM), or the whole transaction aborted."""
    return isinstance(exc, redis.ResponseError) and (
        str(exc).startswith("OOM") or isinstance(exc, redis.exceptions.ExecAbortError)
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
    except _STORE_ERRORS as exc:
        LOGGER.warning(
            "batch %s left to the in-flight ledger: dead-lettering failed: %r",
            cursor.batch.batch_id,
            exc,
        )


@app.task(
    name=ROUTINE_TASK,
    bind=True,
    # Hard time limit: ack, and the failure handler dead-letters what is left.
    acks_on_timeout=True,
    # A pool process lost mid-batch (OOM, kill) retries, up to the retry budget, soon
    # (Celery's default delay for that retry is three minutes).
    retry_on_worker_lost=True,
    default_retry_delay=1,
    **task_options("routine"),
)
def process_routine(self: Task, payload: dict[str, Any]) -> int:
    """Returns the number of readings applied by this delivery."""
    rt: Runtime = app.runtime
    try:
        cursor = ChunkCursor.from_payload(payload)
    except InvalidBatch as exc:
        dead_letter_payload(rt.stores.state, payload, "invalid_batch", str(exc), ROUTINE_TASK)
        _settle_if_named(rt, payload)
        return 0
    batch = cursor.batch
    signal = rt.stores.preemption
    work = work_class(batch.tier)
    try:
        while not cursor.finished:
            if cursor.done > 0 and signal.should_yield(batch.region, work):
                _defer(rt, cursor, "preempted")
                return cursor.applied_readings
            apply_chunk(rt, cursor)
        rt.stores.inflight.done(batch.batch_id)
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
        if ROUTINE.exhausted(self.request.retries):
            _give_up(rt, cursor, "retries_exhausted", repr(exc))
            return cursor.applied_readings
        raise self.retry(
            args=(cursor.rest_payload(),),
            countdown=ROUTINE.backoff_s(self.request.retries),
            exc=exc,
        ) from exc
    except Exception as exc:  # a bug or bad data: keep the readings, with the reason
        LOGGER.exception("routine batch %s failed", batch.batch_id)
        _give_up(rt, cursor, "task_error", repr(exc))
    return cursor.applied_readings


def _settle_if_named(rt: Runtime, payload: Any) -> None:
    """An undecodable payload that still names its batch leaves the in-flight ledger."""
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        rt.stores.inflight.done(payload["id"])


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
    try:
        cursor = ChunkCursor.from_payload(args[0])
    except InvalidBatch:
        dead_letter_payload(
            rt.stores.state, args[0], "invalid_batch", repr(exception), ROUTINE_TASK
        )
        return
    _give_up(rt, cursor, type(exception).__name__, repr(exception))


@app.task(name=PROBE_TASK, acks_late=True, soft_time_limit=5, time_limit=10)
def anomaly_probe(region: str, enqueued_ts: float, hold_ms: float = 0.0) -> None:
    """A stand-in anomaly task: records its wait (enqueued → started), then holds its slot.

    Sent to ``{region}.anomaly`` by the overload benchmark and the integration
    tests, so it takes exactly the path real anomaly work takes.
    """
    rt: Runtime = app.runtime
    rt.stores.preemption.record_anomaly_start(region, enqueued_ts, rt.clock())
    if hold_ms > 0:
        time.sleep(hold_ms / 1e3)
