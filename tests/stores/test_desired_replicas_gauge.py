"""The autoscaler's desired replicas per region and work class, exported for KEDA: written
on each refresh, served as ``iotsched_autoscaler_desired_replicas``."""

from __future__ import annotations

import fakeredis
from autoscaler_doubles import FakePool, fake_worker

from iotsched.metrics_cmd import desired_replicas_exposition
from scheduler.pool_sizing import PoolFigures
from scheduler.settings import Settings
from stores.keys import Keys
from workers.autoscaler import QueueDepthAutoscaler
from workers.pool_refresher import desired_replicas_by_class

REGION = "eu-west"


def figures(grants: dict[str, int], region_slots: int) -> PoolFigures:
    return PoolFigures(
        at_ts=0.0, target_slots=region_slots, region_slots=region_slots, grants=grants,
        service_rps_per_slot=10.0, depth={}, arrival_rps={}, reason="test",
    )  # fmt: skip


def test_replicas_round_each_classs_slots_up_to_whole_workers() -> None:
    grants = {"eu-west.premium": 5, "eu-west.standard": 8, "eu-west.screen": 0}
    got = desired_replicas_by_class(REGION, figures(grants, region_slots=13), slots_per_replica=4)
    assert got == {
        "eu-west:premium": 2,
        "eu-west:standard": 2,
        "eu-west:screen": 0,
        "eu-west:all": 4,
    }


def test_a_backlog_shows_in_the_gauge_a_scaler_reads() -> None:
    # Given a worker's autoscaler on (fake) Redis, and a standard backlog
    client = fakeredis.FakeRedis()
    keys = Keys("t")
    worker = fake_worker(region=REGION)
    clock = [1_000_000.0]
    scaler = QueueDepthAutoscaler(
        FakePool(1), 4, 1, worker=worker,
        settings=Settings(key_prefix="t", service_rps_prior=10.0, drain_target_s=2.0),
        client=client, clock=lambda: clock[0], background=False,
    )  # fmt: skip
    for _ in range(4):
        clock[0] += 0.25
        scaler.refresh()
    client.lpush(keys.broker_queue_lists(f"{REGION}.standard")[0], *[b"{}"] * 200)
    for _ in range(2):
        clock[0] += 0.25
        scaler.refresh()

    # When the metrics endpoint renders
    text = desired_replicas_exposition(client, keys)

    # Then the region wants more than one 4-slot worker, per class and in all
    assert scaler.figures is not None and scaler.figures.region_slots > 4
    wanted_all = -(-scaler.figures.region_slots // 4)
    assert (
        f'iotsched_autoscaler_desired_replicas{{region="eu-west",class="all"}} {wanted_all}' in text
    )
    assert 'class="standard"' in text
    assert "# TYPE iotsched_autoscaler_desired_replicas gauge" in text
