"""Routine batches in chunks: preempted, retried, redelivered, accelerated — each reading once."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import fakeredis
import numpy as np
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError
from runtime_doubles import MakeRuntime, RecordingApp

from runtime.runtime import Runtime
from scheduler.codec import encode_batch
from scheduler.latency import percentile_ms
from scheduler.model import Batch, WorkClass
from scheduler.rollup import RollupDelta
from scheduler.routine import STARTED_STAGE
from scheduler.wire import ROUTINE_TASK
from stores.keys import Keys
from stores.preemption_signal import RedisPreemptionSignal
from stores.redis_state import RedisStateStore
from tasks import routine
from tasks.limits import ROUTINE

REGION = "eu-west"
N = 2_500  # three chunks of 1,000: 1,000 + 1,000 + 500


def make_payload(n: int = N, tier: str = "standard", batch_id: str = "b1") -> dict[str, Any]:
    now = time.time()
    batch = Batch(
        batch_id=batch_id,
        region=REGION,
        tier=tier,
        metrics=("value",),
        device_id=np.arange(n, dtype=np.uint64),  # device i sends row i
        ts=np.full(n, now - 1.0),
        values=np.arange(n, dtype=np.float64).reshape(n, 1),
        ingest_ts=np.full(n, now - 0.5),
    )
    # Small chunks keep the arithmetic readable; the scheme does not depend on the size.
    return {**encode_batch(batch), "chunk_readings": 1_000}


class FlakyStore(RedisStateStore):
    """A Redis store whose apply_batch raises ``error`` on the calls numbered in ``fail_on``."""

    def __init__(self, *args: Any, fail_on: set[int], error: BaseException, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls = 0
        self.fail_on = fail_on
        self.error = error

    def apply_batch(
        self,
        batch_id: str,
        tier: str,
        delta: RollupDelta,
        latency: Mapping[str, Mapping[int, int]],
        readings: int,
    ) -> bool:
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.error
        return super().apply_batch(batch_id, tier, delta, latency, readings)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def rt(client: fakeredis.FakeRedis, make_runtime: MakeRuntime) -> Runtime:
    return make_runtime(client, key_prefix="t")


@pytest.fixture
def store(rt: Runtime) -> RedisStateStore:
    assert isinstance(rt.stores.state, RedisStateStore)
    return rt.stores.state


def with_store(rt: Runtime, store: RedisStateStore) -> None:
    """Process with ``store`` (a faulty one) in place of the runtime's state store."""
    rt.stores.state = rt.stores.claims = store


def remainders(app: RecordingApp) -> list[dict[str, Any]]:
    """Payloads of the routine remainders sent back to their queues."""
    return [args[0] for args in app.named(ROUTINE_TASK)]


def run(payload: dict[str, Any]) -> Any:
    return routine.process_routine.apply(args=(payload,)).get(disable_sync_subtasks=False)


def processed(store: RedisStateStore) -> int:
    return store.counters().get("processed:standard", 0)


def wait_anomaly(client: fakeredis.FakeRedis, n: int = 1) -> None:
    for _ in range(n):
        client.lpush(Keys("t").broker_queue(f"{REGION}.anomaly"), b"{}")


def test_batch_applies_every_chunk_once(store: RedisStateStore) -> None:
    # Given a batch of 2,500 readings and nothing waiting
    # When it is processed, then delivered again
    first = run(make_payload())
    again = run(make_payload())
    # Then all readings are applied by the first delivery and none by the second
    assert (first, again) == (N, 0)
    assert processed(store) == store.rollup_count_total() == N
    assert store.counters()["duplicate_deliveries"] == 3


def test_readings_record_their_wait_until_their_task_started(store: RedisStateStore) -> None:
    # Given a batch whose readings were first offered half a second ago
    # When it is processed
    run(make_payload())
    # Then each reading's wait until its task started is recorded beside its whole latency
    started = store.latency_histogram(STARTED_STAGE, "standard")
    whole = store.latency_histogram("ingest", "standard")
    assert sum(started.values()) == sum(whole.values()) == N
    assert (percentile_ms(started, 1) or 0) >= 400.0
    assert (percentile_ms(started, 100) or 0) <= (percentile_ms(whole, 100) or 0)


def test_preempted_batch_defers_its_remainder_and_completes_later(
    store: RedisStateStore, client: fakeredis.FakeRedis, recording_app: RecordingApp
) -> None:
    # Given anomaly work waiting in the region's queue
    wait_anomaly(client)
    # When a standard batch runs
    applied = run(make_payload())
    # Then it applies one chunk and sends the other 1,500 readings back to its queue
    assert applied == 1_000
    assert len(remainders(recording_app)) == 1
    rest = remainders(recording_app)[0]
    assert (rest["id"], rest["chunk0"], rest["n"], rest["attempt"]) == ("b1", 1, 1_500, 1)
    assert store.counters()["deferred_readings"] == 1_500
    # When the anomaly work is gone and the remainder runs
    client.delete(Keys("t").broker_queue(f"{REGION}.anomaly"))
    time.sleep(0.11)  # past the signal's cache interval
    assert run(rest) == 1_500
    # Then every reading is applied once, and a late redelivery of the original changes nothing
    assert run(make_payload()) == 0
    assert processed(store) == store.rollup_count_total() == N


