"""The producer's regional placer, heartbeats and per-region publishing, on fakeredis."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import fakeredis
import numpy as np
import pytest

from ingest.placement import PlacerConfig, make_placer, read_account
from ingest.regional_publisher import RegionalPublisher
from scheduler.model import Topology, empty_batch
from scheduler.registry import build_registry
from stores.health_store import HealthStore
from stores.keys import Keys
from tasks.app import make_app
from workers.heartbeat import Heartbeater, lanes_served, regions_served
from workers.profiles import region_queues

KEYS = Keys("t")
TOPO = Topology(regions=("eu-west", "us-east", "ap-south"))
EU, US, AP = 1, 2, 4  # residency bits


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _registry() -> Any:
    # device: home, allowed regions
    rows = [
        (1, 0, EU | US | AP),  # eu-west, may go anywhere
        (2, 0, EU),  # eu-west only
        (3, 1, US | AP),  # us-east, never eu
        (4, 1, EU),  # homed in us-east but only allowed in eu-west (a tenant rule)
    ]
    ids, home, allowed = zip(*rows, strict=True)
    return build_registry(TOPO, ids, np.zeros(4), home, np.zeros(4), allowed)


def _placer(client: fakeredis.FakeRedis, clock: Clock, mono: Clock) -> Any:
    placer = make_placer(client, KEYS, TOPO, config=PlacerConfig(silence_timeout_s=3.0))
    placer.clock, placer.monotonic = clock, mono
    return placer


def _beat(client: fakeredis.FakeRedis, ts: float, *regions: str) -> None:
    Heartbeater(HealthStore(client, KEYS, regions), regions, clock=lambda: ts).beat_once()


def test_healthy_regions_keep_readings_home_and_count_them() -> None:
    # Given every region heartbeating
    client, now = fakeredis.FakeRedis(), 1_000.0
    _beat(client, now, "eu-west", "us-east", "ap-south")
    placer = _placer(client, Clock(now), Clock(0.0))
    reg = _registry()
    # When readings of devices 1..3 are placed
    placed = placer(reg, np.array([0, 1, 2]))
    placer.flush()
    # Then each is placed in its home region, and the home count is in Redis
    assert placed.tolist() == [0, 0, 1]
    assert read_account(client, KEYS)["home_readings"] == 3


def test_a_silent_region_fails_over_inside_residency_or_waits_at_home() -> None:
    # Given eu-west silent for longer than the timeout, the others alive
    client, now = fakeredis.FakeRedis(), 1_000.0
    _beat(client, now - 10, "eu-west")
    _beat(client, now, "us-east", "ap-south")
    placer = _placer(client, Clock(now), Clock(0.0))
    # When eu-west devices' readings are placed
    placed = placer(_registry(), np.array([0, 1]))
    placer.flush()
    account = read_account(client, KEYS)
    # Then the unrestricted one moves (to the cheapest healthy region) and is billed;
    # the eu-west-only one stays queued at home: it waits, it is not moved
    assert placed[0] in (1, 2) and placed[1] == 0
    moved_to = TOPO.regions[int(placed[0])]
    assert account[f"readings:eu-west>{moved_to}"] == 1
    assert account[f"cost:eu-west>{moved_to}"] > 0
    assert account["waiting_readings"] == 1


def test_waiting_readings_never_queue_where_they_are_not_allowed() -> None:
    # Given eu-west silent and a device homed in us-east but allowed only in eu-west
    client, now = fakeredis.FakeRedis(), 1_000.0
    _beat(client, now - 10, "eu-west")
    _beat(client, now, "us-east", "ap-south")
    placer = _placer(client, Clock(now), Clock(0.0))
    # When its reading is placed
    placed = placer(_registry(), np.array([3]))
    # Then it waits in eu-west's queue (its only allowed region), not at home
    assert placed.tolist() == [0]


def test_health_is_read_at_most_once_per_refresh_interval() -> None:
    # Given a placer whose cache is fresh
    client, now = fakeredis.FakeRedis(), 1_000.0
    _beat(client, now, "eu-west", "us-east", "ap-south")
    mono = Clock(0.0)
    placer = _placer(client, Clock(now), mono)
    reads = {"n": 0}
    real = placer.store.snapshot

    def counted() -> Any:
        reads["n"] += 1
        return real()

    placer.store.snapshot = counted
    reg = _registry()
    # When it places 100 micro-batches within one refresh interval, then one more later
    for _ in range(100):
        placer(reg, np.array([0, 1, 2]))
    mono.t += 0.5
    placer(reg, np.array([0]))
    # Then Redis was read twice in all
    assert reads["n"] == 2


def test_queue_depth_counts_each_regions_data_queues_on_its_own_broker() -> None:
    # Given eu-west queues on their own broker and us-east on the shared one
    shared, eu_broker = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    eu_broker.rpush(KEYS.broker_queue("eu-west.premium"), "m1", "m2")
    shared.rpush(KEYS.broker_queue("us-east.standard"), "m3")
    shared.rpush(KEYS.broker_queue("eu-west.premium"), "not-here")
    health = HealthStore(shared, KEYS, TOPO.regions, broker_clients={"eu-west": eu_broker})
    # When depths are read
    depth = health.queued_messages()
    # Then each region's queues are counted where they live
    assert depth == {"eu-west": 2, "us-east": 1, "ap-south": 0}


def test_a_worker_heartbeats_for_the_roles_its_queues_fill() -> None:
    # A data worker (or a standard-share worker) drains every data queue of its region
    for role in ("data", "standard"):
        queues = region_queues("eu-west", role)
        assert (regions_served(queues), lanes_served(queues)) == (["eu-west"], [])
    # A premium lane drains premium work only: it beats as the region's lane, not for it
    lane = region_queues("eu-west", "premium")
    assert (regions_served(lane), lanes_served(lane)) == ([], ["eu-west"])
    # Neither a maintenance worker nor one taking part of the data queues beats
    for queues in (region_queues("eu-west", "maintenance"), ["eu-west.standard"]):
        assert (regions_served(queues), lanes_served(queues)) == ([], [])
    assert regions_served(["maintenance.control"]) == []


def _beat_as(client: fakeredis.FakeRedis, ts: float, region: str, *roles: str) -> None:
    """Heartbeat like a worker of ``region`` launched with each of ``roles`` (its -Q list)."""
    for role in roles:
        queues = region_queues(region, role)
        served, lanes = regions_served(queues), lanes_served(queues)
        store = HealthStore(client, KEYS, TOPO.regions)
        Heartbeater(store, served, clock=lambda: ts, lanes=lanes).beat_once()


def test_a_region_whose_data_worker_is_dead_takes_premium_on_its_lane_and_nothing_else() -> None:
    client, now = fakeredis.FakeRedis(), 1_000.0
    # Given every region running its data worker and premium lane, except that eu-west's
    # data worker died 10 s ago (past the 3 s timeout) while its lane still beats
    _beat_as(client, now - 10, "eu-west", "data")
    _beat_as(client, now, "eu-west", "premium")
    for region in ("us-east", "ap-south"):
        _beat_as(client, now, region, "data", "premium")
    placer = _placer(client, Clock(now), Clock(0.0))
    # When readings of eu-west devices are placed: standard and premium, free to move
    # or held to eu-west
    rows = [(1, 0, EU | US | AP), (2, 0, EU), (3, 0, EU | US | AP), (4, 0, EU)]
    ids, home, allowed = zip(*rows, strict=True)
    tier = [TOPO.tier_code(t) for t in ("standard", "standard", "premium", "premium")]
    reg = build_registry(TOPO, ids, tier, home, np.zeros(4), allowed)
    placed = placer(reg, np.arange(4))
    placer.flush()
    account = read_account(client, KEYS)
    # Then standard readings leave eu-west as they would a partitioned region: the free
    # one fails over, the eu-west-only one waits in eu-west's queue
    assert placed[0] in (1, 2) and placed[1] == 0
    assert account["waiting_readings"] == 1
    # And premium readings stay home, where the lane drains them
    assert placed[2:].tolist() == [0, 0]
    assert account["home_readings"] == 2


def test_a_lane_alone_never_makes_a_region_take_standard_work_after_start_up() -> None:
    client, now = fakeredis.FakeRedis(), 1_000.0
    # Given a producer started at `now` and eu-west running its premium lane only
    _beat_as(client, now, "eu-west", "premium")
    for region in ("us-east", "ap-south"):
        _beat_as(client, now, region, "data")
    clock = Clock(now)
    placer = _placer(client, clock, Clock(0.0))
    standard = TOPO.tier_code("standard")
    reg = build_registry(TOPO, [1], [standard], [0], [0], [EU | US | AP])
    assert placer(reg, np.array([0])).tolist() == [0]  # start-up grace: nobody judged yet
    # When the start-up grace has passed, the lane still beating
    clock.t = now + 10
    _beat_as(client, now + 10, "eu-west", "premium")
    for region in ("us-east", "ap-south"):
        _beat_as(client, now + 10, region, "data")
    placer.refresh()
    # Then eu-west's standard readings go where a data worker drains them
    assert placer(reg, np.array([0]))[0] in (1, 2)


@dataclass
class StubApp:
    sent: list[str] = field(default_factory=list)

    def send_task(self, name: str, args: Any, queue: str, **options: Any) -> None:
        self.sent.append(queue)

    def producer_or_acquire(self) -> Any:
        """No broker to pipeline to: a producer whose publish batch does nothing."""
        return contextlib.nullcontext(SimpleNamespace(batch=lambda size: contextlib.nullcontext()))


def test_each_region_publishes_to_its_own_broker() -> None:
    # Given eu-west with its own broker app and the rest on the shared one
    shared, eu = StubApp(), StubApp()
    publisher = RegionalPublisher(shared, {"eu-west": eu}, screening=False)  # type: ignore[arg-type]
    # When a batch of each region is published
    publisher.publish(empty_batch("b1", "eu-west", "premium", ("value",)))
    publisher.publish(empty_batch("b2", "us-east", "standard", ("value",)))
    # Then each lands on its region's queue, on that region's broker
    assert eu.sent == ["eu-west.premium"] and shared.sent == ["us-east.standard"]


def test_regions_sharing_a_broker_url_share_one_app() -> None:
    base = make_app(broker_url="redis://shared:6379/0")
    publisher = RegionalPublisher.from_urls(
        base,
        {
            "eu-west": "redis://eu:6379/0",
            "eu-north": "redis://eu:6379/0",
            "us-east": "redis://shared:6379/0",
        },
    )
    try:
        assert publisher.app_for("eu-west") is publisher.app_for("eu-north")
        assert publisher.app_for("eu-west").conf.broker_url == "redis://eu:6379/0"
        assert publisher.app_for("us-east") is base and publisher.app_for("ap-south") is base
    finally:
        publisher.close()
        base.close()


@pytest.mark.parametrize("silent_s, healthy", [(2.0, True), (4.0, False)])
def test_health_store_turns_silence_into_partition(silent_s: float, healthy: bool) -> None:
    client = fakeredis.FakeRedis()
    _beat(client, 100.0, "eu-west")
    health = HealthStore(client, KEYS, ("eu-west",)).health(3.0, now_ts=100.0)
    assert health.is_healthy("eu-west", 100.0 + silent_s) is healthy
