"""A region whose data worker died while its premium lane lives, with real workers.

Each region runs a data worker and a premium lane (``LocalCluster`` defaults). The lane
drains premium work only, so once the data worker is gone the region must look down
for standard work (fail over within residency, or wait) and up for premium work.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from bench.worker_launch import wait_for, wait_workers_ready
from ingest.placement import PlacerConfig, make_placer, read_account
from iotsched.status_cmd import collect
from scheduler.model import Topology
from scheduler.registry import build_registry
from scheduler.settings import Settings
from stores.health_store import LANE_ROLE, HealthStore
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster

pytestmark = pytest.mark.integration

TOPO = Topology(regions=("eu-west", "us-east"))
EU, US = 1, 2  # residency bits
SILENCE_S = 3.0


@pytest.fixture
def cluster(redis_server: str) -> Iterator[LocalCluster]:
    prefix = f"t-lanehealth-{uuid.uuid4().hex[:8]}"
    cluster = LocalCluster(
        redis_server,
        prefix,
        TOPO.regions,
        pool="solo",
        env_extra={"IOTSCHED_SCREENING": "0", "IOTSCHED_REGIONS": ",".join(TOPO.regions)},
    )
    app = broker_app(redis_server, Keys(prefix))
    cluster.start()
    try:
        assert wait_workers_ready(app, cluster.node_count), "workers did not start"
        yield cluster
    finally:
        cluster.stop()
        app.close()
        RedisStateStore(redis.Redis.from_url(redis_server), Keys(prefix)).delete_all()


def test_a_dead_data_worker_sends_standard_work_away_while_its_lane_keeps_premium(
    cluster: LocalCluster,
) -> None:
    client = redis.Redis.from_url(cluster.redis_url)
    keys = Keys(cluster.key_prefix)
    health = HealthStore(client, keys, TOPO.regions)
    # Given both regions' data workers and premium lanes beating
    wait_for(
        lambda: set(health.heartbeats()) == set(health.heartbeats(LANE_ROLE)) == set(TOPO.regions),
        30,
        "every region's data worker and lane heartbeat",
        detail=lambda: f"{health.heartbeats()} {health.heartbeats(LANE_ROLE)}",
    )
    # When eu-west's data worker is killed and stays silent past the timeout
    cluster.kill("data-eu-west")
    wait_for(
        lambda: time.time() - health.heartbeats()["eu-west"] > SILENCE_S + 1.0,
        30,
        "eu-west's data heartbeat to go stale",
    )
    # Then its lane still beats, and status shows each role's age
    lane_age_s = time.time() - health.heartbeats(LANE_ROLE)["eu-west"]
    assert lane_age_s < SILENCE_S
    settings = Settings(redis_url=cluster.redis_url, key_prefix=keys.prefix, regions=TOPO.regions)
    out = collect(client, keys, settings, dead_letters=0)
    assert time.time() - out["heartbeats"]["eu-west"] > SILENCE_S
    assert time.time() - out["lane_heartbeats"]["eu-west"] < SILENCE_S
    # And the placer sends eu-west's standard readings to us-east (or holds those
    # locked to eu-west), while its premium readings stay home for the lane
    placer = make_placer(client, keys, TOPO, config=PlacerConfig(silence_timeout_s=SILENCE_S))
    placer.refresh()
    rows = [(1, "standard", EU | US), (2, "standard", EU), (3, "premium", EU | US)]
    ids, tiers, allowed = zip(*rows, strict=True)
    codes = [TOPO.tier_code(t) for t in tiers]
    reg = build_registry(TOPO, ids, codes, np.zeros(3), np.zeros(3), allowed)
    placed = placer(reg, np.arange(3))
    placer.flush()
    assert placed.tolist() == [1, 0, 0]
    account = read_account(client, keys)
    assert (account["waiting_readings"], account["home_readings"]) == (1, 1)
    assert account["readings:eu-west>us-east"] == 1