def test_original_redelivered_before_its_remainder_runs_applies_each_chunk_once(
    store: RedisStateStore, client: fakeredis.FakeRedis, recording_app: RecordingApp
) -> None:
    # Given a batch preempted after its first chunk, its remainder still queued
    wait_anomaly(client)
    run(make_payload())
    client.delete(Keys("t").broker_queue(f"{REGION}.anomaly"))
    time.sleep(0.11)
    # When the original message is delivered again (a crash before its ack), then the remainder
    redelivered = run(make_payload())
    remainder = run(remainders(recording_app)[0])
    # Then the redelivery finishes the batch and the remainder finds nothing left to do
    assert (redelivered, remainder) == (1_500, 0)
    assert processed(store) == store.rollup_count_total() == N


def test_accelerated_chunks_are_skipped_by_the_queued_routine_task(
    rt: Runtime, store: RedisStateStore
) -> None:
    # Given a queued routine batch; the anomaly hit devices 2,200 and 2,400 (chunk 2)
    payload = make_payload()
    chunks = routine.chunks_holding(payload, [2_200, 2_400])
    assert chunks == [2]
    # When an anomaly workflow applies chunk 2 now, and the routine task runs later
    accelerated = routine.apply_chunks(rt, payload, chunks)
    routine_applied = run(make_payload())
    # Then the routine task skips the accelerated chunk: every reading applied once
    assert (accelerated, routine_applied) == (500, 2_000)
    assert processed(store) == store.rollup_count_total() == N


def test_transient_failures_retry_then_dead_letter_after_the_budget(
    client: fakeredis.FakeRedis, rt: Runtime
) -> None:
    # Given a store that applies the first chunk, then fails on every call
    store = FlakyStore(
        client, Keys("t"), fail_on=set(range(2, 100)), error=RedisConnectionError("down")
    )
    with_store(rt, store)
    # When the batch runs (retries run eagerly here)
    run(make_payload())
    # Then it was tried 1 + max_retries times on the failing chunk, and the unapplied
    # readings are in the dead-letter stream with their reason, each chunk's readings once
    assert store.calls == 2 + ROUTINE.max_retries
    letters = store.dead_letters()
    assert {dl.reason for dl in letters} == {"retries_exhausted"}
    assert sum(dl.readings for dl in letters) == 1_500
    assert processed(store) + store.counters()["dead_lettered"] == N


def test_transient_failure_then_success_applies_each_reading_once(
    client: fakeredis.FakeRedis, rt: Runtime
) -> None:
    # Given a store that fails twice on the second chunk
    store = FlakyStore(client, Keys("t"), fail_on={2, 3}, error=RedisConnectionError("blip"))
    with_store(rt, store)
    run(make_payload())
    # Then the retries finish the batch and nothing is dead-lettered
    assert processed(store) == store.rollup_count_total() == N
    assert store.dead_letters() == []


def test_soft_time_limit_defers_the_remainder(
    client: fakeredis.FakeRedis, rt: Runtime, recording_app: RecordingApp
) -> None:
    # Given a batch whose third chunk runs into the soft time limit
    store = FlakyStore(client, Keys("t"), fail_on={3}, error=SoftTimeLimitExceeded())
    with_store(rt, store)
    applied = run(make_payload())
    # Then the two finished chunks stay applied and the last one is deferred, not lost
    assert applied == 2_000
    assert [(p["chunk0"], p["n"]) for p in remainders(recording_app)] == [(2, 500)]
    assert store.counters()["deferrals:soft_time_limit"] == 1


def test_signal_asks_standard_first_and_only_as_many_as_wait(
    client: fakeredis.FakeRedis,
) -> None:
    # Given two anomaly tasks waiting and a clock we control
    now = [100.0]
    signal = RedisPreemptionSignal(client, Keys("t"), clock=lambda: now[0])
    wait_anomaly(client, 2)
    # When five standard tasks and a premium one ask
    standard = [signal.should_yield(REGION, WorkClass.STANDARD) for _ in range(5)]
    premium_now = signal.should_yield(REGION, WorkClass.PREMIUM)
    # Then two standard tasks yield, premium carries on, screening never yields
    assert standard == [True, True, False, False, False]
    assert not premium_now
    assert not signal.should_yield(REGION, WorkClass.SCREEN)
    # When the backlog outlives the grace period (standard did not cover it)
    now[0] += 0.25
    client.delete(Keys("t").preempt_tokens(REGION))
    # Then premium yields too
    assert signal.should_yield(REGION, WorkClass.PREMIUM)


def test_signal_reads_redis_at_most_once_per_interval(client: fakeredis.FakeRedis) -> None:
    # Given an empty anomaly queue read once
    now = [0.0]
    signal = RedisPreemptionSignal(client, Keys("t"), clock=lambda: now[0])
    assert signal.anomaly_backlog(REGION) == 0
    # When work arrives, the cached answer holds until the interval has passed
    wait_anomaly(client)
    now[0] += 0.05
    assert signal.anomaly_backlog(REGION) == 0
    now[0] += 0.06
    assert signal.anomaly_backlog(REGION) == 1
