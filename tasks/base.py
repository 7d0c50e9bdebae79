"""The base of every task: a task body is one call of a handler with the Runtime.

``WorkTask.work(handler, payload)`` runs ``handler(runtime, payload)`` with the
process's Runtime and applies the task's row of ``tasks.limits``: a transient
failure (``TRANSIENT_ERRORS``) is retried with the table's backoff until the retry
budget is spent, then the work is dead-lettered with the table's reason (or given
up quietly where it is redone anyway). A handler that knows better what to retry
(routine: only its unfinished chunks) raises ``RetryLater``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import redis
from celery import Task

from runtime.runtime import Runtime
from scheduler.latency import bucket_counts
from scheduler.model import DeadLetter
from tasks.limits import LIMITS, TRANSIENT_ERRORS, TaskLimits

LOGGER = logging.getLogger(__name__)

Handler = Callable[[Runtime, Any], Any]
#: What to do with work past its retry budget: given the Runtime and the last failure.
GiveUp = Callable[[Runtime, BaseException], Any]


class RetryLater(Exception):
    """Raised by a handler when a transient failure interrupted it: ``args`` is what to
    run again, ``give_up`` what to do instead past the retry budget."""

    def __init__(self, cause: BaseException, args: tuple[Any, ...], give_up: GiveUp) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.retry_args = args
        self.give_up = give_up


class WorkTask(Task):  # type: ignore[misc]
    """A task with a kind of work (a row of ``tasks.limits.LIMITS``)."""

    #: Set per task by ``work_options`` (Celery copies task options onto the class).
    kind: str = ""

    @property
    def limits(self) -> TaskLimits:
        return LIMITS[self.kind]

    @property
    def runtime(self) -> Runtime:
        rt: Runtime = self.app.runtime
        return rt

    def work(self, handler: Handler, payload: Any) -> Any:
        rt = self.runtime
        try:
            return handler(rt, payload)
        except RetryLater as later:
            cause, args, give_up = later.cause, later.retry_args, later.give_up
        except TRANSIENT_ERRORS as exc:
            cause, args = exc, (payload,)
            give_up = self._giving_up(payload)
        retries = int(self.request.retries or 0)
        if self.limits.exhausted(retries):
            return give_up(rt, cause)
        raise self.retry(args=args, countdown=self.limits.backoff_s(retries), exc=cause) from cause

    def _giving_up(self, payload: Any) -> GiveUp:
        def give_up(rt: Runtime, exc: BaseException) -> int:
            reason = self.limits.exhausted_reason
            if reason is None:
                LOGGER.warning("%s gave up after %d retries: %r", self.name, self.max_retries, exc)
                return 0
            dead_letter_copy(rt, payload, reason, repr(exc), str(self.name))
            if isinstance(payload, dict):
                # Routine and screening payloads are recorded under their batch id,
                # alerts under the ledger id they carry (``Publisher.send_alerts``).
                ledger_id = payload.get("ledger_id", payload.get("id"))
                if isinstance(ledger_id, str):
                    rt.stores.inflight.done(ledger_id)
            return 0

        return give_up


def dead_letter_copy(rt: Runtime, payload: Any, reason: str, detail: str, source: str) -> None:
    """Keep a payload that is not the readings' only copy: it adds no dead-lettered readings
    (the routine copy of the batch accounts for them)."""
    try:
        raw = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError):
        raw = repr(payload).encode()
    letter = DeadLetter(reason, detail, raw, source, time.time(), readings=0)
    rt.stores.state.add_dead_letters([letter])


#: What a store write may raise: the store gone, or refusing writes (``maxmemory``).
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *TRANSIENT_ERRORS)


def record_service(
    rt: Runtime, spent_us_key: str, readings_key: str, from_s: float, readings: int
) -> None:
    """Add a finished task's service time (since ``from_s``, ``time.perf_counter``) and
    readings to the counters (``scheduler.screen_cost`` reads them). The task's work is
    already committed: a measurement lost to a store error is harmless, a failed task over
    it is not."""
    spent_us = round((time.perf_counter() - from_s) * 1e6)
    try:
        rt.stores.state.incr_counters({spent_us_key: spent_us, readings_key: readings})
    except STORE_ERRORS as exc:
        LOGGER.debug("service of a task not recorded (%s): %r", spent_us_key, exc)


def timed(stage: str, handler: Handler) -> Handler:
    """``handler``, recording how long each run held its worker slot (ms) under ``stage``
    (the work ranked below premium that a premium batch may still wait behind)."""

    def run(rt: Runtime, payload: Any) -> Any:
        started = time.perf_counter()
        try:
            return handler(rt, payload)
        finally:
            run_ms = np.array([(time.perf_counter() - started) * 1000.0])
            rt.stores.detector.add_latency(stage, bucket_counts(run_ms))

    return run
