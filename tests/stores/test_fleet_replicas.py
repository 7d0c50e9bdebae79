"""How many worker replicas a region wants, from its autoscalers' heartbeats."""

from __future__ import annotations

import json
from dataclasses import replace

import fakeredis
import pytest

from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats, pool_share
from workers.supervisor import FleetConfig, compose_scale_args, desired_replicas

NOW = 1_000_000.0
CFG = FleetConfig(regions=("eu-west", "us-east"), max_slots=4, min_replicas=1, max_replicas=5)


def beat(node: str, region: str = "eu-west", region_slots: int | None = 4, age_s: float = 0.0,
         consuming: bool = True) -> PoolBeat:  # fmt: skip
    return PoolBeat(
        node=node, region=region, slots=1, busy=0, busy_s=0.0, finished=0, held=0,
        max_slots=4, min_slots=1, target_slots=1, region_slots=region_slots,
        service_rps=10.0, consuming=consuming, at_ts=NOW - age_s,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("beats", "expected"),
    [
        ([], None),  # nobody reports: the supervisor keeps what runs
        ([beat("a", region_slots=None)], None),  # warming up
        ([beat("a", region_slots=1)], 1),
        ([beat("a", region_slots=4)], 1),  # exactly one full worker
        ([beat("a", region_slots=5)], 2),
        ([beat("a", region_slots=0)], 1),  # never below min_replicas
        ([beat("a", region_slots=64)], 5),  # never above max_replicas
        ([beat("a", region_slots=3), beat("b", region_slots=9)], 3),  # the latest, largest view
        ([beat("a", region_slots=9, age_s=60)], None),  # a gone worker's figure is ignored
        ([beat("a", region="us-east", region_slots=20)], None),  # another region's
    ],
)
def test_desired_replicas(beats: list[PoolBeat], expected: int | None) -> None:
    assert desired_replicas("eu-west", beats, CFG, NOW, fresh_s=3.0) == expected


def test_compose_arguments_name_one_service_per_region() -> None:
    assert compose_scale_args({"us-east": 1, "eu-west": 3}) == (
        "--scale worker-eu-west=3 --scale worker-us-east=1"
    )


def test_heartbeats_round_trip_and_peers_share_by_rank() -> None:
    # Given three workers' beats, one of them draining and one from another region
    beats = PoolHeartbeats(fakeredis.FakeRedis(), Keys("t"))
    beats.exchange(beat("w2@h"))
    beats.exchange(beat("w3@h", consuming=False))
    beats.exchange(beat("x@h", region="us-east"))
    everyone = beats.exchange(beat("w1@h"))
    # Then each beat reads back as written
    assert everyone["w2@h"] == beat("w2@h")
    # And the consuming workers of the region rank themselves by name
    assert pool_share("w1@h", "eu-west", everyone, NOW, fresh_s=3.0) == (0, 2)
    assert pool_share("w2@h", "eu-west", everyone, NOW, fresh_s=3.0) == (1, 2)
    # And a worker that forgot its beat no longer counts
    beats.forget("w2@h")
    assert pool_share("w1@h", "eu-west", beats.read(), NOW, fresh_s=3.0) == (0, 1)


def test_a_premium_lanes_pool_is_no_peer_of_the_data_pools_and_does_not_size_them() -> None:
    # Given a region's data worker and its premium lane (an autoscaled lane) beating
    beats = PoolHeartbeats(fakeredis.FakeRedis(), Keys("t"))
    beats.exchange(beat("data@h", region_slots=4))
    everyone = beats.exchange(replace(beat("lane@h", region_slots=20), role="premium"))
    # Then the data worker shares the region's data slots with no one
    assert pool_share("data@h", "eu-west", everyone, NOW, fresh_s=3.0) == (0, 1)
    assert pool_share("lane@h", "eu-west", everyone, NOW, fresh_s=3.0, role="premium") == (0, 1)
    # And the region's data replicas follow the data worker's figure, not the lane's
    assert desired_replicas("eu-west", everyone.values(), CFG, NOW, fresh_s=3.0) == 1
    # And once the data worker is gone, the lane alone sizes nothing: no data figure is
    # left, as for a region with no data worker
    beats.forget("data@h")
    assert desired_replicas("eu-west", beats.read().values(), CFG, NOW, fresh_s=3.0) is None


def test_a_beat_written_before_roles_reads_as_a_data_pool() -> None:
    client, keys = fakeredis.FakeRedis(), Keys("t")
    fields = {k: v for k, v in beat("old@h").__dict__.items() if k not in ("node", "role")}
    client.hset(keys.scaling_pools, "old@h", json.dumps(fields))
    assert PoolHeartbeats(client, keys).read()["old@h"].role == "data"
