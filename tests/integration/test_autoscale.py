"""Real workers with the queue-depth autoscaler on a private Redis: bursts grow the pool
(and the fleet), their end shrinks it, scale-in drains first, and nothing is lost.

Windows are scaled down through the environment (2 s stabilisation, 0.1 s refresh)
so each test runs in well under 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis

from bench.scale import make_batch
from scheduler.codec import encode_batch
from scheduler.model import queue_name
from scheduler.settings import Settings
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.queue_depth import QueueDepthReader
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from tasks.routine import ROUTINE_TASK
from workers.profiles import region_queues
from workers.supervisor import FleetConfig, Supervisor

pytestmark = pytest.mark.integration

REGION = "eu-west"
FAST_SCALING = {
    "IOTSCHED_REGIONS": REGION,
    "IOTSCHED_SCALE_DOWN_WINDOW_S": "2",
    "IOTSCHED_AUTOSCALE_REFRESH_S": "0.1",
    "IOTSCHED_FORECAST_ALPHA": "0.5",
}


class Deployment:
    """A key prefix on the private Redis: a publisher app, the store, a supervisor."""

    def __init__(self, redis_url: str, prefix: str, fleet: FleetConfig) -> None:
        self.keys = Keys(prefix)
        self.client = redis.Redis.from_url(redis_url)
        self.store = RedisStateStore(self.client, self.keys)
        self.app = broker_app(redis_url, self.keys)
        settings = Settings(redis_url=redis_url, key_prefix=prefix, regions=(REGION,))
        self.sup = Supervisor(settings, fleet, self.app, self.client)
        self.reader = QueueDepthReader(self.client, self.keys)
        self.published = 0
        self.rng = np.random.default_rng(7)

    def publish(self, batches: int, tier: str = "standard", readings: int = 500) -> None:
        for _ in range(batches):
            batch = make_batch(REGION, tier, readings, self.rng)
            self.app.send_task(
                ROUTINE_TASK,
                args=(encode_batch(batch),),
                queue=queue_name(REGION, tier),
                serializer="msgpack",
            )
            self.published += len(batch)

    def processed(self) -> int:
        return processed_readings(self.store.counters())

    def drained(self) -> bool:
        depth = self.reader.sample(region_queues(REGION)).depth
        return sum(depth.values()) == 0 and self.processed() >= self.published

    def pools(self) -> dict[str, Any]:
        return self.sup.heartbeats.read()

    def close(self) -> None:
        self.sup.stop()
        self.app.close()
        self.store.delete_all()


def wait_until(
    cond: Callable[[], bool], timeout_s: float, what: str, tick: Callable[[], Any] | None = None
) -> float:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(0.05)
    return time.monotonic()


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, redis_server: str, key_prefix: str
) -> Iterator[Deployment]:
    fleet: FleetConfig = request.param
    dep = Deployment(redis_server, key_prefix, fleet)
    try:
        yield dep
    finally:
        dep.close()


ONE_WORKER = FleetConfig(
    regions=(REGION,), max_slots=4, min_slots=1, min_replicas=1, max_replicas=1,
    env_extra=FAST_SCALING,
)  # fmt: skip


@pytest.mark.parametrize("deployment", [ONE_WORKER], indirect=True)
def test_a_burst_grows_the_pool_and_its_end_shrinks_it_with_nothing_lost(
    deployment: Deployment,
) -> None:
    # Given one worker running --autoscale 4,1, idle at one slot
    worker = deployment.sup.start_worker(REGION)

    def beat() -> Any:
        return deployment.pools().get(worker.node)

    wait_until(lambda: beat() is not None and beat().slots == 1, 20, "the worker's autoscaler")
    # When a burst of 200 batches lands on its standard queue
    deployment.publish(200)
    # Then the autoscaler grows the pool while the burst is still being worked on
    # (how fast is scale-bench's figure; a loaded CI only bounds the wait)
    at_growth: dict[str, int] = {}

    def grown() -> bool:
        if beat().slots > 1:
            at_growth["processed"] = deployment.processed()
            return True
        return False

    wait_until(grown, 30, "the pool to grow")
    assert at_growth["processed"] < deployment.published
    peak = beat().slots
    # And once the burst is processed, the pool shrinks back to one slot
    wait_until(deployment.drained, 30, "the burst to be processed")
    wait_until(lambda: beat().slots == 1, 20, "the pool to shrink")
    # And every published reading was processed, once
    assert peak > 1
    assert deployment.processed() == deployment.published


SMALL_WORKERS = FleetConfig(
    regions=(REGION,), max_slots=1, min_slots=1, min_replicas=1, max_replicas=2,
    drain_timeout_s=15, env_extra=FAST_SCALING,
)  # fmt: skip


@pytest.mark.parametrize("deployment", [SMALL_WORKERS], indirect=True)
def test_the_supervisor_adds_a_worker_for_a_burst_and_drains_it_afterwards(
    deployment: Deployment,
) -> None:
    sup = deployment.sup
    # Given a supervised region of one-slot workers, at its minimum of one replica
    sup.step()
    assert len(sup.running(REGION)) == 1
    first = sup.running(REGION)[0]
    wait_until(lambda: len(deployment.pools()) == 1, 20, "the first worker", sup.step)
    # When a burst arrives that one slot cannot drain within the target
    deployment.publish(300)
    # Then a second worker is started and the desired count is published for an orchestrator
    wait_until(lambda: len(sup.running(REGION)) == 2, 10, "a second replica", sup.step)
    assert deployment.client.hget(deployment.keys.scaling_replicas, REGION) == b"2"
    second = sup.running(REGION)[-1]
    # And after the burst, the newer worker is drained (stops consuming) and exits warmly
    wait_until(deployment.drained, 40, "the burst to be processed", sup.step)
    wait_until(lambda: second.proc.poll() is not None, 25, "the drained worker to exit", sup.step)
    assert second.draining_since_ts is not None
    assert second.proc.returncode == 0
    assert [w.node for w in sup.running(REGION)] == [first.node]
    assert deployment.client.hget(deployment.keys.scaling_replicas, REGION) == b"1"
    # And every published reading was processed
    assert deployment.processed() == deployment.published


TWO_WORKERS = FleetConfig(
    regions=(REGION,), max_slots=2, min_slots=1, min_replicas=2, max_replicas=2,
    drain_timeout_s=15, env_extra=FAST_SCALING,
)  # fmt: skip


@pytest.mark.parametrize("deployment", [TWO_WORKERS], indirect=True)
def test_a_worker_drained_mid_burst_finishes_its_work_and_exits_with_nothing_lost(
    deployment: Deployment,
) -> None:
    sup = deployment.sup
    # Given two workers of a region sharing a burst
    older, newer = sup.start_worker(REGION), sup.start_worker(REGION)
    wait_until(lambda: len(deployment.pools()) == 2, 20, "both workers")
    deployment.publish(300)
    wait_until(lambda: deployment.pools()[newer.node].finished > 5, 10, "the newer worker's share")
    # When the newer one is drained while the burst is still being processed
    sup.drain(newer)
    # Then it stops consuming, holds nothing once its in-flight work is done, and exits warmly
    wait_until(
        lambda: newer.proc.poll() is not None, 25, "the drained worker to exit",
        lambda: sup.finish_drains(deployment.pools(), time.time()),
    )  # fmt: skip
    assert newer.proc.returncode == 0
    # And the other worker processes the rest: every published reading, none lost
    wait_until(deployment.drained, 30, "the rest of the burst")
    assert older.proc.poll() is None
    assert deployment.processed() == deployment.published
