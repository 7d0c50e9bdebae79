"""The default layout gives each region a premium lane, with real workers on a private Redis.

A region started the default way (``LocalCluster``, as ``bench``, ``storm-bench`` and
``mqtt-bench`` start it) runs a data worker and a premium lane. The lane consumes premium
work only, so a long standard batch holding the data worker does not hold premium; the
data worker gives way on the CPU (a higher niceness), the lane does not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from routine_batches import send_routine_batch

from bench.worker_launch import wait_for, wait_workers_ready
from scheduler.model import queue_name
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster

pytestmark = pytest.mark.integration

REGION = "eu-west"
#: About 2 s of one process's work on a quiet machine (150,000 take about half a second).
LONG_READINGS = 600_000
PREMIUM_READINGS = 200
#: Set explicitly, so the step is tested whatever the default is.
NICE = 5


class Region:
    def __init__(self, redis_url: str, prefix: str, cluster: LocalCluster) -> None:
        self.keys = Keys(prefix)
        self.client = redis.Redis.from_url(redis_url)
        self.store = RedisStateStore(self.client, self.keys)
        self.app = broker_app(redis_url, self.keys)
        self.cluster = cluster
        self.rng = np.random.default_rng(3)
        self.serial = 0

    def publish(self, tier: str, readings: int) -> None:
        """One routine batch of ``tier``, stamped as ingested now."""
        self.serial += 1
        batch_id = f"lane-{tier}-{self.serial}"
        send_routine_batch(self.app, self.store, self.rng, batch_id, REGION, tier, readings)

    def processed(self, tier: str) -> int:
        return int(self.store.counters().get(f"processed:{tier}", 0))

    def depth(self, tier: str) -> int:
        return int(self.client.llen(self.keys.broker_queue(queue_name(REGION, tier))))


@pytest.fixture(scope="module")
def region(redis_server: str) -> Iterator[Region]:
    prefix = f"t-lane-{uuid.uuid4().hex[:8]}"
    # Given one region started with the defaults (no layout option passed)
    cluster = LocalCluster(
        redis_server,
        prefix,
        (REGION,),
        env_extra={
            "IOTSCHED_SCREENING": "0",
            "IOTSCHED_REGIONS": REGION,
            "IOTSCHED_ROUTINE_WORKER_NICE": str(NICE),
        },
    )
    r = Region(redis_server, prefix, cluster)
    cluster.start()
    try:
        assert wait_workers_ready(r.app, cluster.node_count), "workers did not start"
        yield r
    finally:
        cluster.stop()
        r.app.close()
        r.store.delete_all()


def test_each_region_runs_a_premium_lane_that_takes_premium_work_only(region: Region) -> None:
    # When the workers are asked which queues they consume
    replies = region.app.control.inspect(timeout=5.0).active_queues() or {}
    consumed = {node.split("@")[0]: {q["name"] for q in qs} for node, qs in replies.items()}
    # Then the region has its data worker and a premium lane beside it, and the lane
    # takes premium processing and premium screening, nothing that could hold it long
    assert set(consumed) == {f"data-{REGION}", f"premium-{REGION}"}
    assert consumed[f"premium-{REGION}"] == {f"{REGION}.premium", f"{REGION}.screen_premium"}
    assert f"{REGION}.standard" in consumed[f"data-{REGION}"]


def test_the_data_worker_gives_way_on_the_cpu_and_the_lane_does_not(region: Region) -> None:
    # Given the niceness this test runs at (the workers started from it)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    procs = region.cluster.procs
    # Then the data worker lowered its priority by the step before forking its
    # pool (children included), and the premium lane kept it
    data = procs[f"data-{REGION}"].pid
    lane = procs[f"premium-{REGION}"].pid
    for pid in [data, *children(data)]:
        assert os.getpriority(os.PRIO_PROCESS, pid) == own + NICE
    for pid in [lane, *children(lane)]:
        assert os.getpriority(os.PRIO_PROCESS, pid) == own


def test_premium_is_processed_while_a_long_standard_batch_holds_the_data_worker(
    region: Region,
) -> None:
    done_before = region.processed("standard")
    # Given the data worker busy with a long standard batch (taken off its queue)
    region.publish("standard", LONG_READINGS)
    wait_for(lambda: region.depth("standard") == 0, 60, "the data worker to take the batch")
    # When a premium batch arrives
    premium_before = region.processed("premium")
    region.publish("premium", PREMIUM_READINGS)
    wait_for(
        lambda: region.processed("premium") >= premium_before + PREMIUM_READINGS,
        60,
        "the premium batch",
    )
    # Then premium was processed before the standard batch ended: it did not wait for it
    assert region.processed("standard") < done_before + LONG_READINGS
    # And the standard batch still completes
    wait_for(
        lambda: region.processed("standard") >= done_before + LONG_READINGS,
        120,
        "the long standard batch",
    )


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the prefork pool)."""
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(x) for x in f.read().split()]
