"""The Celery autoscaler: decisions from cached figures, refreshed from (fake) Redis."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from autoscaler_doubles import NODE, REGION, Clock, FakePool, fake_worker, refresh_for

from scheduler.pool_sizing import PoolFigures
from scheduler.settings import Settings
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats
from workers.autoscaler import QueueDepthAutoscaler, autoscaler_options

STANDARD = f"{REGION}.standard"


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        key_prefix="t",
        service_rps_prior=10.0,
        drain_target_s=2.0,
        scale_down_window_s=5.0,
        forecast_alpha=0.5,
        autoscale_refresh_s=0.25,
    )
    return Settings(**{**base, **overrides})


def scaler_for(
    client: Any, clock: Clock, pool: FakePool, bounds: tuple[int, int] = (8, 1), **cfg: Any
) -> QueueDepthAutoscaler:
    return QueueDepthAutoscaler(
        pool, bounds[0], bounds[1], worker=fake_worker(), settings=settings(**cfg),
        client=client, clock=clock, background=False,
    )  # fmt: skip


def push(client: fakeredis.FakeRedis, queue: str, n: int) -> None:
    client.lpush(Keys("t").broker_queue_lists(queue)[0], *[b"{}"] * n)


def test_a_backlog_grows_the_pool_at_once_and_its_end_shrinks_it_after_the_window() -> None:
    # Given an idle worker at its minimum of 1 slot (prior: 10 tasks/s per slot)
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    scaler = scaler_for(client, clock, pool)
    refresh_for(scaler, clock, 1.0)
    assert pool.num_processes == 1
    # When 60 batches land on its standard queue
    push(client, STANDARD, 60)
    refresh_for(scaler, clock, 0.25)
    # Then the next refresh sizes the pool for the backlog and the loop grows it at once
    assert pool.num_processes == 8
    assert pool.calls == ["grow 7"]
    # When workers keep taking 120 messages/s off the queue for 3 s, then arrivals stop
    client.delete(*Keys("t").broker_queue_lists(STANDARD))
    for _ in range(12):
        client.hincrby(Keys("t").scaling_taken, STANDARD, 30)
        refresh_for(scaler, clock, 0.25)
    assert pool.num_processes == 8
    refresh_for(scaler, clock, 4.0)
    # Then within the 5 s stabilisation window the pool keeps its size
    assert pool.num_processes == 8
    # And once the window (and the load's smoothed level) has passed, it shrinks to 1
    refresh_for(scaler, clock, 10.0)
    assert pool.num_processes == 1
    assert pool.calls[-1].startswith("shrink")


def test_the_region_budget_caps_the_pool_below_its_max() -> None:
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    scaler = scaler_for(client, clock, pool, bounds=(8, 1), region_budget_slots=3)
    refresh_for(scaler, clock, 0.5)
    push(client, STANDARD, 500)
    refresh_for(scaler, clock, 0.5)
    assert pool.num_processes == 3
    assert scaler.figures is not None
    assert scaler.figures.grants[STANDARD] == 3


def test_the_premium_guarantee_is_granted_before_standard_demand() -> None:
    # Given a budget of 4 with 2 slots guaranteed to premium, and both tiers backlogged
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    scaler = scaler_for(client, clock, pool, region_budget_slots=4, premium_guarantee_slots=2)
    refresh_for(scaler, clock, 0.5)
    push(client, STANDARD, 500)
    push(client, f"{REGION}.premium", 500)
    refresh_for(scaler, clock, 0.5)
    # Then premium keeps its guarantee and the pool stays within the budget
    assert scaler.figures is not None
    assert scaler.figures.grants[f"{REGION}.premium"] >= 2
    assert pool.num_processes == 4


def test_workers_of_a_region_split_its_slots_evenly() -> None:
    # Given a second worker of the region reporting a fresh heartbeat
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    scaler = scaler_for(client, clock, pool, bounds=(64, 1))
    peer = PoolBeat(
        node="data-eu-west-2@host", region=REGION, slots=1, busy=0, busy_s=0.0, finished=0, held=0,
        max_slots=16, min_slots=1, target_slots=1, region_slots=1, service_rps=10.0, consuming=True,
        at_ts=clock.now_ts,
    )  # fmt: skip
    beats = PoolHeartbeats(client, Keys("t"))
    beats.exchange(peer)
    refresh_for(scaler, clock, 0.5)
    # When a backlog arrives
    push(client, STANDARD, 120)
    beats.exchange(PoolBeat(**{**peer.__dict__, "at_ts": clock.now_ts}))
    refresh_for(scaler, clock, 0.25)
    # Then this worker takes its half of what the region needs
    assert scaler.figures is not None
    assert pool.num_processes == -(-scaler.figures.region_slots // 2)
    assert scaler.figures.region_slots > pool.num_processes


def test_a_draining_worker_adds_no_slots_and_says_so() -> None:
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    scaler = scaler_for(client, clock, pool)
    refresh_for(scaler, clock, 0.5)
    # When the worker is told to stop consuming its queues while a backlog waits
    scaler.worker.app.amqp.queues.consume_from.clear()
    push(client, STANDARD, 200)
    refresh_for(scaler, clock, 0.5)
    # Then it does not grow, and its heartbeat says it is not consuming
    assert pool.num_processes == 1
    beat = PoolHeartbeats(client, Keys("t")).read()[NODE]
    assert not beat.consuming
    assert beat.held == 0


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: any Redis call hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_the_event_loop_acts_on_cached_figures_without_waiting_for_redis(
    silent_redis: str,
) -> None:
    # Given an autoscaler whose Redis never answers, refreshing in the background
    clock, pool = Clock(), FakePool(1)
    client = redis.Redis.from_url(silent_redis, socket_timeout=3.0)
    scaler = QueueDepthAutoscaler(
        pool, 8, 1, worker=fake_worker(), settings=settings(), client=client, clock=clock
    )
    try:
        # When the loop calls it before any figures exist: it returns at once, unchanged
        # (well inside the 3 s a Redis call would block for, with slack for a loaded CI)
        started = time.monotonic()
        scaler.maybe_scale()
        assert time.monotonic() - started < 1.0
        assert pool.num_processes == 1
        # When figures the refresher left earlier ask for 3 slots
        scaler.figures = PoolFigures(
            at_ts=clock.now_ts, target_slots=3, region_slots=3, grants={STANDARD: 3},
            service_rps_per_slot=10.0, depth={STANDARD: 60}, arrival_rps={}, reason="test",
        )  # fmt: skip
        started = time.monotonic()
        scaler.maybe_scale()
        # Then the loop grows the pool from them at once, without a Redis reply
        assert time.monotonic() - started < 1.0
        assert pool.num_processes == 3
        # And figures gone stale (Redis still silent) are not acted on: the pool holds
        scaler.figures = PoolFigures(**{**scaler.figures.__dict__, "target_slots": 1})
        clock.now_ts += 10.0
        scaler.maybe_scale()
        assert pool.num_processes == 3
    finally:
        scaler.stop()


def test_autoscaler_options_are_celery_worker_arguments() -> None:
    assert autoscaler_options(8, 2) == {
        "autoscale": "8,2",
        "autoscaler_cls": "workers.autoscaler:QueueDepthAutoscaler",
    }
    with pytest.raises(ValueError):
        autoscaler_options(2, 3)
