"""Queue depth, the preemption signal and region health read the same in Redis and memory."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.model import WorkClass
from stores.bundle import Stores

FillQueue = Callable[[str, int], None]


def test_queue_depth_counts_the_messages_waiting(stores: Stores, fill_queue: FillQueue) -> None:
    fill_queue("eu.anomaly", 3)
    assert stores.queue_depth.depths(["eu.anomaly", "us.anomaly"]) == {
        "eu.anomaly": 3,
        "us.anomaly": 0,
    }


def test_no_anomaly_backlog_means_nothing_yields(stores: Stores) -> None:
    assert not stores.preemption.should_yield("eu", WorkClass.STANDARD)
    assert not stores.preemption.should_yield("eu", WorkClass.PREMIUM)


def test_an_anomaly_backlog_makes_standard_work_yield_one_slot_per_waiting_task(
    stores: Stores, fill_queue: FillQueue
) -> None:
    fill_queue("eu.anomaly", 1)
    yields = [stores.preemption.should_yield("eu", WorkClass.STANDARD) for _ in range(3)]
    assert yields == [True, False, False]
    # Another region's routine work is not asked.
    assert not stores.preemption.should_yield("us", WorkClass.STANDARD)


def test_anomaly_start_waits_are_recorded_per_region(stores: Stores) -> None:
    stores.preemption.record_anomaly_start("eu", enqueued_ts=10.0, started_ts=10.2)
    stores.preemption.record_anomaly_start("eu", enqueued_ts=10.0, started_ts=10.2)
    assert sum(stores.preemption.anomaly_start_histogram("eu").values()) == 2
    assert stores.preemption.anomaly_start_histogram("us") == {}


def test_heartbeats_and_queued_messages_make_the_region_snapshot(
    stores: Stores, fill_queue: FillQueue
) -> None:
    stores.health.beat(["eu"], now_ts=1_000.5)
    fill_queue("eu.premium", 2)
    fill_queue("eu.standard", 1)
    snap = stores.health.snapshot()
    assert dict(snap.heartbeat_ts) == {"eu": 1_000.5}
    assert dict(snap.queued_messages) == {"eu": 3, "us": 0}
    assert stores.health.heartbeats() == {"eu": 1_000.5}
