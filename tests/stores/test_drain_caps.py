"""The maintenance pre-drain level, as the autoscaler and the supervisor apply it."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from autoscaler_doubles import Clock, FakePool, fake_worker, refresh_for

from scheduler.settings import Settings
from stores.keys import Keys
from workers.autoscaler import QueueDepthAutoscaler
from workers.supervisor import FleetConfig, cap_replicas, data_cap_slots

REGION = "eu-west"
STANDARD = f"{REGION}.standard"
KEYS = Keys("t")


def scaler(client: Any, clock: Clock, pool: FakePool) -> QueueDepthAutoscaler:
    worker = fake_worker(region=REGION)
    cfg = Settings(key_prefix="t", region_budget_slots=8, scale_down_window_s=5.0)
    return QueueDepthAutoscaler(
        pool, 8, 1, worker=worker, settings=cfg, client=client, clock=clock, background=False
    )


def test_the_pool_shrinks_for_a_drain_level_and_grows_back_when_it_is_lifted() -> None:
    # Given a worker whose backlog fills the region budget of 8
    client, clock, pool = fakeredis.FakeRedis(), Clock(), FakePool(1)
    s = scaler(client, clock, pool)
    refresh_for(s, clock, 0.5)
    client.lpush(KEYS.broker_queue_lists(STANDARD)[0], *[b"{}"] * 1_000)
    refresh_for(s, clock, 0.5)
    assert pool.num_processes == 8
    # When the maintenance tick publishes a pre-drain level of 3 for the region
    client.hset(KEYS.maintenance_drain, mapping={REGION: 3, "us-east": 8})
    refresh_for(s, clock, 0.25)
    # Then within one refresh the pool gives up those slots, the backlog notwithstanding
    assert pool.num_processes == 5
    assert s.figures is not None and s.figures.maintenance_slots == 3
    # When the window is over and the level drops to 0, the pool takes them back at once
    client.hset(KEYS.maintenance_drain, REGION, 0)
    refresh_for(s, clock, 0.25)
    assert pool.num_processes == 8


@pytest.mark.parametrize(
    ("drain", "premium_guarantee", "cap"),
    [(0, 0, 8), (3, 0, 5), (8, 0, 0), (8, 2, 2), (20, 2, 2), (-1, 0, 8)],
)
def test_data_cap_is_the_budget_less_the_drain_never_into_the_premium_guarantee(
    drain: int, premium_guarantee: int, cap: int
) -> None:
    cfg = Settings(region_budget_slots=8, premium_guarantee_slots=premium_guarantee)
    assert data_cap_slots(cfg, drain) == cap


@pytest.mark.parametrize(
    ("replicas", "cap", "expected"),
    [(3, None, 3), (3, 12, 3), (3, 5, 2), (3, 4, 1), (1, 0, 0), (2, 1, 1)],
)
def test_replicas_are_capped_to_what_the_data_cap_can_employ(
    replicas: int, cap: int | None, expected: int
) -> None:
    # Given workers of 4 slots each
    fleet = FleetConfig(regions=(REGION,), max_slots=4, min_replicas=2)
    assert cap_replicas(replicas, fleet, cap) == expected
